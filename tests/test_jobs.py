"""The queue and retry policy of a cluster (client/jobs.py), on its own."""

from __future__ import annotations

from jrs.client.jobs import DONE, FAILED, IDLE, REMOVED, RUNNING, Queue, Summary
from jrs.condor import expand_text


def jobs(text: str, cluster: int = 7) -> list:
    return list(expand_text(text, "/tmp", cluster=cluster))


def queue(text: str, **kw) -> Queue:
    js = jobs(text)
    return Queue(iter(js), len(js), **kw)


def run(q: Queue, result: dict) -> str:
    q.fill()
    rec = q.idle[0]
    q.next_for(rec.key)
    q.start(rec, "n1", "c1")
    state = q.outcome(rec, result)
    if state == IDLE:
        q.requeue(rec)
    else:
        q.finish(rec, Summary(state))
    return state


def test_success_exit_code_decides_done():
    q = queue("executable = /bin/true\nsuccess_exit_code = 3\nmax_retries = 0\nqueue 2\n")
    assert run(q, {"exit_code": 3}) == DONE
    assert run(q, {"exit_code": 0}) == FAILED
    assert q.counts[DONE] == 1 and q.counts[FAILED] == 1 and q.finished


def test_success_exit_code_alone_retries_twice():
    # HTCondor: success_exit_code without max_retries means JobMaxRetries = 2
    q = queue("executable = /bin/true\nsuccess_exit_code = 3\nqueue\n")
    assert [run(q, {"exit_code": 0}) for _ in range(3)] == [IDLE, IDLE, FAILED]


def test_a_signal_is_never_success():
    q = queue("executable = /bin/true\nqueue\n")
    assert run(q, {"exit_code": None, "signal": 9}) == FAILED


def test_on_exit_remove_false_reruns_until_true():
    q = queue("executable = /bin/true\non_exit_remove = NumJobCompletions >= 3\nqueue\n")
    assert run(q, {"exit_code": 0}) == IDLE
    assert run(q, {"exit_code": 0}) == IDLE
    assert run(q, {"exit_code": 0}) == DONE
    assert q.final[0].state == DONE


def test_on_exit_remove_sees_the_exit_code():
    q = queue("executable = /bin/true\non_exit_remove = ExitCode == 0\nqueue\n")
    assert run(q, {"exit_code": 1}) == IDLE
    assert run(q, {"exit_code": 0}) == DONE


def test_max_retries_counts_runs():
    q = queue("executable = /bin/true\nmax_retries = 2\nqueue\n")
    assert [run(q, {"exit_code": 1}) for _ in range(3)] == [IDLE, IDLE, FAILED]


def test_max_retries_keeps_counting_across_resume():
    """A resumed queue restores completions (and attempt numbers) from the journal."""
    q = queue("executable = /bin/true\nmax_retries = 2\nqueue\n", restore={0: (5, 2)})
    q.fill()
    rec = q.live[0]
    assert rec.attempt == 5 and rec.completions == 2
    q.next_for(rec.key)
    q.start(rec, "n", "c")
    assert rec.attempt == 6  # never an attempt number an old taskfile may still hold
    assert q.outcome(rec, {"exit_code": 1}) == FAILED


def test_requeue_keeps_the_attempt_number_growing():
    q = queue("executable = /bin/true\nqueue\n")
    q.fill()
    rec = q.next_for(q.idle[0].key)
    q.start(rec, "n", "c")
    q.requeue(rec)  # node lost
    assert q.counts[RUNNING] == 0 and q.counts[IDLE] == 1
    rec = q.next_for(rec.key)
    q.start(rec, "n", "c")
    assert rec.attempt == 2 and rec.completions == 0


def test_max_idle_bounds_the_window():
    q = queue("executable = /bin/true\nmax_idle = 3\nqueue 10\n")
    assert len(q.fill()) == 3 and len(q.live) == 3
    assert q.fill() == []  # the window is full
    rec = q.next_for(q.idle[0].key)
    q.start(rec, "n", "c")
    assert [r.proc for r in q.fill()] == [3]  # one started, one more materialized
    by_key = q.idle_by_key()
    (count, _job), = by_key.values()
    assert count == 9  # 3 idle in the window + 6 not materialized yet


def test_removing_jobs_not_yet_materialized():
    q = queue("executable = /bin/true\nmax_idle = 2\nqueue 6\n")
    q.fill()
    assert q.remove_procs({4, 5, 99}, "rm") == 2  # 99 is no job of the cluster
    assert q.counts[REMOVED] == 2 and q.counts[IDLE] == 4
    seen = []
    while True:
        q.fill()
        if not q.idle:
            break
        for rec in list(q.idle):
            q.next_for(rec.key)
            q.start(rec, "n", "c")
            q.finish(rec, Summary(DONE))
            seen.append(rec.proc)
    assert sorted(seen) == [0, 1, 2, 3] and q.finished
    assert q.counts == {"idle": 0, "running": 0, "done": 4, "failed": 0, "removed": 2,
                        "held": 0}


def test_remove_whole_cluster_removes_unmaterialized():
    q = queue("executable = /bin/true\nmax_idle = 2\nqueue 5\n")
    q.fill()
    assert q.remove_unmaterialized("ctrl-c") == 3
    assert q.counts[REMOVED] == 3 and q.counts[IDLE] == 2


def test_skip_and_adopt_on_resume():
    js = jobs("executable = /bin/true\nqueue 4\n")
    q = Queue(iter(js), 4, skip={0: Summary(DONE)})
    rec = q.adopt(js[2], 3, "n1", "c9")
    assert rec.state == RUNNING and rec.attempt == 3 and q.counts[RUNNING] == 1
    assert [r.proc for r in q.fill()] == [1, 3]
    assert q.counts == {"idle": 2, "running": 1, "done": 1, "failed": 0, "removed": 0,
                        "held": 0}


def _idle_by_key_by_scan(q: Queue) -> dict:
    """What idle_by_key meant before it kept counts: one scan of the whole idle queue."""
    out: dict = {}
    for rec in q.idle:
        out.setdefault(rec.key, [0, rec.job])[0] += 1
    if not q._exhausted and q.idle:
        last = q.idle[-1]
        out[last.key][0] += q.total - len(q.final) - len(q.live)
    return out


def test_idle_by_key_kept_counts_match_a_scan_through_every_transition():
    """The counts kept as jobs come and go must give what a scan gives: the same keys in
    the same order, the same counts, the same first job per key (its attributes and
    priority go into the demand), through fill, start by key, start without a key,
    requeue to the front, adopt and removal of idle jobs."""
    import random

    text = ("executable = /bin/true\nmax_idle = 40\nrequest_cpus = $(Process) % 3 + 1\n"
            "+Tag = $(Process)\npriority = $(Process) % 5\nqueue 200\n")
    for seed in range(20):
        rng = random.Random(seed)
        q = queue(text)
        running: list = []
        for _ in range(400):
            q.fill()
            op = rng.randrange(6)
            if op == 0 and q.idle_by_key():
                rec = q.next_for(rng.choice(list(q.idle_by_key())))
                if rec is not None:
                    q.start(rec, "n", "c")
                    running.append(rec)
            elif op == 1 and q.idle:
                rec = rng.choice(list(q.idle))
                q.take(rec)
                q.start(rec, "n", "c")
                running.append(rec)
            elif op == 2 and running:
                q.requeue(running.pop(rng.randrange(len(running))))
            elif op == 3 and running:
                q.finish(running.pop(rng.randrange(len(running))), Summary(DONE))
            elif op == 4 and q.idle:
                q.finish(rng.choice(list(q.idle)), Summary(REMOVED))
            elif op == 5 and q.idle:
                rec = rng.choice(list(q.idle))
                running.append(q.adopt(rec.job, rec.attempt + 1, "n", "c"))
            got, want = q.idle_by_key(), _idle_by_key_by_scan(q)
            assert list(got) == list(want), seed
            for k in want:
                assert got[k][0] == want[k][0] and got[k][1] is want[k][1], (seed, k)
            assert (q.next_for("no/such/key") is None)
        assert q.counts[IDLE] + q.counts[RUNNING] + len(q.final) == q.total
