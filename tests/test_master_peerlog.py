"""Issue 13 rule 11 at the master's shell: what an authenticated peer sends cannot flood
or flood the master's log. One secret holder's session sends 4,000 messages the master
refuses (each answered `bad-message`): a few log lines come of it (rate-limited per
source address), each one line and short; the session, and another peer's, are still
served. (The wire's own refusals, with distinct peer-chosen texts, are tested in
tests/test_wire_net.py.)

A real Master over loopback in this process (tests/test_pool_master.py's set-up)."""

from __future__ import annotations

import logging

from .test_pool_master import _recv, _sub_hello, run


def test_refusals_of_an_authenticated_peer_are_logged_a_few_lines_a_minute(tmp_path, caplog):
    async def go(env):
        sub = await env.open("submit", hostile=True)
        sub.send(_sub_hello("s1", token="t" * 64))
        assert (await _recv(sub))["type"] == "welcome"
        for i in range(2000):  # a type a submitter may not send: refused by the master
            sub.send({"type": "pong", "seq": i})
            sub.send({"type": "claim-ok", "claim": f"{i:024x}"})
        sub.send({"type": "new-cluster"})
        replies = []
        while True:
            msg = await _recv(sub, 20)
            if msg["type"] == "cluster":
                break
            replies.append(msg)
        assert len(replies) == 4000 and {m["code"] for m in replies} == {"bad-message"}
        other = await env.open("submit")
        other.send(_sub_hello("s2", token="u" * 64))
        assert (await _recv(other))["type"] == "welcome"
        other.send({"type": "new-cluster"})
        assert (await _recv(other))["type"] == "cluster"

    with caplog.at_level(logging.INFO, logger="jrs.master"):
        run(go, tmp_path)
    about = [r.getMessage() for r in caplog.records
             if r.name == "jrs.master" and r.levelno >= logging.WARNING
             and "127.0.0.1" in r.getMessage()]
    assert 1 <= len(about) <= 21, about[:30]
    assert all("\n" not in line and len(line) < 400 for line in about), about
