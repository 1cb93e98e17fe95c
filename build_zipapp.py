#!/usr/bin/env python3
"""Build dist/jrs.pyz: JRS plus its run-time dependencies, for every supported CPython.

    python3 build_zipapp.py [--output dist/jrs.pyz] [--wheels .cache/wheels]

The file carries:
  __main__.py             a tiny shim that rejects unsupported interpreters clearly,
                          then runs from the unpacked cache (jrs/_native.py)
  jrs/                    our code (pure Python)
  docopt/                 docopt-ng (pure Python)
  _native/<tag>/          PyNaCl and cffi's _cffi_backend for one platform, every
                          CPython (3.9-3.14)
  _native/manifest.json   content hash and platform list

On first use, jrs/, docopt/ and this platform's _native/<tag>/ are extracted to a
per-user cache named after their content hash, so later starts import cached
bytecode instead of compiling from the zip.
  licenses/               the licenses of what we bundle

Wheels come from the package registry through `pip download` and are cached, so
only the first build needs the network. The output is reproducible: entries are
sorted and carry a fixed timestamp.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PYNACL = "pynacl==1.6.2"
CFFI = "cffi==2.0.0"
DOCOPT = "docopt-ng==0.9.0"
PYTHONS = ("39", "310", "311", "312", "313", "314")
# jrs platform tag -> pip --platform tag
PLATFORMS = {
    "manylinux_x86_64": "manylinux2014_x86_64",
    "manylinux_aarch64": "manylinux2014_aarch64",
    "musllinux_x86_64": "musllinux_1_2_x86_64",
    "musllinux_aarch64": "musllinux_1_2_aarch64",
}
ARCHES = ("x86_64", "aarch64")
EPOCH = (2020, 1, 1, 0, 0, 0)
SHEBANG = b"#!/usr/bin/env python3\n"

ENTRY = '''# JRS zipapp entry point. Kept to syntax every Python can parse, so an old
# interpreter gets a clear message instead of a SyntaxError.
import sys
if sys.version_info[:2] < (3, 9) or getattr(sys, "implementation", None) is None \\
        or sys.implementation.name != "cpython":
    sys.stderr.write("jrs needs CPython 3.9+; this is %s %d.%d\\n" % (
        getattr(getattr(sys, "implementation", None), "name", "python"),
        sys.version_info[0], sys.version_info[1]))
    sys.exit(2)
import jrs._native
try:
    _home = jrs._native.unpack(sys.argv[0], "@HASH@")
except Exception:  # noqa: BLE001 - run from the zip; crypto roles report why
    _home = None
if _home:  # import everything from the unpacked cache, with cached bytecode
    for _name in [m for m in sys.modules if m == "jrs" or m.startswith("jrs.")]:
        del sys.modules[_name]
    sys.path.insert(0, _home)
from jrs.__main__ import run
run()
'''


def pip_download(spec: str, dest: Path, python: str | None, platform: str | None) -> None:
    """Fetch one wheel into the cache unless a matching file is already there."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
           "--only-binary=:all:", "--dest", str(dest), spec]
    if python:
        cmd += ["--python-version", python, "--implementation", "cp", "--platform", platform]
    subprocess.run(cmd, check=True)


def find_wheel(dest: Path, name: str, version: str, python: str | None,
               platform: str | None) -> Path | None:
    arch = next((a for a in ARCHES if platform and platform.endswith(a)), "")
    for wheel in sorted(dest.glob(f"{name}-{version}-*.whl")):
        parts = wheel.name[:-4].split("-")
        pytag, plat = parts[2], parts[-1]
        if python and pytag not in (f"cp{python}", "cp38"):
            continue
        if platform:
            family = "musllinux" if platform.startswith("musllinux") else "manylinux"
            if family not in plat or not plat.endswith("_" + arch):
                continue
        return wheel
    return None


def wheel_for(spec: str, cache: Path, python: str | None = None,
              platform: str | None = None) -> Path:
    name, version = spec.split("==")
    name = name.replace("-", "_")
    found = find_wheel(cache, name, version, python, platform)
    if found is None:
        pip_download(spec, cache, python, platform)
        found = find_wheel(cache, name, version, python, platform)
    if found is None:
        raise SystemExit(f"build_zipapp: no wheel for {spec} cp{python} {platform}")
    return found


def members(wheel: Path, keep) -> dict[str, bytes]:
    """Files of a wheel that `keep(name)` accepts, by archive name."""
    with zipfile.ZipFile(wheel) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()
                if not i.is_dir() and keep(i.filename)}


def collect(cache: Path) -> dict[str, bytes]:
    """Every file of the zipapp, by archive name."""
    files: dict[str, bytes] = {"__main__.py": ENTRY.encode()}
    for path in sorted((ROOT / "jrs").rglob("*.py")):
        files[path.relative_to(ROOT).as_posix()] = path.read_bytes()

    docopt = wheel_for(DOCOPT, cache)
    for name, data in members(docopt, lambda n: n.startswith("docopt/")).items():
        files[name] = data
    for name, data in members(docopt, lambda n: "/licenses/" in n or n.endswith("LICENSE")).items():
        files[f"licenses/docopt-ng/{Path(name).name}"] = data

    native: dict[str, bytes] = {}
    for tag, pip_platform in PLATFORMS.items():
        nacl = wheel_for(PYNACL, cache, "39", pip_platform)
        for name, data in members(nacl, lambda n: n.startswith("nacl/")).items():
            native[f"_native/{tag}/{name}"] = data
        for python in PYTHONS:
            cffi = wheel_for(CFFI, cache, python, pip_platform)
            for name, data in members(cffi, lambda n: n.startswith("_cffi_backend")).items():
                native[f"_native/{tag}/{name}"] = data
    lic = wheel_for(PYNACL, cache, "39", PLATFORMS["manylinux_x86_64"])
    for name, data in members(lic, lambda n: "licenses/" in n).items():
        files[f"licenses/pynacl/{Path(name).name}"] = data
    lic = wheel_for(CFFI, cache, "39", PLATFORMS["manylinux_x86_64"])
    for name, data in members(lic, lambda n: "licenses/" in n).items():
        files[f"licenses/cffi/{Path(name).name}"] = data

    for name in native:
        if name.endswith(".so"):
            tag = name.split("/")[1]
            wrong = [a for a in ARCHES if a != tag.split("_", 1)[1]]
            suffixes = (".abi3.so", "-gnu.so", "-musl.so")
            if any(a in name for a in wrong) or not name.endswith(suffixes):
                raise SystemExit(f"build_zipapp: {name} does not belong to {tag}")
    files.update(native)
    digest = hashlib.sha256()  # everything unpacked into the cache: our code too
    for name in sorted(files):
        if name.startswith(("jrs/", "docopt/", "_native/")):
            digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    files["__main__.py"] = ENTRY.replace("@HASH@", digest.hexdigest()).encode()
    files["_native/manifest.json"] = json.dumps(
        {"hash": digest.hexdigest(), "platforms": sorted(PLATFORMS)}, indent=1).encode()
    return files


def write_pyz(files: dict[str, bytes], output: Path) -> None:
    """Write atomically: a half-built jrs.pyz must never be seen under the final name."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[name])
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_bytes(SHEBANG + buf.getvalue())
    os.chmod(tmp, 0o755)
    os.replace(tmp, output)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(ROOT / "dist" / "jrs.pyz"))
    parser.add_argument("--wheels", default=str(ROOT / ".cache" / "wheels"),
                        help="wheel cache (filled from the registry on first use)")
    opts = parser.parse_args()
    cache = Path(opts.wheels)
    cache.mkdir(parents=True, exist_ok=True)
    output = Path(opts.output)
    write_pyz(collect(cache), output)
    print(f"{output}: {output.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
