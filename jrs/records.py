"""Self-checking append-only record files (taskfiles and submit journals).

Each record is one line: eight hex digits of the CRC-32 of the JSON body, a
space, the JSON body, a newline. A line whose checksum does not match, or a
last line without its newline (a write torn by a crash), is detected and
dropped; everything before it is kept. JSON escapes newlines, so a record can
never span lines.
"""

from __future__ import annotations

import os
import zlib

TYPE_CHECKING = False  # not typing's: importing typing would cost what the below saves
if TYPE_CHECKING:
    from collections.abc import Iterator

# The C halves of `json`, used directly: importing `json` pulls in `re` and
# `enum`, which would make the executor launcher 1 MB bigger (and every fork of
# it dearer). `json` itself is imported only to word an error, or where `_json`
# is missing.
try:
    import _json
except ImportError:  # pragma: no cover - an interpreter without _json
    _json = None


class _ScanContext:
    """What the C scanner reads from a `json.JSONDecoder`: the defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"),
                      "-Infinity": float("-inf")}.__getitem__
    memo: dict = {}


try:
    # the C encoder JSONEncoder builds on every call, built once: executors append
    # a few records each, in a freshly forked process where every Python object
    # touched costs a page copy
    _c_encode = _json.make_encoder(None, None, _json.encode_basestring_ascii, None,
                                   ":", ",", False, False, True)
    _c_scan = _json.make_scanner(_ScanContext())
except (AttributeError, TypeError):  # pragma: no cover - no _json, or another signature
    _c_encode = _c_scan = None


def _dumps(record: dict) -> str:
    """The full encoder: for what the C one cannot take, so its error is the usual one."""
    import json

    return json.dumps(record, separators=(",", ":"))


def _loads(body: bytes):
    """One JSON document, as `json.loads` would read it (ValueError if it is not)."""
    if _c_scan is None:  # pragma: no cover
        import json

        return json.loads(body)
    text = body.decode().strip(" \t\n\r")
    try:
        value, end = _c_scan(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text):
        raise ValueError("extra data after the JSON value")
    return value


def encode(record: dict) -> bytes:
    """One record as its line."""
    if _c_encode is not None:
        try:
            body = "".join(_c_encode(record, 0)).encode()
        except TypeError:  # something JSON-unfriendly: let the full encoder say what
            body = _dumps(record).encode()
    else:  # pragma: no cover
        body = _dumps(record).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode(data: bytes) -> tuple[list, int]:
    """(good records, count of damaged lines skipped) from a file's bytes."""
    records: list = []
    damaged = 0
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        lines.pop()  # torn last line: no newline reached the disk
        damaged += 1
    for line in lines:
        record = _decode_line(line)
        if record is None:
            damaged += 1
        else:
            records.append(record)
    return records, damaged


def _decode_line(line: bytes):
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        record = _loads(body)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors too
        return None
    return record if isinstance(record, dict) else None


def read(path: str) -> tuple[list, int]:
    """(good records, damaged lines) of the file at `path` (os-level: the node daemon
    reads a taskfile per job, and `open()` adds four system calls to each read)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return decode(b"".join(chunks))


def iter_dir(directory: str, suffix: str) -> Iterator[str]:
    """Paths of the record files in `directory` (none if it does not exist)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return
    for name in names:
        if name.endswith(suffix):
            yield os.path.join(directory, name)


def fsync_dir(path: str) -> None:
    """Make the names in directory `path` durable. A file's own fsync does not cover
    its name: after a power cut a file just created, or renamed into place, can be
    gone (or be the old one) unless its directory is synced too."""
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(path: str, records: list, sync: bool = True, sync_name: bool = True) -> None:
    """Create `path` holding `records`, atomically: temp file, fsync, rename, and (with
    `sync` and `sync_name`) fsync of the directory, so a journal that was written
    survives a power cut under its name. `sync_name=False` leaves the name's sync to
    the caller, who must do it (fsync_dir) before anything depends on the name: a
    taskfile's is synced by its executor before the job starts, off the node
    daemon's event loop."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"".join(encode(r) for r in records))
        if sync:
            os.fdatasync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync and sync_name:
        fsync_dir(os.path.dirname(path))


def append(fd: int, record: dict, sync: bool = False) -> None:
    """Append one record to a file opened with O_APPEND (one write: no interleaving)."""
    os.write(fd, encode(record))
    if sync:
        os.fdatasync(fd)
