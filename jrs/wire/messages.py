"""Every message that crosses the wire, in one place (the pueue habit).

A message is a JSON object with a `type`. `SCHEMA` lists each type's fields
and their types; `validate` checks a received object field by field and
returns a clean copy (unknown fields are dropped, so a newer peer may add
some). Anything else raises MessageError, which the receiver answers with an
`error` message instead of crashing.

    hello  {version}                    first frame of every client
    ping   {seq}        pong {seq}      liveness
    echo   {seq, body}                  test and benchmark traffic
    error  {code, message, re?}         the answer to a message we cannot take
"""

from __future__ import annotations

from typing import Any

from .errors import MessageError

MAX_INT = 2 ** 53
MAX_TEXT = 1 << 20

# field spec: (python types accepted, required?)
SCHEMA: dict[str, dict[str, tuple[tuple, bool]]] = {
    "hello": {"version": ((int,), True)},
    "ping": {"seq": ((int,), True)},
    "pong": {"seq": ((int,), True)},
    "echo": {"seq": ((int,), True), "body": ((str,), True)},
    "error": {"code": ((str,), True), "message": ((str,), True),
              "re": ((str, type(None)), False)},
}


def _check(name: str, value: Any, types: tuple) -> None:
    if isinstance(value, bool) or not isinstance(value, types):
        wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise MessageError(f"field {name!r} must be {wanted}")
    if isinstance(value, int) and not -MAX_INT <= value <= MAX_INT:
        raise MessageError(f"field {name!r} is out of range")
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise MessageError(f"field {name!r} is too long")


def validate(obj: Any) -> dict:
    """The checked message, or MessageError saying what is wrong."""
    if not isinstance(obj, dict):
        raise MessageError("a message must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise MessageError("a message needs a string `type`")
    fields = SCHEMA.get(kind)
    if fields is None:
        raise MessageError(f"unknown message type {kind[:40]!r}")
    clean = {"type": kind}
    for name, (types, required) in fields.items():
        if name not in obj:
            if required:
                raise MessageError(f"{kind}: missing field {name!r}")
            continue
        _check(name, obj[name], types)
        clean[name] = obj[name]
    return clean


def error(code: str, message: str, re: str | None = None) -> dict:
    return {"type": "error", "code": code, "message": message, "re": re}
