"""Real node daemons on loopback: claims.json kept current after a failed write (E1),
task keys across an upgrade (contract 10), and sessions bound to their claims and
tasks against a hostile secret holder (contracts 8 and 9)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from jrs.node import taskfile

from .cluster import Cluster
from .test_crash import runs, sweep, wait_for


def _claims(node_dir: Path) -> list:
    try:
        return json.loads((node_dir / "claims.json").read_text())
    except (FileNotFoundError, ValueError):
        return []


def test_a_failed_claims_write_is_made_good_once_the_disk_lets_it(pyz, tmp_path):
    """E1: a released claim whose claims.json write failed stayed in the file, and came
    back after a restart. The failure is real (a directory where the daemon writes
    claims.json.tmp: every write fails, EISDIR); once it goes, the daemon's retry each
    second writes the current claims, and a restart brings nothing back."""
    c = Cluster(pyz, tmp_path, slots=[1]).start()
    node = tmp_path / "node0"
    try:
        work = tmp_path / "w"
        work.mkdir()
        (work / "j.condor").write_text("executable = /bin/sh\n"
                                       "arguments = \"-c 'sleep 2; echo done'\"\n"
                                       "output = j.out\nqueue\n")
        p = c.submit("j.condor", cwd=work)
        wait_for(lambda: len(_claims(node)) == 1, timeout=30)
        (held,) = _claims(node)
        blocker = node / "claims.json.tmp"
        blocker.mkdir()  # from now on every write of claims.json fails
        _out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err + c.logs()
        assert (work / "j.out").read_text() == "done\n"
        log = tmp_path / "node0.log"
        wait_for(lambda: "cannot save the claims" in log.read_text(), timeout=20)
        # the claim is gone from the node, the file still says otherwise: a real failure
        assert _claims(node) == [held]
        time.sleep(2.5)
        assert _claims(node) == [held] and log.read_text().count("cannot save the") == 1
        blocker.rmdir()
        wait_for(lambda: _claims(node) == [], timeout=5)
        # the daemon logs this just after the write lands: wait for it, do not race it
        wait_for(lambda: "the claims are saved again" in log.read_text(), timeout=5)
        c.kill9(c.nodes[0])
        c.start_node(0)
        c.wait_up(1)
        time.sleep(1.5)
        assert _claims(node) == []
        assert not any(n.get("claims") for n in c.status()["nodes"]), c.status()
    finally:
        c.stop()


def test_an_upgrade_with_a_job_running_re_adopts_its_old_key_taskfile(pyz, tmp_path):
    """Contract 10: a node upgraded while a job runs finds its taskfile under the name
    an older jrs gave it (the submitter id's first 16 characters), re-adopts the live
    executor, delivers the result once, and the ack removes that file. (The old name is
    made by renaming the running job's taskfile while the daemon is down: its executor
    keeps its lock, which belongs to the open file, not to the name.)"""
    c = Cluster(pyz, tmp_path, slots=[1]).start()
    tasks = tmp_path / "node0" / "tasks"
    try:
        work = tmp_path / "w"
        ledger = sweep(work, 1, 3)
        p = c.submit("c.condor", cwd=work)
        wait_for(lambda: len(runs(ledger)) == 1, timeout=30)
        (path,) = tasks.glob("*.task")
        st = taskfile.load(str(path))
        assert taskfile.owner_alive(str(path))
        sub = st.spec["submitter"]
        old_key = f"{sub[:16]}-{st.spec['job']}.{st.spec['attempt']}"
        assert path.name != old_key + ".task"  # today's keys are not the old ones
        c.kill9(c.nodes[0])
        old = tasks / f"{old_key}.task"
        os.rename(path, old)
        assert taskfile.owner_alive(str(old))
        c.start_node(0)
        _out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err + c.logs()
        assert runs(ledger) == {"1.0": 1}, (runs(ledger), err, c.logs())
        assert (work / "out" / "0").read_text() == "done 1.0\n"
        log = (tmp_path / "node0.log").read_text()
        assert f"re-adopted running job {old_key}" in log, log
        wait_for(lambda: not old.exists(), timeout=10)
        assert list(tasks.glob("*.task")) == []
    finally:
        c.stop()


def test_a_hostile_peer_with_the_victims_ids_and_its_own_token_changes_nothing(pyz,
                                                                              tmp_path):
    """Contracts 8 and 9: another secret holder knows the victim's submitter id (shown by
    `jrs status`) and even its claim id (read here from the node's claims.json), and
    brings its own session token. An attach without a token is refused (code
    "session"); with its own token it may attach, but a run on the claim is rejected,
    and release, kill and ack of the victim's claim and job are refused with code
    "session". Nothing changes: the claim stays, the job runs once to its end, the
    hostile session receives nothing of it, and the honest submit finishes."""
    from jrs.wire.aio import ConnectionClosed, connect
    from jrs.wire.keys import root_key

    c = Cluster(pyz, tmp_path, slots=[1]).start()
    node = tmp_path / "node0"
    try:
        work = tmp_path / "w"
        ledger = sweep(work, 1, 4)
        p = c.submit("c.condor", cwd=work)
        wait_for(lambda: len(runs(ledger)) == 1, timeout=30)
        (claim,) = _claims(node)
        victim = claim["submitter"]
        (path,) = (node / "tasks").glob("*.task")
        spec = taskfile.load(str(path)).spec
        job, attempt = spec["job"], spec["attempt"]
        assert claim.get("session")  # the claim is bound to the victim's session
        assert [s["submitter"] for s in c.status()["submitters"]] == [victim]
        root = root_key((c.conf / "secret").read_bytes())
        port = c.ports[0]

        async def open_session(hello: dict):
            ch = await connect("127.0.0.1", port, root, "submit",
                               peer_roles=frozenset({"node"}))
            ch.send(hello)
            return ch

        async def reply(ch) -> object:
            try:
                return await asyncio.wait_for(ch.recv(), 10)
            except asyncio.TimeoutError:
                return "timeout"
            except ConnectionClosed:
                return "closed"

        async def go() -> dict:
            out: dict = {}
            ch = await open_session({"type": "attach", "submitter": victim, "jobs": []})
            out["no-token"] = [await reply(ch), await reply(ch)]
            ch.close()
            ch = await open_session({"type": "attach", "submitter": victim,
                                     "jobs": [[job, attempt]], "token": "5a" * 32})
            try:
                out["attach"] = await reply(ch)
                await ch.send_files({"type": "run", "claim": claim["claim"], "job": "1.7",
                                     "attempt": 0, "spec": {"executable": "/bin/true"},
                                     "files": []}, [])
                out["run"] = await reply(ch)
                for kind, msg in (("release", {"type": "release", "claim": claim["claim"]}),
                                  ("kill", {"type": "kill", "job": job, "attempt": attempt}),
                                  ("ack", {"type": "ack", "job": job, "attempt": attempt})):
                    ch.send(msg)
                    out[kind] = await reply(ch)
                out["after"] = []  # the victim's job ends meanwhile: nothing of it comes
                deadline = time.monotonic() + 6
                while time.monotonic() < deadline:
                    try:
                        out["after"].append(await asyncio.wait_for(
                            ch.recv(), deadline - time.monotonic()))
                    except asyncio.TimeoutError:
                        break
            finally:
                ch.close()
            return out

        got = asyncio.run(go())
        assert got["no-token"][0]["type"] == "error", got
        assert got["no-token"][0]["code"] == "session" and got["no-token"][1] == "closed", got
        assert got["attach"] == {"type": "attached", "unknown": [[job, attempt]]}, got
        assert got["run"]["type"] == "rejected", got
        assert "another session" in got["run"]["reason"], got
        for kind in ("release", "kill", "ack"):
            msg = got[kind]
            assert isinstance(msg, dict) and msg["type"] == "error", got
            assert msg["code"] == "session" and msg["re"] == kind, got
        assert got["after"] == [], got
        _out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err + c.logs()
        assert runs(ledger) == {"1.0": 1}
        assert (work / "out" / "0").read_text() == "done 1.0\n"
        assert "1.7" not in (tmp_path / "node0.log").read_text()
        assert c.nodes[0].poll() is None
    finally:
        c.stop()
