"""The structure-aware fuzzer (tests/wirefuzz.py): valid messages of every type,
mutated, sealed with the session's key, through the sans-IO connection into the
pure entry points of the master, the node core and the submitter core."""

from __future__ import annotations

import pytest

from jrs.wire.messages import SCHEMA

from . import wirefuzz as F

NO_FIELDS = {"new-cluster"}  # nothing in it to refuse at field level


def test_every_message_type_has_its_receivers_named():
    """A type added to the schema must say who receives it (wirefuzz.RECEIVERS), so the
    fuzzer feeds it to that role."""
    assert sorted(SCHEMA) == sorted(F.RECEIVERS)


@pytest.mark.parametrize("seed", [1])
def test_fuzzed_messages_reach_every_handler_and_break_nothing(seed, tmp_path):
    stats = F.run(seed, 2000, str(tmp_path))
    # every type was refused by the schema for a field-level reason at least once
    missing = sorted(k for k in SCHEMA if k not in NO_FIELDS and not stats.schema_refused[k])
    assert not missing, missing
    # every receiving handler was reached with a message it accepted, and the ones that
    # check fields beyond the schema refused one for a field-level reason
    for kind, roles in F.RECEIVERS.items():
        for role in roles:
            assert stats.accepted[(role, kind)], (role, kind, stats.reached[(role, kind)])
    unrefused = sorted(k for k in F.ROLE_REFUSES if not stats.refused[k])
    assert not unrefused, unrefused
    # the frame-level mutations ended connections, as they must, and the stream kept in
    # step after every refused message (run() pings after each input)
    assert stats.events["BadMessage"] > 500 and stats.events["Message"] > 500
    assert sum(stats.wire_errors.values()) > 100, stats.wire_errors
    assert stats.inputs == 2000


# ------------------------------------------------------------------ findings
# Found by the fuzzer (each failed before its fix; wirefuzz.KNOWN lists any not yet fixed).

def test_m1_a_claim_of_no_cpus_does_not_break_the_books():
    from types import SimpleNamespace as NS

    from jrs.cluster.pool import Pool
    p = Pool([NS(name="n", endpoint=NS(host="h", port=1))], 0.0)

    def c(cid: str, cpus: int) -> dict:
        return {"claim": cid, "submitter": F.SUB, "user": "u", "cpus": cpus, "memory": 0,
                "gpus": []}

    hello = {"slots": 4, "memory": 100, "gpus": 0, "attrs": {}}
    p.node_hello("n", dict(hello, claims=[c("c1", 1), c("c2", 0)]), 1.0)
    p.node_hello("n", dict(hello, claims=[c("c2", 0)]), 2.0)
    p.node_hello("n", dict(hello, claims=[]), 3.0)
    p.check()
    assert not p.claims


def test_s1_a_claim_on_a_node_without_a_host_is_not_used(tmp_path):
    """Found by the fuzzer: a claim naming a node we have no address for was kept and
    pump died in _start; it is given back to the master instead."""
    import random

    roles = F.Roles(F.Stats(), str(tmp_path), random.Random(1))
    core = roles.submit
    out = core.from_master({"type": "claim", "claim": "4f120178c87584e7f6b822f0",
                            "node": "n2", "host": "", "port": 9, "cpus": 1, "memory": 10,
                            "gpus": 0, "key": "1/0/0/"}, 1.0)
    core.pump()
    out += core._take()
    assert "4f120178c87584e7f6b822f0" not in core.claims
    sent = [a.msg for a in out if type(a).__name__ == "ToMaster"]
    assert {"type": "release", "claim": "4f120178c87584e7f6b822f0", "kill": False} in sent
