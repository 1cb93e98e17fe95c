"""The master server (in this process, real loopback connections) answers a reconnecting
submitter's hello naming the claims it dropped when the submitter's old session closed
(issue 12, the root of sim D6), in a welcome the strict wire checks let through."""

from __future__ import annotations

from .test_pool_master import NODE, _node_hello, _recv, _sub_hello, run

TOKEN = "t" * 64


async def _granted_claim(env):
    """A node and a submitter; the submitter is granted one claim on the node."""
    node = await env.open("node")
    node.send(_node_hello())
    assert (await _recv(node))["type"] == "welcome"
    sub = await env.open("submit")
    sub.send(_sub_hello("s1", token=TOKEN))
    assert (await _recv(sub)) == {"type": "welcome"}  # it listed no claims
    sub.send({"type": "demand", "requests": [{"key": "k", "count": 1, "cpus": 1, "memory": 0,
                                              "gpus": 0, "requirements": "", "ad": {}}]})
    offer = await _recv(node)
    assert offer["type"] == "claim-offer"
    node.send({"type": "claim-ok", "claim": offer["claim"], "gpu_ids": []})
    while True:
        msg = await _recv(sub)
        if msg["type"] == "claim":
            break
    assert msg["claim"] == offer["claim"] and msg["node"] == NODE
    return node, sub, offer["claim"]


def test_a_submitter_back_after_its_session_closed_is_told_its_dropped_claims(tmp_path):
    async def go(env):
        node, sub, cid = await _granted_claim(env)
        sub.close()  # its session resets: the master drops its claims, kill False
        assert (await _recv(node)) == {"type": "claim-drop", "claim": cid, "kill": False}
        back = await env.open("submit")
        back.send(dict(_sub_hello("s1", token=TOKEN), claims=[cid]))
        assert (await _recv(back)) == {"type": "welcome", "dropped": [cid]}
        # the node lets it go; a later hello still names it (remembered as dropped)
        node.send({"type": "claim-released", "claim": cid})
        node.send({"type": "node-report", "load": 0, "running": 0, "claims": []})
        again = await env.open("submit")
        again.send(dict(_sub_hello("s1", token=TOKEN), claims=[cid]))
        assert (await _recv(again)) == {"type": "welcome", "dropped": [cid]}
    run(go, tmp_path)


def test_a_submitter_whose_claims_are_held_gets_a_plain_welcome(tmp_path):
    async def go(env):
        _node, _sub, cid = await _granted_claim(env)
        again = await env.open("submit")  # a new session displaces the live one
        again.send(dict(_sub_hello("s1", token=TOKEN), claims=[cid]))
        assert (await _recv(again)) == {"type": "welcome"}
    run(go, tmp_path)
