"""The cluster configuration directory: node.master, node.list and secret.

The same directory is copied to every machine, so every mistake in it is
reported as `file:line: reason` with exit status 2 before any role starts.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .errors import ConfigError, located

MASTER_PORT = 7083
NODE_PORT = 7082
MIN_SECRET_BYTES = 32
DEFAULT_DIR = "/etc/jrs"
NODE_KEYS = ("slots", "memory", "gpus")
_ATTR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Endpoint:
    """A host and port as written in the configuration."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class NodeEntry:
    """One line of node.list."""

    endpoint: Endpoint
    slots: Optional[int] = None
    memory: Optional[int] = None
    gpus: Optional[int] = None
    attrs: dict = field(default_factory=dict, hash=False, compare=False)
    line: int = 0

    @property
    def name(self) -> str:
        return str(self.endpoint)


Resolver = Callable[[str, int], None]


def resolve(host: str, port: int) -> None:
    """Raise OSError when `host` does not resolve (the default resolver)."""
    socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def find_config_dir(explicit: Optional[str] = None, environ: Optional[dict] = None) -> Path:
    """`-c DIR`, else $JRS_CONFIG, else beside jrs.pyz if it has node.master, else /etc/jrs."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if env.get("JRS_CONFIG"):
        return Path(env["JRS_CONFIG"])
    here = _archive_dir()
    if here is not None and (here / "node.master").is_file():
        return here
    return Path(DEFAULT_DIR)


def _archive_dir() -> Optional[Path]:
    """The directory holding jrs.pyz when running from the zipapp."""
    main = sys.argv[0] if sys.argv else ""
    if main.endswith(".pyz") and os.path.isfile(main):
        return Path(os.path.abspath(main)).parent
    return None


def parse_endpoint(text: str, default_port: int, where: str) -> Endpoint:
    """Parse `host`, `host:port`, `[v6]` or `[v6]:port`; `where` prefixes errors."""
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"{where}: unterminated '[' in address {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"{where}: unexpected {rest!r} after address {text!r}")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        host = text  # a bare IPv6 address without a port
    if not host:
        raise ConfigError(f"{where}: empty host in {text!r}")
    port = default_port
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ConfigError(f"{where}: bad port {port_text!r} (want 1-65535)")
        port = int(port_text)
    return Endpoint(host, port)


def _content_lines(path: Path) -> list[tuple[int, str]]:
    """Numbered lines with comments and blanks removed; missing file is an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing (see `jrs --help` for the config directory)")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}")
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            out.append((number, line))
    return out


def _check_resolves(path: Path, line: int, ep: Endpoint, resolver: Optional[Resolver]) -> None:
    if resolver is None:
        return
    try:
        resolver(ep.host, ep.port)
    except OSError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(located(str(path), line, f"cannot resolve host {ep.host!r}: {reason}"))


def load_master(path: Path, resolver: Optional[Resolver] = resolve) -> Endpoint:
    """node.master: exactly one line `host[:port]`."""
    lines = _content_lines(path)
    if not lines:
        raise ConfigError(f"{path}: empty; write one line `host[:port]`")
    if len(lines) > 1:
        raise ConfigError(located(str(path), lines[1][0], "more than one master given"))
    number, text = lines[0]
    if len(text.split()) != 1:
        raise ConfigError(located(str(path), number, f"expected `host[:port]`, got {text!r}"))
    ep = parse_endpoint(text, MASTER_PORT, located(str(path), number, "").rstrip(": "))
    _check_resolves(path, number, ep, resolver)
    return ep


def _positive_int(path: Path, number: int, key: str, value: str) -> int:
    if not value.isdigit() or (int(value) == 0 and key != "gpus"):
        raise ConfigError(located(str(path), number, f"{key} must be a whole number above 0, "
                                                     f"got {value!r}"))
    return int(value)


def load_node_list(path: Path, resolver: Optional[Resolver] = resolve) -> list[NodeEntry]:
    """node.list: `host[:port] [slots=N] [memory=MB] [gpus=N] [+Attr=value]` per line."""
    nodes: list[NodeEntry] = []
    seen: dict[Endpoint, int] = {}
    for number, text in _content_lines(path):
        words = text.split()
        where = located(str(path), number, "").rstrip(": ")
        ep = parse_endpoint(words[0], NODE_PORT, where)
        if ep in seen:
            raise ConfigError(located(str(path), number,
                                      f"duplicate node {ep} (first on line {seen[ep]})"))
        values: dict = {}
        attrs: dict = {}
        for word in words[1:]:
            key, eq, value = word.partition("=")
            if not eq or not value:
                raise ConfigError(located(str(path), number, f"expected key=value, got {word!r}"))
            if key.startswith("+"):
                if not _ATTR_NAME.match(key[1:]):
                    raise ConfigError(located(str(path), number, f"bad attribute name {key!r}"))
                attrs[key[1:]] = value
            elif key.lower() in NODE_KEYS:
                values[key.lower()] = _positive_int(path, number, key.lower(), value)
            else:
                raise ConfigError(located(str(path), number,
                                          f"unknown key {key!r} (known: slots, memory, gpus, "
                                          "+Attribute)"))
        _check_resolves(path, number, ep, resolver)
        seen[ep] = number
        nodes.append(NodeEntry(ep, attrs=attrs, line=number, **values))
    if not nodes:
        raise ConfigError(f"{path}: no nodes listed")
    return nodes


def load_secret(path: Path) -> bytes:
    """The shared secret: refuse a short file, or one others may read or anyone but its
    owner may change. Group-readable (0640) stays allowed: a `jrs` group of submitters
    can share it. The check is made on the opened file, so it is the file read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing; create one with `jrs keygen -c {path.parent}`")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file")
        if st.st_mode & (stat.S_IRWXO | stat.S_IWGRP):
            mode = stat.S_IMODE(st.st_mode)
            raise ConfigError(f"{path}: permissions {mode:04o} let others read or change the "
                              f"secret; run: chmod 600 {path} (or chmod 640 for a group of "
                              "submitters)")
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            if sum(map(len, chunks)) > 1 << 20:
                raise ConfigError(f"{path}: too large for a secret")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}")
    finally:
        os.close(fd)
    data = b"".join(chunks).rstrip(b" \t\r\n")
    if len(data) < MIN_SECRET_BYTES:
        raise ConfigError(located(str(path), 1, f"secret is {len(data)} bytes; at least "
                                                f"{MIN_SECRET_BYTES} are needed (`jrs keygen "
                                                "--force` makes one)"))
    return data


def keygen(directory: Path, force: bool = False) -> Path:
    """Write a fresh secret (64 hex-encoded CSPRNG bytes) with mode 0600, atomically."""
    target = directory / "secret"
    if target.exists() and not force:
        raise ConfigError(f"{target}: exists; pass --force to replace it (every machine "
                          "then needs the new file)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".secret.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, os.urandom(64).hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        raise ConfigError(f"{target}: cannot write: {exc.strerror}")
    return target


@dataclass
class ClusterConfig:
    """Everything a role reads from the configuration directory."""

    directory: Path
    master: Endpoint
    nodes: list
    secret: bytes


def load(directory: Path, resolver: Optional[Resolver] = resolve) -> ClusterConfig:
    """Load and check all three files; the first mistake is raised."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: configuration directory does not exist "
                          "(use -c DIR or set JRS_CONFIG)")
    master = load_master(directory / "node.master", resolver)
    nodes = load_node_list(directory / "node.list", resolver)
    secret = load_secret(directory / "secret")
    return ClusterConfig(directory, master, nodes, secret)
