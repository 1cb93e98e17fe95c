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
    claim-ok {claim, gpu_ids?} | claim-refused {claim, reason}   answers to claim-offer
    claim-released {claim}                                   the submitter let it go
Master -> node:
    welcome {}                    claim-offer {claim, submitter, user, cpus, memory, gpus}
    claim-drop {claim, kill?}     (its submitter left: the running job finishes and its
                                  result waits; the node was declared dead: kill it)

Submitter -> master:
    submitter-hello {submitter, user, host, pid, claims, clusters, token?}  on every
                                  (re)connect
    new-cluster {} -> cluster {id}
    demand {requests: [{key, count, cpus, memory, gpus, requirements, ad, weight?}]}
    release {claim, kill?}        progress {clusters: [{id, idle, running, done, failed}]}
    removed {re, count}           (answer to a forwarded rm)
Master -> submitter:
    claim {claim, node, host, port, cpus, memory, gpus, key?}  unmatchable {key, reason}
    give-back {count}             node-lost {node, claims}   rm {re, ids}
    welcome {dropped?, killed?}   (answer to its hello: the claims it listed that the master
                                  dropped meanwhile; killed: their node was told to kill)

Tool -> master: query {what: status|queue} -> status-reply | queue-reply;
    rm {ids} -> rm-reply {results}

Submitter -> node (after `attach`, which names the submitter and the jobs it
expects; the node answers `attached {unknown}` and then re-sends results):
    run {claim, job, attempt, spec, files: [{name, size, mode}]} + data chunks
    kill {job, attempt}           ack {job, attempt}         release {claim}
Node -> submitter:
    started {job, attempt} | rejected {job, attempt, reason, cause?}
                                  (cause "node": the node's own trouble, a disk write
                                  or a launch, not the job's; the job runs elsewhere;
                                  cause "claim": the claim was dropped or taken
                                  meanwhile, a race: the job runs again, uncounted)
    finished {job, attempt, result, files: [{name, size}]} + data chunks
"""

from __future__ import annotations

from typing import Any

from .errors import MessageError
from .schema import (
    MAX_INT,
    MAX_TEXT,
    Bool,
    Int,
    ListOf,
    MapOf,
    Null,
    Num,
    Obj,
    OneOf,
    Str,
    Tuple,
    check_fields,
    spec,
)

__all__ = ["MAX_FILE_SIZE", "MAX_INT", "MAX_TEXT", "SCHEMA", "TOO_BIG", "TRANSFER_TYPES",
           "error", "transfer_size", "validate"]

# The largest file one transfer may carry, 1 TiB less a byte: the schema's bound on a
# file header's size and the node's (node/core.check_headers), and what a submitter
# takes back (client/transfer.py), one constant so that none takes a size another
# refuses: 1 TiB exactly passed the schema and was refused by the node, which then
# left that run's data unread and closed the session ("file data outside a
# transfer"). A size above it is answered with TOO_BIG, by the schema and the node.
MAX_FILE_SIZE = (1 << 40) - 1
TOO_BIG = f"is larger than {MAX_FILE_SIZE} bytes (1 TiB - 1), the most one file may be"

# ---------------------------------------------------------------- value shapes

ID = Str(256)            # claim, submitter and job ids, node and user names (the cores
NAME = Str(1024)         # check their exact shape; here only the size is bounded)
PATH = Str(4096)
REASON = Str(1 << 16)
COUNT = Int(0, MAX_INT)
MANY = 100_000           # files of one job, claims of one node, requests of one submitter

_S, _I, _N, _D, _L = (str,), (int,), (int, float), (dict,), (list,)  # the older shorthand
OPT_STR = OneOf(Str(), Null)
OPT_INT = OneOf(Int(), Null)
OPT_NUM = OneOf(Num(), Null)
AD_VALUE = OneOf(Str(), Int(), Num(), Bool(), Null)           # a ClassAd literal
ATTRS = MapOf(Str(256), AD_VALUE, 1000)               # a node's ad: Cpus, Arch, +Attr=value
FILES = ListOf(Obj({"name": (PATH, True), "size": (Int(0, MAX_FILE_SIZE, TOO_BIG), True),
                    "mode": (Int(0, 0o7777), False)}), MANY)
JOB_REF = Tuple(ID, Int())                                     # [job, attempt]
CLAIM = Obj({"claim": (ID, True), "submitter": (ID, True), "user": (ID, True),
             "cpus": (COUNT, True), "memory": (COUNT, True),
             "gpus": (ListOf(Int(0, 1 << 16), 1 << 16), True),
             # dropped by a master (kill False), its job still running: let go after it
             "releasing": ((bool,), False)})
CLUSTER_FIELDS = {"id": (Int(), True), "file": (OPT_STR, False), "total": (COUNT, False),
                  "idle": (COUNT, False), "running": (COUNT, False), "done": (COUNT, False),
                  "failed": (COUNT, False), "held": (COUNT, False), "removed": (COUNT, False)}
CLUSTER = Obj(CLUSTER_FIELDS)                                  # a submitter's cluster_info
QUEUE_CLUSTER = Obj(dict(CLUSTER_FIELDS, submitter=(ID, True), user=(ID, True),
                         host=(NAME, True), connected=(Bool(), True)))
REQUEST = Obj({"key": (Str(4096), True), "count": (COUNT, True), "cpus": (COUNT, False),
               "memory": (COUNT, False), "gpus": (COUNT, False),
               "requirements": (Str(), False), "ad": (MapOf(Str(256), AD_VALUE), False),
               "weight": (Num(0), False)})
JOB_SPEC = Obj({
    "executable": (PATH, True), "transfer_executable": (Bool(), False),
    "arguments": (ListOf(Str(), MANY), False),
    "environment": (MapOf(Str(4096), Str()), False),
    "getenv": (MapOf(Str(4096), Str()), False),
    "iwd": (PATH, False), "shared_fs": (Bool(), False),
    "input": (OneOf(PATH, Bool(), Null), False), "output": (OneOf(PATH, Null), False),
    "error": (OneOf(PATH, Null), False),
    "transfer_output_files": (OneOf(ListOf(PATH, MANY), Null), False),
    "when_to_transfer_output": (OneOf(Str(64), Null), False), "cpus": (COUNT, False)})
RUSAGE = Obj({"utime": (Num(0), True), "stime": (Num(0), True), "maxrss_kb": (COUNT, True)})
RESULT = Obj({
    "node": (NAME, True), "exit_code": (OPT_INT, True), "signal": (OPT_INT, True),
    "rusage": (OneOf(RUSAGE, Null), True), "started": (OPT_NUM, True),
    "ended": (OPT_NUM, True), "removed": (Bool(), True), "reason": (OPT_STR, False),
    "errno": (OPT_INT, False), "exec_failed": (Bool(), False), "lost": (Bool(), False),
    "missing": (ListOf(PATH, MANY), False),
    "refused": (MapOf(PATH, REASON, MANY), False),  # outputs not sent back, and why
    "outputs_over_limit": (OPT_STR, False)})  # the node stopped collecting: too many files
NODE_STATUS = Obj({
    "name": (NAME, True), "address": (NAME, True), "state": (ID, True),
    "slots": (COUNT, True), "slots_used": (Int(), True), "memory": (COUNT, True),
    "memory_used": (Int(), True), "gpus": (COUNT, True), "gpus_used": (Int(), True),
    "load": (Num(), True), "running": (Int(), True), "claims": (MapOf(ID, Int()), True),
    "arch": (OPT_STR, True), "attrs": (ATTRS, True), "seen_ago": (OPT_NUM, True),
    "results_waiting": (OPT_INT, False), "oldest_result_age": (OPT_NUM, False)})
SUBMITTER_STATUS = Obj({
    "submitter": (ID, True), "user": (ID, True), "host": (NAME, True), "pid": (Int(), True),
    "connected": (Bool(), True), "claims": (COUNT, True), "slots": (COUNT, True),
    "idle": (COUNT, True), "share": (Num(), True)})
RM_RESULT = Obj({"id": (ID, True), "error": (REASON, False), "removed": (COUNT, False)})

# ---------------------------------------------------------------- the messages

# {type: {field: (spec, required?)}}; a spec is a jrs.wire.schema Spec or a tuple of
# Python types (scalars). Describe every nested payload: under JRS_STRICT what we send
# must match exactly, nested fields included.
SCHEMA: dict = {
    "hello": {"version": ((int,), True)},
    "ping": {"seq": ((int,), True)},
    "pong": {"seq": ((int,), True)},
    "echo": {"seq": ((int,), True), "body": ((str,), True)},
    "blob": {"size": (Int(0, 1 << 48), True)},
    "error": {"code": (ID, True), "message": (REASON, True), "re": (OneOf(ID, Null), False)},
    # node <-> master
    "node-hello": {"name": (NAME, True), "slots": (COUNT, True), "memory": (COUNT, True),
                   "gpus": (COUNT, True), "attrs": (ATTRS, True),
                   "claims": (ListOf(CLAIM, MANY), True)},
    "node-report": {"load": (Num(), True), "running": (COUNT, True),
                    "claims": (ListOf(ID, MANY), True),
                    "waiting": (COUNT, False), "oldest_wait": (Num(0), False)},
    # to a submitter: the claims its hello listed that the master no longer holds for it
    # (`killed`: their node was told to kill their jobs); absent from older masters
    "welcome": {"dropped": (ListOf(ID, MANY), False), "killed": (ListOf(ID, MANY), False)},
    "claim-offer": {"claim": (ID, True), "submitter": (ID, True), "user": (ID, True),
                    "cpus": (_I, True), "memory": (_I, True), "gpus": (_I, True)},
    "claim-ok": {"claim": (ID, True), "gpu_ids": (ListOf(Int(0, 1 << 16), 1 << 16), False)},
    "claim-refused": {"claim": (ID, True), "reason": (REASON, True)},
    "claim-released": {"claim": (ID, True)},
    "claim-drop": {"claim": (ID, True), "kill": ((bool,), False)},
    # submitter <-> master
    "submitter-hello": {"submitter": (ID, True), "user": (ID, True), "host": (NAME, True),
                        "pid": (_I, True), "claims": (ListOf(ID, MANY), True),
                        "clusters": (ListOf(CLUSTER, 10_000), True),
                        "token": (Str(128), False)},
    "new-cluster": {},
    "cluster": {"id": (_I, True)},
    "demand": {"requests": (ListOf(REQUEST, MANY), True)},
    "release": {"claim": (ID, True), "kill": ((bool,), False)},
    "progress": {"clusters": (ListOf(CLUSTER, 10_000), True)},
    "removed": {"re": (ID, True), "count": (_I, True)},
    "claim": {"claim": (ID, True), "node": (NAME, True), "host": (NAME, True),
              "port": (Int(0, 65535), True), "cpus": (_I, True), "memory": (_I, True),
              "gpus": (_I, True), "key": (Str(4096), False)},
    "unmatchable": {"key": (Str(4096), True), "reason": (REASON, True)},
    "give-back": {"count": (_I, True)},
    "node-lost": {"node": (NAME, True), "claims": (ListOf(ID, MANY), True)},
    "rm": {"ids": (ListOf(ID, 10_000), True), "re": (ID, False)},
    # tools <-> master
    "query": {"what": (ID, True)},
    "status-reply": {"nodes": (ListOf(NODE_STATUS, MANY), True),
                     "submitters": (ListOf(SUBMITTER_STATUS, MANY), True)},
    "queue-reply": {"clusters": (ListOf(QUEUE_CLUSTER, MANY), True)},
    "rm-reply": {"results": (ListOf(RM_RESULT, 10_000), True)},
    # submitter <-> node
    "attach": {"submitter": (ID, True), "jobs": (ListOf(JOB_REF, MANY, drop_bad=True), True),
               "token": (Str(128), False)},
    "attached": {"unknown": (ListOf(JOB_REF, MANY, drop_bad=True), True)},
    "run": {"claim": (ID, True), "job": (ID, True), "attempt": (_I, True),
            "spec": (JOB_SPEC, True), "files": (FILES, True)},
    "kill": {"job": (ID, True), "attempt": (_I, True)},
    "ack": {"job": (ID, True), "attempt": (_I, True)},
    "started": {"job": (ID, True), "attempt": (_I, True)},
    "rejected": {"job": (ID, True), "attempt": (_I, True), "reason": (REASON, True),
                 "cause": (Str(64), False)},
    # claim_gone: the node no longer holds the claim the job ran on (it went with the
    # job, or was dropped since), or cannot vouch for it (back from a stop, the master
    # has not confirmed its claims): the submitter sends no run on it. Absent: held, or
    # a node of before the field (the submitter then goes on as before)
    "finished": {"job": (ID, True), "attempt": (_I, True), "result": (RESULT, True),
                 "files": (FILES, True), "claim_gone": ((bool,), False)},
}

_compiled: dict = {}


def _fields(kind: str) -> Any:
    """[(name, spec, required)] and the known names of a type (compiled once)."""
    entry = _compiled.get(kind)
    if entry is None:
        fields = SCHEMA.get(kind)
        if fields is None:
            return None
        entry = _compiled[kind] = (
            [(name, spec(s), bool(req)) for name, (s, req) in fields.items()],
            frozenset(fields) | {"type"})
    return entry


def validate(obj: Any, strict: bool = False) -> dict:
    """The checked message, or MessageError saying what is wrong. `strict` (for what we
    send): unknown fields at any level are errors, not dropped."""
    if not isinstance(obj, dict):
        raise MessageError("a message must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise MessageError("a message needs a string `type`")
    entry = _fields(kind)
    if entry is None:
        raise MessageError(f"unknown message type {kind[:40]!r}")
    try:
        clean = check_fields(obj, entry[0], entry[1], None, strict)
    except MessageError as exc:
        raise MessageError(f"{kind}: {exc}") from None
    clean["type"] = kind
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
