"""A throwaway Linux machine for what this machine's kernel cannot show: a pure cgroup v2
host, with the `pids` and `memory` controllers on the unified hierarchy.

Here the kernel binds pids and memory to v1 hierarchies, and they cannot be moved: a
controller leaves a v1 hierarchy only when the hierarchy is destroyed, which takes
its last mount and every reference to it gone, and this machine's init (the harness,
PID 1) holds one on /sys/fs/cgroup/pids (`umount` says busy with no process of ours
in it; after a lazy unmount the hierarchy stays, pids with it, until remounted), while
memory has the harness's own cgroups in it. Controllers are global to a kernel, so a
private mount namespace cannot give them either.

So the test boots another kernel: Debian's stock one (the `linux-image-amd64`
package, fetched with `apt-get download` once and kept in CACHE), under qemu's
software emulation (KVM nested in this machine's VM hangs in the guest kernel's
early boot; the emulation boots in 3-5 s). Its init, busybox in an initramfs made
here, mounts this machine's root over 9p read-only, puts tmpfs where the node
writes (/tmp, /run, /dev/shm, /root/.cache), mounts cgroup2 alone at /sys/fs/cgroup
(and the kernel is told `cgroup_no_v1=all`), chroots and runs a command of the test's;
what the command writes to OUT_DIR (9p, read-write) comes back, and so does its exit
status. The project's code, its Python and its venv are this machine's own files, so
what runs there is what runs here.

Needs qemu-system-x86 and busybox-static (Debian packages: .ci/run installs them)
and, the first time, Debian's package lists (apt-get update) to fetch the kernel.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("JRS_TEST_VM_CACHE", "/var/cache/jrs-test-vm"))
OUT_DIR = "/jrs-out"  # in the guest: the host directory given to run()
# the modules the guest needs to mount the host's root over virtio-9p, in load order
MODULES = ("drivers/virtio/virtio_ring", "drivers/virtio/virtio",
           "drivers/virtio/virtio_pci_modern_dev", "drivers/virtio/virtio_pci_legacy_dev",
           "drivers/virtio/virtio_pci", "net/9p/9pnet", "net/9p/9pnet_virtio",
           "fs/netfs/netfs", "fs/fscache/fscache", "fs/9p/9p")
# the host directories the guest sees (read-only, through the 9p mount of /)
HOST_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "root",
             "work", "opt", "var", "home")
INSTALL = ("apt-get install qemu-system-x86 busybox-static (the packages .ci/run "
           "installs)")


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: {INSTALL}"
    return path


def _static(path: str) -> bool:
    """An ELF file without a program interpreter (it runs with no libc beside it)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
            return False
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            if struct.unpack("<I", f.read(4))[0] == 3:  # PT_INTERP
                return False
    return True


def _busybox() -> str:
    for path in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(path) and _static(path):
            return path
    raise AssertionError(f"no statically linked busybox: {INSTALL}")


def _apt_kernel_package() -> str:
    """The versioned package linux-image-amd64 stands for (apt-get update when the
    lists do not know it yet)."""
    for attempt in range(2):
        r = subprocess.run(["apt-cache", "depends", "linux-image-amd64"],
                           capture_output=True, text=True)
        for line in r.stdout.splitlines():
            word = line.strip()
            if word.startswith("Depends: linux-image-"):
                return word.split()[1]
        if attempt == 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
    raise AssertionError(f"apt knows no linux-image-amd64: {r.stdout}{r.stderr}")


def kernel() -> Path:
    """A directory with `vmlinuz` and `modules/` (MODULES, flat): the first one kept in
    CACHE, else Debian's current stock kernel, fetched and kept there."""
    kept = sorted(p.parent for p in CACHE.glob("*/ok"))
    if kept:
        return kept[-1]
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fetch-", dir=CACHE))
    try:
        for attempt in range(2):  # lists from before a point release: update, then again
            name = _apt_kernel_package()
            r = subprocess.run(["apt-get", "download", "-qq", name], cwd=work,
                               capture_output=True, text=True, timeout=600)
            debs = list(work.glob("*.deb"))
            if debs or attempt:
                break
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
        assert debs, f"apt-get download {name}: {r.stdout}{r.stderr}"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(work / "x")], check=True)
        (release,) = [p for p in (work / "x/lib/modules").iterdir() if p.is_dir()]
        out = work / "k"
        (out / "modules").mkdir(parents=True)
        shutil.copy(work / f"x/boot/vmlinuz-{release.name}", out / "vmlinuz")
        for m in MODULES:
            shutil.copy(release / "kernel" / f"{m}.ko", out / "modules")
        (out / "ok").write_text(f"{name}\n")
        dest = CACHE / release.name
        shutil.rmtree(dest, ignore_errors=True)
        out.rename(dest)
        return dest
    finally:
        shutil.rmtree(work, ignore_errors=True)


_INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev
for m in MODULES; do insmod /modules/$m.ko || echo "jrs-vm: insmod $m failed"; done
mkdir -p /host /out
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /host
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out /out
R=/newroot
mkdir -p $R; mount -t tmpfs -o mode=755 tmpfs $R
for d in HOST_DIRS; do
    [ -e /host/$d ] || continue
    if [ -L /host/$d ]; then cp -a /host/$d $R/$d
    else mkdir -p $R/$d; mount --bind /host/$d $R/$d; fi
done
mkdir -p $R/tmp $R/run $R/proc $R/sys $R/dev $R/OUT_DIR
mount -t tmpfs -o mode=1777 tmpfs $R/tmp; mount -t tmpfs -o mode=755 tmpfs $R/run
mount -t proc proc $R/proc; mount -t sysfs sysfs $R/sys; mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/shm $R/dev/pts; mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
mount -t tmpfs -o mode=700 tmpfs $R/root/.cache
mount --bind /out $R/OUT_DIR
for p in EXTRA_PATHS; do mkdir -p $R$p; mount --bind /host$p $R$p; done
ip link set lo up
hostname jrs-vm
chroot $R /bin/sh /OUT_DIR/run.sh > /out/guest.log 2>&1
echo $? > /out/rc
sync
poweroff -f
"""


def _cpio(entries: list) -> bytes:
    """A newc cpio archive of (name, mode, data): data None for a directory."""
    out = bytearray()

    def add(name: str, mode: int, data: bytes, ino: int) -> None:
        raw = name.encode() + b"\0"
        out.extend(b"070701" + b"".join(b"%08x" % v for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0)))
        out.extend(raw + b"\0" * (-(110 + len(raw)) % 4))
        out.extend(data + b"\0" * (-len(data) % 4))

    for ino, (name, mode, data) in enumerate(entries, 1):
        add(name, mode | (stat.S_IFDIR if data is None else stat.S_IFREG), data or b"", ino)
    add("TRAILER!!!", 0, b"", 0)
    return bytes(out)


def extra_paths(paths: tuple) -> list:
    """Those of `paths` (absolute) the guest would not see through HOST_DIRS: a clone
    under /srv or /tmp (the guest's /tmp is its own tmpfs), a Python elsewhere. Each
    is bound from the host's root after the guest's own mounts."""
    out = []
    for p in paths:
        p = os.path.realpath(p)
        parts = Path(p).parts
        if len(parts) > 1 and (parts[1] not in HOST_DIRS
                               or parts[1] in ("tmp", "run", "dev", "proc", "sys")):
            out.append(p)
    return sorted(set(out))


def initramfs(path: Path, kdir: Path, extra: tuple = ()) -> None:
    """The guest's initramfs: busybox, the 9p modules and _INIT, which also binds
    `extra` (absolute host paths: see extra_paths)."""
    init = (_INIT.replace("MODULES", " ".join(m.rsplit("/", 1)[1] for m in MODULES))
            .replace("HOST_DIRS", " ".join(HOST_DIRS)).replace("OUT_DIR", OUT_DIR.strip("/"))
            .replace("EXTRA_PATHS", " ".join(shlex.quote(p) for p in extra_paths(extra))))
    entries = [(d, 0o755, None) for d in ("bin", "proc", "sys", "dev", "modules")]
    entries.append(("bin/busybox", 0o755, Path(_busybox()).read_bytes()))
    entries.append(("init", 0o755, init.encode()))
    for m in MODULES:
        name = m.rsplit("/", 1)[1] + ".ko"
        entries.append((f"modules/{name}", 0o644, (kdir / "modules" / name).read_bytes()))
    path.write_bytes(_cpio(entries))


def run(argv: list, out: Path, cwd: str, env: dict, timeout: float = 900,
        memory_mb: int = 1536) -> dict:
    """Boot the guest, run `argv` there (as root, in `cwd`, with `env` alone) and power
    off. `out` (a host directory) is OUT_DIR in the guest. {"rc": exit status or None
    (none came back), "guest": its output, "console": the kernel's console}."""
    qemu = _tool("qemu-system-x86_64")
    kdir = kernel()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("rc", "guest.log"):
        (out / name).unlink(missing_ok=True)
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    (out / "run.sh").write_text(f"cd {shlex.quote(cwd)} && exec /usr/bin/env -i {exports} "
                                + " ".join(shlex.quote(a) for a in argv) + "\n")
    with tempfile.TemporaryDirectory(prefix="jrs-vm-") as tmp:
        initrd = Path(tmp) / "initrd"
        initramfs(initrd, kdir, (cwd, sys.executable, sys.prefix, str(Path(__file__).parent)))
        console = Path(tmp) / "console"
        cmd = [qemu, "-accel", "tcg", "-smp", "2", "-m", str(memory_mb), "-display", "none",
               "-monitor", "none", "-serial", f"file:{console}", "-no-reboot", "-nic", "none",
               "-kernel", str(kdir / "vmlinuz"), "-initrd", str(initrd),
               "-append", "console=ttyS0 quiet panic=-1 cgroup_no_v1=all",
               "-virtfs", "local,path=/,mount_tag=hostroot,security_model=passthrough,"
               "readonly=on,multidevs=remap",
               "-virtfs", f"local,path={out},mount_tag=out,security_model=passthrough"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            qemu_err = r.stderr
        except subprocess.TimeoutExpired:
            qemu_err = f"(qemu killed after {timeout} s)"
        text = console.read_text(errors="replace") if console.exists() else ""
    rc_file = out / "rc"
    rc = int(rc_file.read_text()) if rc_file.exists() and rc_file.read_text().strip() else None
    guest = (out / "guest.log").read_text(errors="replace") if (out / "guest.log").exists() \
        else ""
    return {"rc": rc, "guest": guest, "console": text[-4000:] + qemu_err[-2000:]}


def facts(out: Path, name: str = "facts.json") -> dict:
    path = out / name
    return json.loads(path.read_text()) if path.exists() else {}
