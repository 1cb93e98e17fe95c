"""Differential tests: random submit files, our expansion vs HTCondor's own bindings.

`htcondor.Submit(text).jobs()` (htcondor 24.0.24, a test-only dependency) is the
reference. The bindings keep only the first queue statement, so each file has one.

* `test_same_jobs_as_htcondor`: macros (nested, defaulted, per-job), both
  argument and environment syntaxes with their quoting, units, every queue form.
* `test_every_key_as_htcondor`: files as people write them (queue variables
  named like commands, quoted and empty file lists, empty expansions of every
  typed command, synonyms, attribute-name spellings, $INT/$REAL of macros whose
  bodies use per-job macros), compared on EVERY key of the `--dry-run` object
  the job ads express. Where the ads say it differently, `reference_keys`
  states the mapping.
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jrs.condor import SubmitError, expand_lines, expand_text

from .conftest import SHARED

os.environ.setdefault("CONDOR_CONFIG", "/dev/null")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import classad  # installed with htcondor
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


# ------------------------------------------------------------------ every key

ENVIRON = {"CONDOR_CONFIG": "/dev/null", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent",
           "JRS_DIFF_A": "1", "JRS_DIFF_B": "two words", "OTHER": "x",
           # set at C level by a library of the test process: pinned so both sides agree
           "COLUMNS": "80", "LINES": "24"}
EMPTY = ["$(EMPTY)", "$(NOT_DEFINED_ANYWHERE)"]
SIZES = ["1G", "300", "2 GB", "1500M", "0.5g", "3000KB", "undefined"]
# command -> values worth trying (synonyms, booleans as HTCondor reads them, quoted forms)
VALUES = {
    "should_transfer_files": ["YES", "yes", "TRUE", "Always", "NO", "false", "never",
                              "IF_NEEDED", "auto", "bogus", "1"],
    "when_to_transfer_output": ["ON_EXIT", "onexit", "ON_EXIT_OR_EVICT", "always",
                                "ON_SUCCESS", "onsuccess", "NONE", "NEVER", "bogus"],
    "transfer_executable": ["false", "False", "f", "no", "0", "true", "TRUE", "yes", "bogus"],
    "getenv": ["true", "false", "1", "0", "2", "TRUE", "yes", "JRS_DIFF_A",
               "JRS_DIFF_A, OTHER"],
    "transfer_output_files": ['""', '"a.dat, b.dat"', 'a.dat, "b.dat"', "a.dat,,b.dat",
                              "out.txt", '"out.txt"', '" "'],
    "transfer_input_files": ['""', '"in.dat"', "in.dat, d1", '" "', "in.dat,,"],
    "request_memory": SIZES, "request_disk": SIZES,
    "request_cpus": ["1", "2", "2*2", "undefined"], "request_gpus": ["0", "1", "undefined"],
    "max_retries": ["0", "3", "1+1"], "success_exit_code": ["0", "3"],
    "priority": ["0", "5", "-3", "2*5"], "max_idle": ["10", "2*3"],
    "universe": ["vanilla", "VANILLA", "5"],
    "on_exit_remove": ["ExitCode == 3", "ExitCode =!= 2 || NumJobCompletions > 4"],
    "requirements": ["Cpus > 1", "(Cpus >= 2) || Fast"],
    "initialdir": ["d1", "d2"],
}
# HTCondor's other spellings (command alternates and job attribute names)
SPELLINGS = {
    "executable": ["executable", "Cmd"], "arguments": ["arguments", "Args"],
    "environment": ["environment", "Env"], "getenv": ["getenv", "get_env"],
    "initialdir": ["initialdir", "Iwd", "initial_dir", "job_iwd"],
    "input": ["input", "stdin"], "output": ["output", "stdout"], "error": ["error", "stderr"],
    "log": ["log", "UserLog"], "request_cpus": ["request_cpus", "RequestCpus"],
    "request_memory": ["request_memory", "RequestMemory"],
    "request_disk": ["request_disk", "RequestDisk"], "request_gpus": ["request_gpus",
                                                                      "RequestGpus"],
    "max_retries": ["max_retries", "JobMaxRetries"],
    "success_exit_code": ["success_exit_code", "JobSuccessExitCode"],
    "on_exit_remove": ["on_exit_remove", "OnExitRemove"],
    "should_transfer_files": ["should_transfer_files", "ShouldTransferFiles"],
    "when_to_transfer_output": ["when_to_transfer_output", "WhenToTransferOutput"],
    "transfer_executable": ["transfer_executable", "TransferExecutable"],
    "transfer_input_files": ["transfer_input_files", "TransferInputFiles"],
    "transfer_output_files": ["transfer_output_files", "TransferOutputFiles"],
    "priority": ["priority", "JobPrio", "prio"],
    "max_idle": ["max_idle", "JobMaterializeMaxIdle"],
    "universe": ["universe", "JobUniverse"], "requirements": ["requirements"],
}
# queue variables named like commands, with items that suit them
QUEUE_VARS = {
    "arguments": ["a b", "c", "'q r'"], "Args": ["x y", "z"], "input": ["in1.txt", "in2.txt"],
    "output": ["o1.txt", "o2.txt"], "error": ["e1", "e2"], "initialdir": ["d1", "d2"],
    "request_memory": ["1G", "300", "2GB"], "request_cpus": ["1", "4"],
    "transfer_output_files": ["r1.dat", "r2.dat"], "item": ["p", "q"], "log": ["l1", "l2"],
}


@st.composite
def realistic_file(draw) -> str:
    lines = [f"{draw(st.sampled_from(SPELLINGS['executable']))} = /bin/echo"]
    if draw(st.booleans()):  # a second spelling: which one wins is part of the language
        lines.append(f"{draw(st.sampled_from(SPELLINGS['executable']))} = /bin/true")
    lines.append("base = 100")
    if draw(st.booleans()):
        lines += ["seed = $(base) + $(Process) * 7", "half = $(Process) / 2.0",
                  "arguments = --seed $INT(seed) --half $REAL(half) $INT(seed,%05d) "
                  "$REAL(half,%.2f)"]
    for command in draw(st.lists(st.sampled_from(sorted(VALUES)), max_size=7, unique=True)):
        spelling = draw(st.sampled_from(SPELLINGS.get(command, [command])))
        value = draw(st.sampled_from(VALUES[command] + EMPTY))
        lines.append(f"{spelling} = {value}")
        if draw(st.integers(0, 5)) == 0:  # the same command twice, other spelling
            other = draw(st.sampled_from(SPELLINGS.get(command, [command])))
            lines.append(f"{other} = {draw(st.sampled_from(VALUES[command] + EMPTY))}")
    for command in draw(st.lists(st.sampled_from(["input", "output", "error", "log"]),
                                 max_size=3, unique=True)):
        spelling = draw(st.sampled_from(SPELLINGS[command]))
        lines.append(f"{spelling} = {draw(st.sampled_from(['f_$(Process).txt', 'plain.txt']))}")
    if draw(st.booleans()):
        project = draw(st.sampled_from(['"cms"', "42", "$(Process)"]))
        lines.append(f"+Project = {project}")
    count = draw(st.integers(1, 2))
    variables = draw(st.lists(st.sampled_from(sorted(QUEUE_VARS)), max_size=2, unique=True))
    for var in variables:  # an earlier line the queue variable must override
        if draw(st.booleans()) and var != "item":
            lines.append(f"{var} = {QUEUE_VARS[var][0]}_earlier")
    if not variables:
        lines.append(f"queue {count}")
    elif len(variables) == 1:
        items = draw(st.lists(st.sampled_from(QUEUE_VARS[variables[0]]), min_size=1,
                              max_size=3))
        if " " in "".join(items) or draw(st.booleans()):
            lines += [f"queue {count} {variables[0]} from (", *items, ")"]
        else:
            lines.append(f"queue {count} {variables[0]} in ({', '.join(items)})")
    else:
        rows = [f"{draw(st.sampled_from(QUEUE_VARS[variables[0]])).split()[0]}, "
                f"{draw(st.sampled_from(QUEUE_VARS[variables[1]]))}"
                for _ in range(draw(st.integers(1, 3)))]
        lines += [f"queue {', '.join(variables)} from (", *rows, ")"]
    return "\n".join(lines) + "\n"


def _env_of(ad) -> dict:
    if "Environment" in ad:
        return oracle.parse_env_v2_raw(ad["Environment"])
    if "Env" in ad:
        return oracle.parse_env_v1_raw(ad["Env"], ad.get("EnvDelim", ";"))
    return {}


def _files(value) -> list:
    return [p.strip() for p in value.split(",") if p.strip()]


def reference_keys(ad) -> dict:
    """A job ad as the --dry-run keys, with the mappings where the ad differs:

    * environment/getenv/getenv_match: the ad has one Environment with the
      imported variables folded in (compared as a whole, see `ours_keys`);
    * request_memory/request_disk unset: the ad holds a default expression
      (ImageSize/DiskUsage based) or nothing; request_cpus/request_gpus and
      max_idle may be expressions: compared by value;
    * transfer_input_files unset is no TransferInput; transfer_output_files
      unset is no TransferOutput, `""` an empty TransferOutput;
    * when_to_transfer_output: absent when should_transfer_files is NO;
    * transfer_executable: absent means true;
    * requirements: the ad's Requirements is `(ours) && <HTCondor's defaults>`;
      on_exit_remove: the ad's OnExitRemove ends with ours (retries prepend
      HTCondor's NumJobCompletions clause);
    * attributes: `+Attr = value` is the ad's Attr (empty: undefined);
    * max_materialize: not expressed by the bindings' job ads (not compared).
    """
    iwd = ad["Iwd"]

    def path(attr):
        value = ad.get(attr)
        if value in (None, "", "/dev/null"):
            return None
        return os.path.normpath(os.path.join(iwd, value))

    def evaluated(attr, default=None, unset_marker=None):
        if attr not in ad:
            return default
        if unset_marker and unset_marker in str(ad.lookup(attr)):
            return default
        return ad.eval(attr)

    if "Arguments" in ad:
        argv = oracle.split_v2_raw(ad["Arguments"])
    else:
        argv = oracle.split_v1_raw(ad["Args"]) if "Args" in ad else []
    return {
        "cluster": ad["ClusterId"], "process": ad["ProcId"],
        "executable": os.path.normpath(ad["Cmd"]), "arguments": argv,
        "environment": _env_of(ad), "iwd": os.path.normpath(iwd),
        "input": path("In"), "output": path("Out"), "error": path("Err"), "log": path("UserLog"),
        "request_cpus": evaluated("RequestCpus", 1),
        "request_memory": evaluated("RequestMemory", None, "ImageSize"),
        "request_disk": evaluated("RequestDisk", None, "DiskUsage"),
        "transfer_input_files": _files(ad["TransferInput"]) if "TransferInput" in ad else [],
        "transfer_output_files": _files(ad["TransferOutput"]) if "TransferOutput" in ad
        else None,
        "max_retries": ad.get("JobMaxRetries"), "request_gpus": evaluated("RequestGPUs", 0),
        "requirements": str(ad.lookup("Requirements")),
        "success_exit_code": ad.get("JobSuccessExitCode"),
        "on_exit_remove": str(ad.lookup("OnExitRemove")) if "OnExitRemove" in ad else None,
        "should_transfer_files": ad["ShouldTransferFiles"],
        "when_to_transfer_output": ad.get("WhenToTransferOutput"),
        "transfer_executable": ad.get("TransferExecutable", True),
        "priority": ad["JobPrio"], "max_idle": evaluated("JobMaterializeMaxIdle"),
        "attributes": ad,
    }


def _unparse(expr: str) -> str:
    return str(classad.ExprTree(expr))


def ours_keys(job, environ: dict) -> dict:
    """Our --dry-run object, put in the terms of `reference_keys`."""
    out = job.to_json()
    imported = {}
    if out["getenv"]:
        imported = dict(environ)
    elif out["getenv_match"]:
        imported = {k: v for k, v in environ.items() if k in out["getenv_match"]}
    out["environment"] = {**imported, **out["environment"]}
    return out


def same_keys(ref: dict, ours: dict) -> list:
    """The keys where ours and the reference differ (every key is looked at)."""
    bad = []
    for key, want in ref.items():
        got = ours[key]
        if key == "requirements":
            ok = (want.startswith(f"({_unparse(got)}) && ") if got is not None
                  else want.startswith("(TARGET.Arch"))
        elif key == "on_exit_remove":
            if got is None:
                ok = want is None or re.fullmatch(
                    r"NumJobCompletions > JobMaxRetries \|\| ExitCode is "
                    r"(\d+|JobSuccessExitCode)", want) is not None
            else:
                tail = _unparse(got)
                ok = want is not None and (want == tail or want.endswith(f" || {tail}")
                                           or want.endswith(f" || ({tail})"))
        elif key == "attributes":
            ok = all(str(want.lookup(name)) == _unparse(value or "undefined")
                     for name, value in (got or {}).items())
        else:
            ok = type(want) is type(got) and want == got
        if not ok:
            bad.append((key, want if key != "attributes" else "...", got))
    for key in ours:
        if key not in ref and key not in ("getenv", "getenv_match", "max_materialize"):
            bad.append((key, "not compared", ours[key]))
    return bad


@settings(max_examples=int(os.environ.get("JRS_DIFF_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=realistic_file())
def test_every_key_as_htcondor(text, tmp_path_factory, monkeypatch):
    directory = tmp_path_factory.mktemp("keys")
    for sub in ("d1", "d2"):
        (directory / sub).mkdir()
    cwd = os.getcwd()
    os.chdir(directory)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(ENVIRON)
    try:
        try:
            ads = list(htcondor.Submit(text).jobs(clusterid=1))
        except (htcondor.HTCondorException, RuntimeError, ValueError):
            with pytest.raises(SubmitError):
                list(expand_text(text, str(directory), environ=ENVIRON))
            return
        jobs = list(expand_text(text, str(directory), environ=ENVIRON))
        assert len(jobs) == len(ads), text
        for ad, job in zip(ads, jobs):
            bad = same_keys(reference_keys(ad), ours_keys(job, ENVIRON))
            assert not bad, f"{text}\n{bad}"
            # the --dry-run line is exactly the JSON of the object compared
            assert job.to_json_line() == json.dumps(job.to_json(), ensure_ascii=False)
        (directory / "job.sub").write_text(text)
        lines = list(expand_lines(str(directory / "job.sub"), environ=ENVIRON))
        assert lines == [json.dumps(job.to_json(), ensure_ascii=False) for job in jobs]
    finally:
        os.environ.clear()
        os.environ.update(saved)
        os.chdir(cwd)
