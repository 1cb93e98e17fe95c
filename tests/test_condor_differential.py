"""Differential test: random submit files, our expansion vs HTCondor's own bindings.

`htcondor.Submit(text).jobs()` (htcondor 24.0.24, a test-only dependency) is the
reference. Generated files use macros (nested, defaulted, per-job), both
argument and environment syntaxes with their quoting, units, and every queue
form. The bindings keep only the first queue statement, so each file has one.
"""

from __future__ import annotations

import os
import sys
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jrs.condor import SubmitError, expand_text

from .conftest import SHARED

os.environ.setdefault("CONDOR_CONFIG", "/dev/null")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import htcondor  # a declared test dependency: its absence is a failure, not a skip

sys.path.insert(0, str(SHARED / "condor-conformance"))
import condor_oracle as oracle

WORD = st.text(alphabet="abcXYZ019_.-/=+:@%,", min_size=1, max_size=6)
SAFE = st.text(alphabet="abcXYZ019_.-/+:@%", min_size=1, max_size=6)


@st.composite
def macro_value(draw, defined: list, per_job: list) -> str:
    pieces = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["word", "ref", "job", "default", "int", "undef"]))
        if kind == "ref" and defined:
            pieces.append(f"$({draw(st.sampled_from(defined))})")
        elif kind == "job":
            pieces.append(f"$({draw(st.sampled_from(per_job))})")
        elif kind == "default":
            pieces.append(f"$(NOPE_{draw(SAFE).replace('.', '').replace('/', '')}:"
                          f"{draw(SAFE).replace(':', '')})")
        elif kind == "int":
            pieces.append(f"$INT(Process,%0{draw(st.integers(1, 4))}d)")
        elif kind == "undef":
            pieces.append("$(UNDEFINED_THING)")
        else:
            pieces.append(draw(SAFE))
    return draw(st.sampled_from(["", "_", "-"])).join(pieces)


@st.composite
def v2_word(draw) -> str:
    segs = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            inner = draw(st.text(alphabet="ab c'\"=$", max_size=6))
            inner = inner.replace("'", "''").replace('"', '""').replace("$", "x")
            segs.append(f"'{inner}'")
        else:
            segs.append(draw(SAFE))
    return "".join(segs)


@st.composite
def submit_file(draw) -> str:
    queue_kind = draw(st.sampled_from(["count", "in", "from1", "from2", "slice", "none"]))
    var = draw(st.sampled_from(["item", "x", "Sample"]))
    per_job = ["Process", "ProcId", "Step", "Cluster", "ClusterId", "Row", "ItemIndex"]
    if queue_kind in ("in", "from1", "slice"):
        per_job.append(var if queue_kind != "slice" else "Item")
    if queue_kind == "from2":
        per_job += ["a", "b"]
    lines = ["executable = /bin/echo"]
    defined: list[str] = []
    for i in range(draw(st.integers(0, 3))):
        name = f"M{i}"
        lines.append(f"{name} = {draw(macro_value(defined, per_job))}")
        defined.append(name)
    refs = [f"$({n})" for n in defined] + [f"$({p})" for p in per_job]
    if draw(st.booleans()):
        words = [draw(st.one_of(WORD, st.sampled_from(refs))) for _ in range(
            draw(st.integers(0, 5)))]
        if draw(st.booleans()):
            words.append('\\"' + draw(SAFE) + '\\"')
        lines.append("arguments = " + " ".join(words))
    else:
        words = [draw(st.one_of(v2_word(), st.sampled_from(refs))) for _ in range(
            draw(st.integers(0, 4)))]
        lines.append('arguments = "' + " ".join(words) + '"')
    if draw(st.booleans()):
        pairs = [f"E{i}={draw(st.one_of(SAFE, st.sampled_from(refs)))}"
                 for i in range(draw(st.integers(1, 3)))]
        if draw(st.booleans()):
            lines.append("environment = " + ";".join(pairs))
        else:
            lines.append('environment = "' + " ".join(pairs) + '"')
    lines.append(f"output = out_{draw(st.sampled_from(refs))}.txt")
    if draw(st.booleans()):
        number = draw(st.sampled_from(["1", "2.5", "1500", ".5", "3000"]))
        unit = draw(st.sampled_from(["", "K", "KB", "m", "MB", "G", "gb", " M", "T"]))
        lines.append(f"request_memory = {number}{unit}")
    if draw(st.booleans()):
        lines.append(f"request_cpus = {draw(st.integers(1, 64))}")
    count = draw(st.integers(1, 3))
    items = [draw(SAFE) for _ in range(draw(st.integers(1, 4)))]
    if queue_kind == "count":
        lines.append(f"queue {count}")
    elif queue_kind == "none":
        lines.append("queue")
    elif queue_kind == "in":
        lines.append(f"queue {count} {var} in ({', '.join(items)})")
    elif queue_kind == "slice":
        lines.append(f"queue in [1:] ({' '.join(items)})")
    elif queue_kind == "from1":
        lines += [f"queue {var} from ("] + [f"  {it}" for it in items] + [")"]
    else:
        rows = [f"  {it} {draw(SAFE)}" for it in items]
        lines += ["queue a, b from (", *rows, ")"]
    return "\n".join(lines) + "\n"


def reference(text: str) -> list[dict]:
    """HTCondor's expansion of `text`, reduced to the fields we compare."""
    jobs = []
    for ad in htcondor.Submit(text).jobs(clusterid=1):
        if "Arguments" in ad:
            argv = oracle.split_v2_raw(ad["Arguments"])
        elif "Args" in ad:
            argv = oracle.split_v1_raw(ad["Args"])
        else:
            argv = []
        if "Environment" in ad:
            env = oracle.parse_env_v2_raw(ad["Environment"])
        elif "Env" in ad:
            env = oracle.parse_env_v1_raw(ad["Env"])
        else:
            env = {}
        memory = ad.get("RequestMemory")
        jobs.append({"process": ad["ProcId"], "arguments": argv, "environment": env,
                     "output": os.path.normpath(os.path.join(ad["Iwd"], ad["Out"])),
                     "request_cpus": ad["RequestCpus"],
                     "request_memory": memory if isinstance(memory, int) else None})
    return jobs


def ours(text: str, directory: str) -> list[dict]:
    return [{"process": j.process, "arguments": j.arguments, "environment": j.environment,
             "output": j.path("output"), "request_cpus": j.request_cpus,
             "request_memory": j.request_memory}
            for j in expand_text(text, directory, environ={})]


@settings(max_examples=int(os.environ.get("JRS_DIFF_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=submit_file())
def test_same_jobs_as_htcondor(text, tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("diff"))
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        try:
            expected = reference(text)
        except (htcondor.HTCondorException, RuntimeError, ValueError):
            # HTCondor rejects the file: so must we
            with pytest.raises(SubmitError):
                ours(text, directory)
            return
        assert ours(text, directory) == expected, text
    finally:
        os.chdir(cwd)
