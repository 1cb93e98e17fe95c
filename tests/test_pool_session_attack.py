"""Real processes on loopback (issue 13, contracts 8 and 9): a secret holder who reuses the
submitter id `jrs status` shows gets nothing, neither from the master nor from the node,
and the honest submit beside it finishes with every job run once.

The attacker holds the cluster secret (an operator, in the threat model) and even knows
the honest claim ids (read here from the node's claims.json, as if they had leaked):
- a submitter-hello with the honest id and another token, or with none, is refused
  (error "session") and the channel closed;
- a `release` with kill of the honest claims from its own session changes nothing;
- an `attach` to the node with the honest id and its own token sees no job of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from jrs.wire.aio import ConnectionClosed, connect
from jrs.wire.keys import root_key

from .cluster import Cluster
from .conftest import run_jrs
from .test_submit_resume import runs, shared_ledger


async def _recv(ch, timeout: float = 5.0) -> dict:
    while True:
        msg = await asyncio.wait_for(ch.recv(), timeout)
        if isinstance(msg, dict):
            return msg


def _hello(sid: str, token=None) -> dict:
    m = {"type": "submitter-hello", "submitter": sid, "user": "mallory", "host": "evil",
         "pid": 1, "claims": [], "clusters": []}
    if token is not None:
        m["token"] = token
    return m


def _wait(what, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_a_secret_holder_reusing_a_submitters_id_gets_nothing(pyz, tmp_path):
    """The honest jobs wait for a gate the test opens only after the attack was handled
    (the master answered a later message on the attacker's channel, the node had time to
    act on any claim-drop): a loaded machine cannot let them end first and leave the
    attack nothing to hit. Each job runs exactly once: a kill the attack got through
    would show as a second run (the submitter reruns a run killed by a revocation)."""
    c = Cluster(pyz, tmp_path, slots=[2]).start()
    ledger = shared_ledger()
    gate = ledger.parent / "gate"
    try:
        work = tmp_path / "w"
        work.mkdir()
        (work / "job.sh").write_text(
            f"#!/bin/sh\necho $JRS_JOB_ID >> {ledger}\ni=0\n"
            f"while [ ! -e {gate} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done\n"
            "echo $JRS_JOB_ID\n")
        os.chmod(work / "job.sh", 0o755)
        (work / "j.condor").write_text("executable = job.sh\n"
                                       "output = out.$(Process)\nqueue 2\n")
        honest = c.submit("j.condor", cwd=work)
        claims_json = tmp_path / "node0" / "claims.json"

        def two_claims():
            try:
                listed = json.loads(claims_json.read_text())
            except (OSError, ValueError):
                return None
            return [x["claim"] for x in listed] if len(listed) == 2 else None
        stolen = _wait(two_claims)
        assert all(len(cid) == 32 and int(cid, 16) >= 0 for cid in stolen), stolen  # 128 bits
        status = c.status()
        (victim,) = status["submitters"]
        sid = victim["submitter"]
        shown = json.dumps(status) + run_jrs(pyz, "status", "-c", str(c.conf)).stdout
        assert sid in shown and not any(cid in shown for cid in stolen), shown
        root = root_key((c.conf / "secret").read_bytes())
        node_name = c.names()[0]
        host, port = node_name.rsplit(":", 1)

        async def attack() -> list:
            replies = []
            for token in ("ee" * 32, None):  # another token, then none at all
                ch = await connect("127.0.0.1", c.mport, root, "submit",
                                   peer_roles=frozenset({"master"}))
                ch.send(_hello(sid, token))
                reply = await _recv(ch)
                replies.append((reply["type"], reply.get("code")))
                with pytest.raises(ConnectionClosed):  # closed, not merely silent
                    await _recv(ch, 10)
            own = await connect("127.0.0.1", c.mport, root, "submit",
                                peer_roles=frozenset({"master"}))
            own.send(_hello(os.urandom(12).hex(), "dd" * 32))
            assert (await _recv(own))["type"] == "welcome"
            for cid in stolen:  # its own session, the other's claims: nothing happens
                own.send({"type": "release", "claim": cid, "kill": True})
            own.send({"type": "new-cluster"})  # answered only after the releases were handled
            assert (await _recv(own, 20))["type"] == "cluster"
            node = await connect(host, int(port), root, "submit",
                                 peer_roles=frozenset({"node"}))
            node.send({"type": "attach", "submitter": sid, "jobs": [["1.0", 0], ["1.1", 0]],
                       "token": "ee" * 32})
            attached = await _recv(node)
            replies.append((attached["type"], len(attached.get("unknown", []))))
            await asyncio.sleep(1.0)  # a claim-drop with kill would have reached the node
            replies.append(("claims kept", sorted(two_claims() or []) == sorted(stolen)))
            replies.append(("runs", dict(runs(ledger))))
            gate.touch()  # the attack is over: the honest jobs may end
            seen = []
            while honest.poll() is None:  # whatever the node sends it until the end
                try:
                    msg = await _recv(node, 0.5)
                except asyncio.TimeoutError:
                    continue
                except ConnectionClosed:
                    break
                seen.append(msg.get("type"))
            replies.append(("node sent", seen))
            return replies

        try:
            replies = asyncio.run(attack())
        finally:
            gate.touch()
        _out, err = honest.communicate(timeout=60)
        assert replies[:2] == [("error", "session"), ("error", "session")], replies
        assert replies[2] == ("attached", 2), replies  # both jobs unknown to that session
        assert replies[3] == ("claims kept", True), (replies, c.logs())
        assert replies[4] == ("runs", {"1.0": 1, "1.1": 1}), replies  # none killed yet
        assert replies[5][0] == "node sent" and "finished" not in replies[5][1], replies
        assert honest.returncode == 0, err + c.logs()
        assert "2 jobs, 2 done, 0 failed" in err, err
        assert runs(ledger) == {"1.0": 1, "1.1": 1}, err  # each job once: none was killed
        assert [(work / f"out.{i}").read_text() for i in range(2)] == ["1.0\n", "1.1\n"]
        master_log = (tmp_path / "master.log").read_text()
        kills = [line for line in master_log.splitlines()
                 if "claim-drop" in line and any(cid in line for cid in stolen)
                 and "'kill': True" in line]
        assert kills == [], kills  # the attacker's release with kill reached no node
    finally:
        c.stop()


def test_a_copied_node_name_does_not_displace_a_live_node(pyz, tmp_path):
    """Issue 13 rule 7, real processes: a second node-hello for a name whose session
    answers a ping within 2 s is refused ("duplicate-node"), the real node keeps serving;
    only a session that fails the ping (here: the node SIGSTOPped) loses its place, and
    the real node, back, takes it again from the silent impostor the same way."""
    import signal

    c = Cluster(pyz, tmp_path, slots=[1]).start()
    name = c.names()[0]
    root = root_key((c.conf / "secret").read_bytes())
    hello = {"type": "node-hello", "name": name, "slots": 64, "memory": 1 << 20, "gpus": 0,
             "attrs": {}, "claims": []}

    async def impostor():
        ch = await connect("127.0.0.1", c.mport, root, "node",
                           peer_roles=frozenset({"master"}))
        t0 = time.monotonic()
        ch.send(hello)
        reply = await _recv(ch, 10)
        return ch, reply, time.monotonic() - t0

    async def first() -> None:
        _ch, reply, _ = await impostor()
        assert (reply["type"], reply.get("code")) == ("error", "duplicate-node"), reply

    try:
        asyncio.run(first())
        (node,) = c.status()["nodes"]
        assert node["state"] == "up" and node["slots"] == 1  # the real one's hello stands
        work = tmp_path / "w"
        work.mkdir()
        (work / "j.condor").write_text("executable = /bin/echo\narguments = hi\n"
                                       "output = out\nqueue\n")
        code, _out, err = c.run_submit("j.condor", cwd=work, timeout=60)
        assert code == 0 and (work / "out").read_text() == "hi\n", err + c.logs()

        async def second() -> None:
            os.kill(c.nodes[0].pid, signal.SIGSTOP)  # the live session stops answering
            try:
                ch, reply, took = await impostor()
                assert reply["type"] == "welcome", reply
                assert 1.5 < took < 6, took  # after the 2 s ping, not at once
                assert c.status()["nodes"][0]["slots"] == 64
            finally:
                os.kill(c.nodes[0].pid, signal.SIGCONT)
            # the impostor never answers a ping: the real node, reconnecting, wins
            for _ in range(100):
                await asyncio.sleep(0.3)
                if c.status()["nodes"][0]["slots"] == 1:
                    break
            assert c.status()["nodes"][0]["slots"] == 1, c.logs()
            ch.close()
        asyncio.run(second())
        (work / "out").unlink()
        code, _out, err = c.run_submit("j.condor", cwd=work, timeout=60)
        assert code == 0 and (work / "out").read_text() == "hi\n", err + c.logs()
    finally:
        c.stop()
