"""Issue 13, a known limit closed: a `finished` header at the wire's 16 MiB frame limit.
The node bounds the names one result carries (sandbox.MAX_NAME_BYTES, 8 MiB of them as
the message carries them, JSON-escaped) like the file count: past it it stops
collecting and says so (`outputs_over_limit`), and the submitter holds the job with
HTCondor's code 33 and the reason. Before, a job with long names near the file limit
made a `finished` frame the node could never send: every delivery failed ("exceeds the
16777217-byte limit") and the submit waited for good."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

from jrs.node import sandbox

from .cluster import Cluster


def test_name_bytes_is_the_names_length_in_the_message():
    rng = random.Random(13)
    alphabet = 'ab"\\\x01\x7f\u00e9\u4e2d\U0001f600\udc80/ .'
    for _ in range(20_000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randrange(30)))
        assert sandbox.name_bytes(name) == len(json.dumps(name)) - 2, repr(name)


def test_collect_stops_at_the_name_bound_and_says_so(tmp_path, monkeypatch):
    """In process (the node's own owner): 40 files of 20-character names under `d`
    are 40 x 22 bytes; with the bound at 500 the collection stops past it."""
    monkeypatch.setattr(sandbox, "MAX_NAME_BYTES", 500)
    box = tmp_path / "box"
    (box / "d").mkdir(parents=True)
    for i in range(40):
        (box / "d" / f"{i:020d}").write_text("x")
    spec = {"sandbox": str(box), "uid": os.geteuid(), "transfer_output_files": ["d"]}
    found = sandbox.collect(spec)
    try:
        assert found.over is not None and "output names of more than 500 bytes" in found.over
        assert len(found.heads) == 500 // 22  # the ones within the bound
        assert found.name_bytes > 500
    finally:
        found.close()
    monkeypatch.setattr(sandbox, "MAX_NAME_BYTES", 40 * 22)  # exactly: all of them
    found = sandbox.collect(spec)
    try:
        assert found.over is None and len(found.heads) == 40
    finally:
        found.close()


def test_the_default_bound_leaves_room_for_100000_heads_and_the_result():
    heads = 100_000 * len('{"name":"","size":18446744073709551615,"mode":511},')
    result = 1000 * 200 * 6 + 100 * 400 * 6  # missing and refused, escaped at worst
    assert sandbox.MAX_NAME_BYTES == 8 << 20
    assert sandbox.MAX_NAME_BYTES + heads + result + 4096 < 16 << 20


def test_a_real_job_whose_output_names_exceed_the_bound_is_held_with_code_33(pyz):
    """4,500 files 15 directories of 250 characters deep: ~18 MB of names (the node
    sends the names from `d` down). Held with code 33 naming the bound, the node still
    serves (a job after it completes)."""
    base = Path(tempfile.mkdtemp(prefix="jrs-names-", dir="/tmp"))
    os.chmod(base, 0o755)
    c = Cluster(pyz, base, slots=[1]).start()
    try:
        work = base / "w"
        work.mkdir()
        work.chmod(0o755)
        (work / "deep.sh").write_text(
            "#!/bin/sh\nset -e\nn=$(head -c 250 /dev/zero | tr '\\0' x)\nmkdir d\ncd d\n"
            "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do mkdir $n$i; cd $n$i; done\n"
            "seq 1 4500 | sed \"s/^/$n/\" | xargs touch\n")
        os.chmod(work / "deep.sh", 0o755)
        (work / "m.condor").write_text("executable = deep.sh\ntransfer_output_files = d\n"
                                       "log = m.log\nqueue\n")
        code, _out, err = c.run_submit("m.condor", cwd=work, timeout=180)
        log = (work / "m.log").read_text()
        assert code == 1 and "1 failed" in err, (code, err[-2000:], c.logs())
        assert re.search(r"Code 33", log), log[-2000:]
        assert "output names of more than 8388608 bytes" in log, log[-2000:]
        assert not (work / "d").exists()  # nothing of a held result is written
        (work / "ok.condor").write_text("executable = /bin/echo\narguments = after\n"
                                        "output = ok.out\nqueue\n")
        code, _out, err = c.run_submit("ok.condor", cwd=work, timeout=60)
        assert code == 0 and (work / "ok.out").read_text() == "after\n", err + c.logs()
        assert "could not deliver" not in c.logs()
    finally:
        c.stop()
        shutil.rmtree(base, ignore_errors=True)
