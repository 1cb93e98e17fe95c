"""Every message that crosses the wire, in one place (the pueue habit).

A message is a JSON object with a `type`. `SCHEMA` lists each type's fields
and their types; `validate` checks a received object field by field and
returns a clean copy (unknown fields are dropped, so a newer peer may add
some). Anything else raises MessageError, which the receiver answers with an
`error` message instead of crashing.

    hello  {version}                    first frame of every client
    ping   {seq}        pong {seq}      liveness
    echo   {seq, body}                  test and benchmark traffic
    blob   {size} + data chunks         test and benchmark bulk traffic (a transfer)
    error  {code, message, re?}         the answer to a message we cannot take

Node -> master (the node's session; the master never carries job data):
    node-hello  {name, slots, memory, gpus, attrs, claims}   on every (re)connect
    node-report {load, running, claims, waiting?, oldest_wait?}  heartbeat, every second
                                  (waiting: results not yet acknowledged; oldest_wait:
                                  seconds the oldest of them has waited)
    claim-ok {claim} | claim-refused {claim, reason}         answers to claim-offer
    claim-released {claim}                                   the submitter let it go
Master -> node:
    welcome {}                    claim-offer {claim, submitter, user, cpus, memory, gpus}
    claim-drop {claim, kill?}     (its submitter left: the running job finishes and its
                                  result waits; the node was declared dead: kill it)

Submitter -> master:
    submitter-hello {submitter, user, host, pid, claims, token?}  on every (re)connect
    new-cluster {} -> cluster {id}
    demand {requests: [{key, count, cpus, memory, gpus, requirements, ad}]}
    release {claim, kill?}        progress {clusters: [{id, idle, running, done, failed}]}
    removed {re, count}           (answer to a forwarded rm)
Master -> submitter:
    claim {claim, node, host, port, cpus, memory, gpus}      unmatchable {key, reason}
    give-back {count}             node-lost {node, claims}   rm {re, ids}

Tool -> master: query {what: status|queue} -> status-reply | queue-reply;
    rm {ids} -> rm-reply {results}

Submitter -> node (after `attach`, which names the submitter and the jobs it
expects; the node answers `attached {unknown}` and then re-sends results):
    run {claim, job, attempt, spec, files: [{name, size, mode}]} + data chunks
    kill {job, attempt}           ack {job, attempt}         release {claim}
Node -> submitter:
    started {job, attempt} | rejected {job, attempt, reason}
    finished {job, attempt, result, files: [{name, size}]} + data chunks
"""

from __future__ import annotations

from typing import Any

from .errors import MessageError

MAX_INT = 2 ** 53
MAX_TEXT = 1 << 20

_S, _I, _N, _D, _L = (str,), (int,), (int, float), (dict,), (list,)

# field spec: (python types accepted, required?)
SCHEMA: dict[str, dict[str, tuple[tuple, bool]]] = {
    "hello": {"version": ((int,), True)},
    "ping": {"seq": ((int,), True)},
    "pong": {"seq": ((int,), True)},
    "echo": {"seq": ((int,), True), "body": ((str,), True)},
    "blob": {"size": ((int,), True)},
    "error": {"code": ((str,), True), "message": ((str,), True),
              "re": ((str, type(None)), False)},
    # node <-> master
    "node-hello": {"name": (_S, True), "slots": (_I, True), "memory": (_I, True),
                   "gpus": (_I, True), "attrs": (_D, True), "claims": (_L, True)},
    "node-report": {"load": (_N, True), "running": (_I, True), "claims": (_L, True),
                    "waiting": (_I, False), "oldest_wait": (_N, False)},
    "welcome": {"master": (_S, False)},
    "claim-offer": {"claim": (_S, True), "submitter": (_S, True), "user": (_S, True),
                    "cpus": (_I, True), "memory": (_I, True), "gpus": (_I, True)},
    "claim-ok": {"claim": (_S, True), "gpu_ids": (_L, False)},
    "claim-refused": {"claim": (_S, True), "reason": (_S, True)},
    "claim-released": {"claim": (_S, True)},
    "claim-drop": {"claim": (_S, True), "kill": ((bool,), False)},
    # submitter <-> master
    "submitter-hello": {"submitter": (_S, True), "user": (_S, True), "host": (_S, True),
                        "pid": (_I, True), "claims": (_L, True), "clusters": (_L, True),
                        "token": (_S, False)},
    "new-cluster": {},
    "cluster": {"id": (_I, True)},
    "demand": {"requests": (_L, True)},
    "release": {"claim": (_S, True), "kill": ((bool,), False)},
    "progress": {"clusters": (_L, True)},
    "removed": {"re": (_S, True), "count": (_I, True)},
    "claim": {"claim": (_S, True), "node": (_S, True), "host": (_S, True), "port": (_I, True),
              "cpus": (_I, True), "memory": (_I, True), "gpus": (_I, True),
              "key": (_S, False)},
    "unmatchable": {"key": (_S, True), "reason": (_S, True)},
    "give-back": {"count": (_I, True)},
    "node-lost": {"node": (_S, True), "claims": (_L, True)},
    "rm": {"ids": (_L, True), "re": (_S, False)},
    # tools <-> master
    "query": {"what": (_S, True)},
    "status-reply": {"nodes": (_L, True), "submitters": (_L, True)},
    "queue-reply": {"clusters": (_L, True)},
    "rm-reply": {"results": (_L, True)},
    # submitter <-> node
    "attach": {"submitter": (_S, True), "jobs": (_L, True), "token": (_S, False)},
    "attached": {"unknown": (_L, True)},
    "run": {"claim": (_S, True), "job": (_S, True), "attempt": (_I, True),
            "spec": (_D, True), "files": (_L, True)},
    "kill": {"job": (_S, True), "attempt": (_I, True)},
    "ack": {"job": (_S, True), "attempt": (_I, True)},
    "started": {"job": (_S, True), "attempt": (_I, True)},
    "rejected": {"job": (_S, True), "attempt": (_I, True), "reason": (_S, True)},
    "finished": {"job": (_S, True), "attempt": (_I, True), "result": (_D, True),
                 "files": (_L, True)},
}


def _check(name: str, value: Any, types: tuple) -> None:
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        names = {type(None): "null", dict: "an object", list: "a list", float: "number"}
        wanted = " or ".join(names.get(t, t.__name__) for t in types)
        raise MessageError(f"field {name!r} must be {wanted}")
    if isinstance(value, (int, float)) and not -MAX_INT <= value <= MAX_INT:
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


# Messages whose data frames follow them (a transfer): `run`/`finished` carry
# `files: [{size}]`, `blob` (tests and benchmarks) a bare `size`.
TRANSFER_TYPES = frozenset({"run", "finished", "blob"})


def transfer_size(body: dict) -> int:
    """The data bytes that follow a transfer header (ValueError if it does not say)."""
    try:
        blob = body["type"] == "blob"
        sizes = [body["size"]] if blob else [f["size"] for f in body["files"]]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{body.get('type')!r} does not say how many bytes follow") from exc
    total = 0
    for size in sizes:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"{body.get('type')!r}: bad size {size!r:.40}")
        total += size
    return total


def error(code: str, message: str, re: str | None = None) -> dict:
    return {"type": "error", "code": code, "message": message, "re": re}
