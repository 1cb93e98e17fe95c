"""The schema against what the cores really send, on the paths only the simulation reaches.

JRS_STRICT holds every message a real process sends to SCHEMA, but only on the paths
the end-to-end tests take: a `node-lost`, a `give-back`, a `rejected` with its cause,
a `claim-refused`, a `welcome` naming killed claims come from faults those tests
rarely cause. The simulation causes them, and its network checks each message as a
receiver does (unknown fields dropped), which hides a sender that adds a field the
schema lacks: a real receiver would drop that field too. Here every message the
simulated Pool, node cores and submitter cores send is checked as a strict sender
checks it, nested payloads included, and every field SCHEMA describes for the messages
the cores exchange must be sent by some core over these seeds: a field nobody sends is
a schema entry that matches nothing (or a sender that lost it). And every message a
role receives there has its entry in that role's message -> handler table (issue 12:
"a reader finds where any message is handled in one hop").
"""

from __future__ import annotations

import re

import pytest

from jrs.wire import messages
from jrs.wire.errors import MessageError
from jrs.wire.schema import ListOf, MapOf, Obj, OneOf, spec

# What the cores never send, and why; everything else SCHEMA names must be seen.
NOT_BY_THE_CORES = {
    # the handshake, liveness and test traffic of the wire layer itself
    "hello", "echo", "blob",
    # the tools' requests and the master shell's answers (tests/test_wire_schema.py's
    # real cluster sends them; the simulation has no `jrs status`, `q` or `rm`)
    "query", "status-reply", "queue-reply", "rm", "rm-reply", "removed",
    # a request no node could ever take: the simulated shapes' requests all fit
    "unmatchable",
    # an error answer: only a peer that breaks the protocol, which no core does
    "error",
    # result fields of node-side failures the simulated executors never have
    "finished.result.errno", "finished.result.exec_failed", "finished.result.missing",
    "finished.result.refused", "finished.result.outputs_over_limit",
    "node-hello.claims[].releasing",
    # the simulated executors measure no rusage (the real cluster test sends it)
    "finished.result.rusage.utime", "finished.result.rusage.stime",
    "finished.result.rusage.maxrss_kb",
}

# revoke 82: a welcome naming killed claims (none in revoke 1-60 and small 1-60 since the
# nodes' `finished` says `claim_gone`, 12-02: revoke 29's named a claim its submitter now
# retires at the result its node sent back from a stop; 202 and 253 have one too)
SEEDS = [("small", range(1, 21)), ("revoke", [*range(1, 31), 82]), ("large", range(1, 5)),
         ("backlog", range(1, 3))]


def _schema_paths(s, prefix: str) -> set:
    """Every named field below `s`, as dotted paths (`[]` for list items)."""
    s = spec(s)
    if isinstance(s, Obj):
        out = set()
        for name, sub, _req in s.fields:
            out.add(f"{prefix}.{name}")
            out |= _schema_paths(sub, f"{prefix}.{name}")
        return out
    if isinstance(s, ListOf):
        return _schema_paths(s.item, prefix + "[]")
    if isinstance(s, OneOf):
        return set().union(*(_schema_paths(o, prefix) for o in s.options))
    return set()  # scalars; MapOf keys are data, not fields


def _sent_paths(s, value, prefix: str, out: set) -> None:
    """The fields of `value` that `s` names, walked the way the schema describes them."""
    s = spec(s)
    if isinstance(s, Obj) and isinstance(value, dict):
        for name, sub, _req in s.fields:
            if name in value:
                out.add(f"{prefix}.{name}")
                _sent_paths(sub, value[name], f"{prefix}.{name}", out)
    elif isinstance(s, ListOf) and isinstance(value, list):
        for item in value:
            _sent_paths(s.item, item, prefix + "[]", out)
    elif isinstance(s, OneOf):
        for o in s.options:
            _sent_paths(o, value, prefix, out)
    elif isinstance(s, MapOf) and isinstance(value, dict):
        for v in value.values():
            _sent_paths(s.value, v, prefix, out)


def _all_schema_paths() -> set:
    out = set()
    for kind, fields in messages.SCHEMA.items():
        out.add(kind)
        for name, (s, _req) in fields.items():
            out.add(f"{kind}.{name}")
            out |= _schema_paths(s, f"{kind}.{name}")
    return out


def _sent(body: dict) -> set:
    kind = body["type"]
    out = {kind}
    for name, (s, _req) in messages.SCHEMA.get(kind, {}).items():
        if name in body:
            out.add(f"{kind}.{name}")
            _sent_paths(s, body[name], f"{kind}.{name}", out)
    return out


@pytest.fixture(scope="module")
def simulated():
    """Run the seeds with every delivered message also checked strictly; what was
    refused, and every schema path some core sent."""
    from tests.sim import net, world

    refused: list = []
    seen: set = set()
    lenient = net.validate

    def as_a_strict_sender(body, strict=False):
        try:
            messages.validate(body, strict=True)
        except MessageError as exc:
            refused.append(f"{exc}: {str(body)[:200]}")
        if isinstance(body, dict) and isinstance(body.get("type"), str):
            seen.update(_sent(body))
        return lenient(body)

    net.validate = as_a_strict_sender
    directed: set = set()
    try:
        failing = []
        for shape, seeds in SEEDS:
            for seed in seeds:
                res = world.run(seed, shape, trace_messages=True)
                if not res.ok:
                    failing.append(res.replay())
                for line in res.trace:  # "t=1.234 node@n1:7082 -> master: {...}"
                    m = re.match(r"t=\S+ (\w+)(?:@\S+)? -> (\w+)(?:@\S+)?: \{.*?"
                                 r'"type": "([a-z-]+)"', line)
                    if m:
                        directed.add(m.groups())
    finally:
        net.validate = lenient
    assert not failing, failing  # the seeds themselves are CI's; they must stay clean
    return refused, seen, directed


def test_what_the_simulated_cores_send_matches_the_schema_exactly(simulated):
    refused, seen, _directed = simulated
    assert {"node-lost", "give-back", "rejected", "claim-refused", "kill"} <= seen, \
        "the seeds no longer reach the fault paths this test is for"
    assert not refused, "\n".join(sorted(set(refused))[:20])


def test_every_field_of_the_schema_is_sent_by_some_core(simulated):
    _refused, seen, _directed = simulated
    described = _all_schema_paths()
    assert not NOT_BY_THE_CORES - described, \
        f"exemptions for what the schema does not name: {sorted(NOT_BY_THE_CORES - described)}"
    never = sorted(p for p in described - seen
                   if p not in NOT_BY_THE_CORES and p.split(".")[0] not in NOT_BY_THE_CORES)
    assert not never, f"described in SCHEMA, never sent by any core: {never}"
    stale = sorted(p for p in NOT_BY_THE_CORES & seen)
    assert not stale, f"exempted as never sent, but sent: {stale} (drop the exemption)"


def _tables() -> dict:
    """receiver role -> sender role -> the message types its table (or its first-message
    or data path, named here) takes."""
    import inspect

    from jrs.client.core import SubmitCore
    from jrs.cluster import master
    from jrs.node.core import NodeCore

    def keys_of(cls, attr: str) -> set:  # the tables are built in __init__
        src = inspect.getsource(cls.__init__)
        m = re.search(rf"self\.{attr}\b[^=]*= \{{(.*?)\}}", src, re.S)
        assert m, f"{cls.__name__}.{attr}: no table in __init__"
        return set(re.findall(r'"([a-z-]+)":', m.group(1)))

    return {
        "master": {"node": set(master.NODE) | {"node-hello"},
                   "submit": set(master.SUBMITTER) | {"submitter-hello"}},
        # `attach` opens a submitter session (NodeCore.attach); `run` carries data and is
        # read by the daemon's own table first (NodeDaemon._session_handlers)
        "node": {"master": keys_of(NodeCore, "_from_master"),
                 "submit": keys_of(NodeCore, "_from_session") | {"attach", "run"}},
        "submit": {"master": keys_of(SubmitCore, "MASTER"),
                   "node": keys_of(SubmitCore, "NODE")},
    }


def test_every_message_a_role_receives_has_its_handler_in_that_roles_table(simulated):
    _refused, _seen, directed = simulated
    tables = _tables()
    for to, by_sender in tables.items():
        for sender, kinds in by_sender.items():
            unknown = sorted(kinds - set(messages.SCHEMA))
            assert not unknown, f"{to}'s table for {sender} names no message type: {unknown}"
    missing = sorted((sender, to, kind) for sender, to, kind in directed
                     if kind not in tables.get(to, {}).get(sender, set()))
    assert not missing, f"received without a handler (sender, receiver, type): {missing}"
    assert {to for _s, to, _k in directed} == set(tables), directed
