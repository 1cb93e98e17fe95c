"""Unpack jrs.pyz once per user into a cache, and run from there.

Extension modules (PyNaCl, cffi's backend) cannot be imported from inside a
zip, and Python never caches bytecode for modules it imports from a zip, so a
cold `jrs.pyz submit` would compile ~10k lines on every start. The zipapp's
entry shim therefore calls `unpack()` first: our code, docopt and this
platform's native packages are extracted once into a cache directory named
after the content hash of the bundle, and every later start imports from there
(with normal `__pycache__` bytecode). Two processes extracting at once each
write a private temporary directory and `rename()` it into place; the loser
throws its copy away, so nobody ever sees half a directory. A cache directory
anyone else could write to is never used: it could hold planted code.

If no cache can be written the shim runs from the zip itself; roles that need
crypto then fail in `ensure_native()` with the reason.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import Iterator, Optional

NATIVE_PREFIX = "_native/"
MANIFEST = NATIVE_PREFIX + "manifest.json"
PURE_PREFIXES = ("jrs/", "docopt/")
_ready: Optional[str] = None


def archive_path() -> Optional[str]:
    """Path of the zipapp we run from, or None when not running from inside a zip."""
    pkg_dir = os.path.dirname(os.path.abspath(__file__))
    candidate = os.path.dirname(pkg_dir)
    if os.path.isfile(candidate):
        import zipfile
        if zipfile.is_zipfile(candidate):
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


def _cache_bases() -> Iterator[tuple]:
    """(cache directory, the existing directory it may be created in) in order of choice.

    Only what lies below the anchor is ever created: never a missing HOME (a root run
    with HOME=/nonexistent must not make /nonexistent/.cache/jrs), nor the parents of a
    missing XDG_CACHE_HOME or JRS_CACHE; such a place is skipped, as an unwritable one."""
    if os.environ.get("JRS_CACHE"):
        base = os.environ["JRS_CACHE"]
        yield base, os.path.dirname(os.path.abspath(base))
    xdg = os.environ.get("XDG_CACHE_HOME")
    home = os.path.expanduser("~")
    if xdg:
        yield os.path.join(xdg, "jrs"), os.path.dirname(os.path.abspath(xdg))
    elif home and home != "~":
        yield os.path.join(home, ".cache", "jrs"), home
    import tempfile  # only when the usual places failed: it costs a few ms
    tmp = tempfile.gettempdir()
    yield os.path.join(tmp, f"jrs-{os.getuid()}"), tmp


def _create_below(anchor: str, base: str) -> None:
    """mkdir (0700) each missing component of `base` below `anchor`, which must exist."""
    anchor, base = os.path.abspath(anchor), os.path.abspath(base)
    if not os.path.isdir(anchor) or os.path.commonpath([anchor, base]) != anchor:
        return
    path = anchor
    for part in os.path.relpath(base, anchor).split(os.sep):
        if part in ("", "."):
            continue
        path = os.path.join(path, part)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return


def _private_dir(base: str, create: bool, anchor: Optional[str] = None) -> bool:
    """True when `base` is a directory that is ours and nobody else can write.

    With `create`, make it (0700) first if missing, but only below `anchor`.
    """
    if create and anchor is not None:
        _create_below(anchor, base)
    try:
        st = os.lstat(base)
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _member_target(filename: str, native: str) -> Optional[str]:
    """Where a zip member goes inside the cache directory, or None to skip it."""
    if filename.startswith(native):
        return filename[len(native):]
    if filename.startswith(PURE_PREFIXES):
        return filename
    return None


def _extract(zf, native: str, base: str, target: str) -> None:
    import shutil
    import tempfile
    tmp = tempfile.mkdtemp(prefix=".extract-", dir=base)
    try:
        for info in zf.infolist():
            rel = _member_target(info.filename, native)
            if rel is None or info.is_dir():
                continue
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


def _compile_once(target: str) -> None:
    """Write bytecode for this interpreter once, even under PYTHONDONTWRITEBYTECODE.

    Python reads `__pycache__` regardless of that setting; it only stops writing.
    """
    marker = os.path.join(target, f".compiled-{sys.implementation.cache_tag}")
    if os.path.exists(marker):
        return
    import importlib.util
    import py_compile
    try:
        for top in (*PURE_PREFIXES, "nacl/"):
            for folder, _dirs, names in os.walk(os.path.join(target, top)):
                for name in names:
                    if name.endswith(".py"):
                        src = os.path.join(folder, name)
                        py_compile.compile(src, importlib.util.cache_from_source(src),
                                           doraise=True)
        with open(marker, "w") as f:
            f.write("ok\n")
    except (OSError, py_compile.PyCompileError):
        pass  # a read-only cache still works, only slower


def unpack(archive: str, digest: str) -> str:
    """The cache directory holding this bundle for this platform, extracting it if needed.

    `digest` is the bundle's content hash, written into the entry shim at build
    time so the common case (already extracted) opens no zip at all.
    """
    global _ready
    tag = platform_tag()
    name = f"{digest[:20]}-{tag}"
    errors = []
    for base, anchor in _cache_bases():
        target = os.path.join(base, name)
        if os.path.isfile(os.path.join(target, ".complete")) and _private_dir(base, False):
            break
        if not _private_dir(base, True, anchor):
            errors.append(f"{base}: missing, or writable by others")
            continue
        try:
            _extract_bundle(archive, tag, base, target)
            break
        except OSError as exc:
            errors.append(f"{base}: {exc}")
    else:
        raise RuntimeError("cannot unpack jrs.pyz: " + "; ".join(errors))
    _ready = target
    _compile_once(target)
    return target


def _extract_bundle(archive: str, tag: str, base: str, target: str) -> None:
    import json
    import zipfile
    with zipfile.ZipFile(archive) as zf:
        manifest = json.loads(zf.read(MANIFEST))
        if tag not in manifest["platforms"]:
            raise RuntimeError(f"jrs.pyz carries no native packages for {tag} "
                               f"(it has: {', '.join(manifest['platforms'])})")
        _extract(zf, f"{NATIVE_PREFIX}{tag}/", base, target)


def ensure_native() -> Optional[str]:
    """Make PyNaCl and cffi importable; return the directory they come from.

    Running unpacked (the normal case) they sit beside our code already; from a
    source checkout they come from the environment.
    """
    global _ready
    if _ready is not None:
        return _ready
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(here, ".complete")):
        _ready = here
        return here
    archive = archive_path()
    if archive is None:
        return None
    import json
    import zipfile
    with zipfile.ZipFile(archive) as zf:
        digest = json.loads(zf.read(MANIFEST))["hash"]
    target = unpack(archive, digest)
    sys.path.insert(0, target)
    return target
