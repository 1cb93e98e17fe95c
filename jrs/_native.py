"""Make the bundled native packages (PyNaCl and cffi's backend) importable.

Extension modules cannot be imported from inside a zip, so when JRS runs as
`jrs.pyz` the files for this platform are extracted once into a cache
directory named after the content hash of the bundle, and reused afterwards.
Two processes extracting at once each write a private temporary directory and
`rename()` it into place; the loser throws its copy away, so nobody ever sees
half a directory. Only roles that need crypto call `ensure_native()`.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
import zipfile
from typing import Optional

NATIVE_PREFIX = "_native/"
MANIFEST = NATIVE_PREFIX + "manifest.json"
_ready: Optional[str] = None


def archive_path() -> Optional[str]:
    """Path of the zipapp we run from, or None when running from a source tree."""
    pkg_dir = os.path.dirname(os.path.abspath(__file__))
    candidate = os.path.dirname(pkg_dir)
    if os.path.isfile(candidate) and zipfile.is_zipfile(candidate):
        return candidate
    return None


def platform_tag() -> str:
    """`manylinux_x86_64`, `musllinux_aarch64`, ... for the running interpreter."""
    machine = os.uname().machine
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        glibc = None
    return f"{'manylinux' if glibc else 'musllinux'}_{machine}"


def _cache_bases() -> list[str]:
    bases = []
    if os.environ.get("JRS_CACHE"):
        bases.append(os.environ["JRS_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    home = os.path.expanduser("~")
    if xdg:
        bases.append(os.path.join(xdg, "jrs"))
    elif home and home != "~":
        bases.append(os.path.join(home, ".cache", "jrs"))
    bases.append(os.path.join(tempfile.gettempdir(), f"jrs-{os.getuid()}"))
    return bases


def _private_dir(base: str) -> bool:
    """Create `base` (0700) if needed; True when it is ours and nobody else can write it.

    A cache another user could write into would let them plant code we import.
    """
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
    except OSError:
        pass
    try:
        st = os.lstat(base)
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _extract(zf: zipfile.ZipFile, prefix: str, base: str, target: str) -> None:
    tmp = tempfile.mkdtemp(prefix=".extract-", dir=base)
    try:
        for info in zf.infolist():
            if not info.filename.startswith(prefix) or info.is_dir():
                continue
            rel = info.filename[len(prefix):]
            dest = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with zf.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        with open(os.path.join(tmp, ".complete"), "w") as marker:
            marker.write("ok\n")
        try:
            os.rename(tmp, target)
        except OSError:
            if not os.path.isfile(os.path.join(target, ".complete")):
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_native() -> Optional[str]:
    """Put this platform's native packages on sys.path; return their directory."""
    global _ready
    if _ready is not None:
        return _ready
    archive = archive_path()
    if archive is None:
        return None  # source checkout: the packages come from the environment
    with zipfile.ZipFile(archive) as zf:
        manifest = json.loads(zf.read(MANIFEST))
        tag = platform_tag()
        if tag not in manifest["platforms"]:
            raise RuntimeError(f"jrs.pyz carries no native packages for {tag} "
                               f"(it has: {', '.join(manifest['platforms'])})")
        name = f"{manifest['hash'][:20]}-{tag}"
        errors = []
        for base in _cache_bases():
            target = os.path.join(base, name)
            if not _private_dir(base):
                errors.append(f"{base}: missing, or writable by others")
                continue
            if os.path.isfile(os.path.join(target, ".complete")):
                break
            try:
                _extract(zf, f"{NATIVE_PREFIX}{tag}/", base, target)
                break
            except OSError as exc:
                errors.append(f"{base}: {exc}")
        else:
            raise RuntimeError("cannot extract native packages: " + "; ".join(errors))
    sys.path.insert(0, target)
    _ready = target
    return target
