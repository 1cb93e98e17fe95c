"""JRS_STRICT: every message we send is held to the schema, nested fields included.

The test suite sets JRS_STRICT=1 (and JRS_STRICT_LOG=FILE) for every process it
starts, so the end-to-end tests prove that `SCHEMA` describes what the code
really sends: a message that does not match exactly (a missing or unknown
field at any depth, a wrong type, a bound exceeded) raises SchemaViolation in
the sender and leaves a `BAD` line in the log file, which the suite turns into
a failure. The first message of each type a process sends is noted as `ok`,
so a test can also check which messages were exercised. Off (the default),
this costs one attribute test per message.
"""

from __future__ import annotations

import logging
import os

from .errors import LocalProtocolError, MessageError
from .messages import validate

log = logging.getLogger("jrs.wire")
_seen: set = set()


class SchemaViolation(LocalProtocolError):
    """Under JRS_STRICT, a message we were about to send does not match SCHEMA."""


def enabled() -> bool:
    return os.environ.get("JRS_STRICT", "") not in ("", "0")


def _record(line: str) -> None:
    path = os.environ.get("JRS_STRICT_LOG")
    if not path:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{os.getpid()} {line}\n".encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def check_sent(body: dict, role: str) -> None:
    """Raise SchemaViolation (and record it) unless `body` matches SCHEMA exactly."""
    kind = body.get("type") if isinstance(body, dict) else None
    try:
        validate(body, strict=True)
    except MessageError as exc:
        text = f"{role} sent a {kind!r} that does not match the schema: {exc}"
        _record("BAD " + text.replace("\n", " ")[:2000])
        log.error("JRS_STRICT: %s", text)
        raise SchemaViolation(text) from None
    if (role, kind) not in _seen:
        _seen.add((role, kind))
        _record(f"ok {role} {kind}")
