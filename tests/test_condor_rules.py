"""The submit-language rules, each pinned to what HTCondor 24.0's bindings produced."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys

import pytest

from jrs.condor import SubmitError, expand_file, expand_text
from jrs.condor.macros import path_parts
from jrs.condor.queue import parse_queue
from jrs.condor.quoting import parse_arguments, parse_environment


def jobs(tmp_path, text, environ=None):
    return list(expand_text(text, str(tmp_path), environ=environ or {}))


def args_of(tmp_path, value_lines: str) -> list:
    return [j.arguments for j in jobs(tmp_path, "executable = /bin/echo\n" + value_lines)]


# Observed from htcondor.Submit(...) 24.0.24 on the same inputs.
@pytest.mark.parametrize("flags, value, expected", [
    ("p", "/x/y/z/file.tar.gz", "/x/y/z/"), ("d", "/x/y/z/file.tar.gz", "z/"),
    ("dd", "/x/y/z/file.tar.gz", "y/z/"), ("n", "/x/y/z/file.tar.gz", "file.tar"),
    ("x", "/x/y/z/file.tar.gz", ".gz"), ("q", "/x/y/z/file.tar.gz", '"/x/y/z/file.tar.gz"'),
    ("nx", "/x/y/z/file.tar.gz", "file.tar.gz"), ("pn", "/x/y/z/file.tar.gz", "/x/y/z/file.tar"),
    ("b", "x/y/z/f.t", "x/y/z/f.t"), ("w", "x/y/z/f.t", "x\\y\\z\\f.t"),
    ("pb", "x/y/z/f.t", "x/y/z"), ("db", "x/y/z/f.t", "z"), ("ddb", "x/y/z/f.t", "y/z"),
    ("nb", "x/y/z/f.t", "f"), ("xb", "x/y/z/f.t", "t"), ("fb", "x/y/z/f.t", "/w/x/y/z/f.t"),
    ("dn", "x/y/z/f.t", "z/f"), ("dx", "x/y/z/f.t", "z/f.t"), ("px", "x/y/z/f.t", "x/y/z/f.t"),
    ("dnx", "x/y/z/f.t", "z/f.t"), ("pd", "x/y/z/f.t", "z/"), ("qn", "x/y/z/f.t", '"f"'),
    ("ddd", "x/y/z/f.t", "x/y/z/"), ("fp", "x/y/z/f.t", "/w/x/y/z/"), ("fn", "x/y/z/f.t", "f"),
    ("f", "../q/./r.s", "/w/../q/./r.s"), ("p", "/top", "/"), ("d", "/top", "/"),
    ("n", "/top", "top"), ("x", "/top", ""), ("pb", "/top", ""), ("db", "/top", ""),
    ("p", "file", ""), ("d", "file", ""), ("b", "dir/sub/", "dir/sub/"), ("d", "dir/sub/", "sub/"),
    ("db", "dir/sub/", "sub"), ("q", '"x/y.z"', '"x/y.z"'), ("n", '"x/y.z"', "y"),
    ("qd", "x/y/z/f.t", '"z/"'), ("qx", "x/y/z/f.t", '".t"'),
])
def test_path_functions(flags, value, expected):
    assert path_parts(value, flags, "/w") == expected


def test_macro_rules(tmp_path):
    text = ("E =\nS = abcdefgh\nV = vv\nA.B = dot\n"
            "arguments = [$(U:dflt)] [$(E:dflt)] [$(U)] $SUBSTR(S,2) $SUBSTR(S,-3) "
            "$SUBSTR(S,1,2) $SUBSTR(S,1,-2) [$SUBSTR(S,10)] [$(U:a-b)] [$(U:$(V))] "
            "[$(A.B)] [$(a-b)] [$$(X)] [$(DOLLAR)] [$ENV(NOPE)] [$ENV(NOPE:dd)] [$ENV(HOME)]\n"
            "queue\n")
    assert args_of(tmp_path, text) == [[
        "[dflt]", "[dflt]", "[]", "cdefgh", "fgh", "bc", "bcdef", "[]", "[$(U:a-b)]", "[vv]",
        "[dot]", "[$(a-b)]", "[$$(X)]", "[$]", "[UNDEFINED]", "[dd]", "[UNDEFINED]"]]


def test_int_real_choice(tmp_path):
    text = ("L = p q, r s,t\nX = 7\narguments = $INT(X,%05d) $INT(2+3*4) $INT(-7/2) "
            "$REAL(X,%.2f) $CHOICE(1, a, b ,c) $CHOICE(Step, L)\nqueue 3\n")
    got = args_of(tmp_path, text)
    assert [a[:4] for a in got] == [["00007", "14", "-3", "7.00"]] * 3
    assert [a[4:] for a in got] == [["b", "p", "q"], ["b", "r", "s"], ["b", "t"]]


@pytest.mark.parametrize("text, message", [
    ("arguments = $INT(nope)\nqueue\n", "does not evaluate to an integer"),
    ("arguments = $CHOICE(5, a, b)\nqueue\n", "out of range"),
    ("arguments = $INT(1,%s)\nqueue\n", "not a valid format"),
    ("arguments = a \"b c\"\nqueue\n", "illegal unescaped double-quote"),
    ("arguments = \"a b\nqueue\n", "Unterminated double-quote"),
    ("arguments = \"a 'b c\"\nqueue\n", "Unbalanced quote"),
    ("arguments = \"a\" b\nqueue\n", "Unexpected characters following double-quote"),
    ("environment = A\nqueue\n", "Missing '=' after environment variable 'A'"),
    ("environment = \"=x\"\nqueue\n", "missing variable in '=x'"),
    ("request_memory = 4 GiB\nqueue\n", "Parse error in expression"),
    ("max_retries = abc\nqueue\n", "max_retries=abc is invalid"),
    ("universe = docker\nqueue\n", "universe docker is not supported"),
    ("initialdir = nope\nqueue\n", "No such directory"),
    ("queue five\n", "Invalid Queue count expression"),
    ("queue -3\n", "Queue count out of range"),
    ("if true\nqueue\n", "`if` without `endif`"),
    ("if 1 > 0\nqueue\nendif\n", "complex conditionals are not supported"),
    ("if on\nqueue\nendif\n", "complex conditionals are not supported"),
    ("if version > 8\nqueue\nendif\n", "bad version test"),
    ("endif\n", "`endif` without `if`"),
    ("this is not a command\n", "expected `name = value`"),
    ("A = $(B)\nB = $(A)\narguments = $(A)\nqueue\n", "does not end"),
])
def test_rejections(tmp_path, text, message):
    with pytest.raises(SubmitError) as info:
        jobs(tmp_path, "executable = /bin/echo\n" + text)
    assert message in str(info.value)
    assert str(info.value).startswith(f"{tmp_path}/<submit>:")


def test_error_line_is_the_queue_statement_or_the_bad_line(tmp_path):
    with pytest.raises(SubmitError) as info:
        jobs(tmp_path, "executable = /bin/echo\n\narguments = \"x\ny = 1\nqueue\n")
    assert str(info.value).startswith(f"{tmp_path}/<submit>:5: ")
    with pytest.raises(SubmitError) as info:
        jobs(tmp_path, "executable = /bin/echo\nqueue 1\nfoo bar\n")
    assert str(info.value).startswith(f"{tmp_path}/<submit>:3: ")


def test_missing_executable(tmp_path):
    with pytest.raises(SubmitError, match="No 'executable'"):
        jobs(tmp_path, "arguments = x\nqueue\n")


def test_quoting_tables():
    assert parse_arguments("--title \\\"Energy spectrum\\\" it's") == [
        "--title", '"Energy', 'spectrum"', "it's"]
    assert parse_arguments("a\\\\b \\\\\"x\\\\\"") == ["a\\\\b", '\\"x\\"']
    assert parse_arguments("\"one 'two three' \"\"q\"\" '' 'it''s'\"") == [
        "one", "two three", '"q"', "", "it's"]
    assert parse_arguments('"  "') == []
    assert parse_environment("A=1 ;; B = 2;C=x=y") == {"A": "1 ", "B ": " 2", "C": "x=y"}
    assert parse_environment("\"A=1 B='x y' A=3\"") == {"A": "3", "B": "x y"}


def test_units(tmp_path):
    def mem_disk(m, d):
        (j,) = jobs(tmp_path, f"executable=/bin/true\nrequest_memory={m}\nrequest_disk={d}\n"
                              "queue\n")
        return j.request_memory, j.request_disk
    assert mem_disk("1.5G", "0.5") == (1536, 1)
    assert mem_disk("1024K", "3 mb") == (1, 3072)
    assert mem_disk("3000KB", "2T") == (3, 2 * 1024 ** 3)
    assert mem_disk("2*1024", "7") == (2048, 7)


def test_getenv_forms(tmp_path):
    def getenv(value):
        (j,) = jobs(tmp_path, f"executable=/bin/true\ngetenv = {value}\nqueue\n")
        return j.getenv, j.getenv_match
    assert getenv("True") == (True, None)
    assert getenv("1") == (True, None)
    assert getenv("false") == (False, None)
    assert getenv("yes") == (False, ["yes"])  # HTCondor 24: a list of names
    assert getenv("HOME, PA*") == (False, ["HOME", "PA*"])


def test_queue_forms(tmp_path):
    (tmp_path / "d1").mkdir()
    (tmp_path / "f1.txt").write_text("")
    (tmp_path / "f2.txt").write_text("")
    (tmp_path / "rows.dat").write_text("1 2 3 4 5\n\na,b\n# a comment\nx, y,  z ,q\n")
    base = "executable = /bin/echo\narguments = $(Item)|$(v)|$(w)|$(z)|$(Row)|$(Step)\n"
    got = [" ".join(j.arguments) for j in jobs(tmp_path, base + "queue v,w,z from rows.dat\n")]
    assert got == ["|1|2|3 4 5|0|0", "|a|b||1|0", "|x|y|z ,q|2|0"]
    got = [j.arguments[0] for j in jobs(tmp_path, base + "queue 2 v in a b, c  d\n")]
    assert len(got) == 8 and got[2] == "|b|||1|0"
    got = [j.arguments[0] for j in jobs(tmp_path, base + "queue matching *.txt d*\n")]
    assert got == ["f1.txt||||0|0", "f2.txt||||1|0", "d1/||||2|0"]
    got = [j.arguments[0] for j in jobs(tmp_path, base + "queue matching files *.txt d*\n")]
    assert got == ["f1.txt||||0|0", "f2.txt||||1|0"]
    got = [j.arguments[0] for j in jobs(tmp_path, base + "queue in [::2] (a, b, c, d, e)\n")]
    assert got == ["a||||0|0", "c||||2|0", "e||||4|0"]
    got = [j.arguments[0] for j in jobs(tmp_path, base + "queue in [-2:] (a, b, c)\n")]
    assert got == ["b||||1|0", "c||||2|0"]
    assert len(jobs(tmp_path, base + "N = 3\nqueue $(N)*2\n")) == 6
    assert jobs(tmp_path, base + "queue 0\n") == []


def test_parse_queue_head():
    spec = parse_queue("3 lr, seed in (1, 2)")
    assert (spec.count, spec.variables, spec.mode) == (3, ["lr", "seed"], "in")
    assert parse_queue("").count == 1 and parse_queue("").mode is None


def test_process_numbers_run_on_and_macros_change_between_queues(tmp_path):
    text = ("executable = /bin/echo\nE = 7TeV\narguments = $(E) $(Process) $(Step)\nqueue 2\n"
            "E = 13TeV\nqueue c in (x)\n")
    assert [j.arguments for j in jobs(tmp_path, text)] == [
        ["7TeV", "0", "0"], ["7TeV", "1", "1"], ["13TeV", "2", "0"]]


def test_if_elif_else_nested(tmp_path):
    text = ("executable = /bin/echo\nA = 1\n"
            "if defined B\n arguments = b\nelif defined A\n"
            "  if $(A)\n   arguments = a-positive\n  else\n   arguments = a-zero\n  endif\n"
            "else\n arguments = none\nendif\n"
            "if version >= 8.9\n output = new\nendif\nif ! defined A\n output = nope\nendif\n"
            "queue\n")
    (j,) = jobs(tmp_path, text)
    assert (j.arguments, j.output) == (["a-positive"], "new")


def test_include_nested_relative(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.sub").write_text("include : b.sub\nrequest_cpus = 3\n")
    (tmp_path / "sub" / "b.sub").write_text("arguments = from-b\n")
    (tmp_path / "job.sub").write_text("executable = /bin/echo\ninclude : sub/a.sub\n"
                                      "include ifexist : missing.sub\n"
                                      "include command : echo output = cmd.out\nqueue\n")
    (j,) = list(expand_file(str(tmp_path / "job.sub")))
    assert (j.arguments, j.request_cpus, j.output) == (["from-b"], 3, "cmd.out")


def test_self_reference_and_custom_attributes(tmp_path):
    (j,) = jobs(tmp_path, "executable = /bin/echo\nA = x\nA = $(A) y\narguments = $(A)\n"
                          "+ProjectName = \"CMS\"\nMY.Flag = true\nqueue\n")
    assert j.arguments == ["x", "y"]
    assert j.attributes == {"projectname": '"CMS"', "flag": "true"}


def test_environment_from_env_macro(tmp_path):
    (j,) = jobs(tmp_path, "executable = /bin/echo\narguments = $ENV(WHO)\nqueue\n",
                environ={"WHO": "me"})
    assert j.arguments == ["me"]


def test_streaming_does_not_build_the_cluster_first(tmp_path):
    stream = expand_text("executable = /bin/true\narguments = $(Process)\nqueue 100000000\n",
                         str(tmp_path))
    first = list(itertools.islice(stream, 3))
    assert [j.arguments for j in first] == [["0"], ["1"], ["2"]]


def test_dry_run_prints_nothing_when_a_late_job_fails(pyz, tmp_path):
    (tmp_path / "job.sub").write_text(
        "executable = /bin/echo\narguments = $CHOICE(Process, a, b)\nqueue 3\n")
    r = subprocess.run([sys.executable, str(pyz), "submit", "--dry-run",
                        str(tmp_path / "job.sub")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(f"jrs submit: {tmp_path / 'job.sub'}:3: ")


def test_dry_run_has_the_contract_keys(pyz, tmp_path):
    (tmp_path / "job.sub").write_text("executable = run.sh\nqueue 2\n")
    r = subprocess.run([sys.executable, str(pyz), "submit", "--dry-run",
                        str(tmp_path / "job.sub")], capture_output=True, text=True)
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [j["process"] for j in lines] == [0, 1]
    assert lines[0]["executable"] == str(tmp_path / "run.sh")
    for key in ("cluster", "arguments", "environment", "getenv", "iwd", "input", "output",
                "error", "log", "request_cpus", "request_memory", "request_disk",
                "transfer_input_files", "transfer_output_files", "max_retries"):
        assert key in lines[0]


# ---------------------------------------------------------------- issue 14


def test_unsupported_commands_warn_once_at_their_first_line(tmp_path):
    notes: list = []
    text = ("executable = /bin/echo\nnotification = never\nnotify_user = me@x\n"
            "+JobFlavour = \"tomorrow\"\nperiodic_remove = JobStatus == 5\n"
            "if false\n rank = Memory\nendif\n+SingularityImage = \"/img.sif\"\n"
            "Periodic_Remove = false\nstream_output = true\nqueue 2\n"
            "transfer_output_remaps = \"a=b\"\nqueue\n")
    jobs_ = list(expand_text(text, str(tmp_path), environ={}, warn=notes.append))
    where = f"{tmp_path}/<submit>"
    assert notes == [
        f"{where}:5: warning: periodic_remove is not supported; it is never evaluated",
        f"{where}:9: warning: +SingularityImage is not supported; the job runs directly on "
        "the node, in no container",
        f"{where}:11: warning: stream_output is not supported; stdout arrives when the job "
        "ends",
        f"{where}:13: warning: transfer_output_remaps is not supported; outputs land under "
        "their own names in iwd"]
    # silent commands stay; +Attr ones are kept as attributes
    assert jobs_[0].attributes == {"jobflavour": '"tomorrow"', "singularityimage": '"/img.sif"'}


def test_dry_run_keeps_warnings_out_of_the_json_stream(pyz, tmp_path):
    sub = tmp_path / "job.sub"
    sub.write_text("executable = /bin/echo\nhold = true\nrequire_gpus = Capability > 7\n"
                   "queue 2\n")
    r = subprocess.run([sys.executable, str(pyz), "submit", "--dry-run", str(sub)],
                       capture_output=True, text=True)
    assert r.returncode == 0
    assert [json.loads(line)["process"] for line in r.stdout.splitlines()] == [0, 1]
    assert r.stderr.splitlines() == [
        f"{sub}:2: warning: hold is not supported; jobs are never submitted on hold",
        f"{sub}:3: warning: require_gpus is not supported; any node with enough GPUs is used"]
    # a bad file shows its one-line error only
    sub.write_text("executable = /bin/echo\nhold = true\nrequest_memory = 4 GiB\nqueue\n")
    r = subprocess.run([sys.executable, str(pyz), "submit", "--dry-run", str(sub)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and "Parse error" in r.stderr


def test_a_run_names_unsupported_commands(pyz, tmp_path):
    (tmp_path / "t.sub").write_text("executable = /bin/echo\narguments = hi\noutput = o\n"
                                    "allowed_job_duration = 60\nqueue\n")
    r = subprocess.run([sys.executable, str(pyz), "submit", "--local", "--no-progress",
                        "t.sub"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "t.sub:4: warning: allowed_job_duration is not supported; jobs run without a " \
           "time limit\n" in r.stderr
    assert (tmp_path / "o").read_text() == "hi\n"


def test_predefined_macros_by_shape(tmp_path):
    import time

    now = time.mktime((2026, 3, 4, 12, 0, 0, 0, 0, -1))
    (j,) = list(expand_text(
        "executable = /bin/echo\narguments = $(SUBMIT_TIME) $(Year) $(Month) $(Day) $(ARCH) "
        "$(OPSYS) $(OPSYSANDVER) $(OPSYSMAJORVER) $(OPSYSVER) $(IsLinux) $(IsWindows) "
        "$(SUBMIT_FILE) [$(Node)] $(JobId)\nqueue\n", str(tmp_path), environ={}, now=now))
    stamp, year, month, day, arch, opsys, andver, major, ver, linux, windows, name, node, \
        jobid = j.arguments
    assert (stamp, year, month, day) == (str(int(now)), "2026", "03", "04")
    assert arch == {"x86_64": "X86_64", "aarch64": "aarch64"}.get(os.uname().machine, arch)
    assert (opsys, linux, windows) == ("LINUX", "1", "0")
    assert andver.endswith(major) and major.isdigit() and ver.isdigit()
    assert int(ver) // 100 == int(major)
    assert (name, node, jobid) == (f"{tmp_path}/<submit>", "[]", "1.0")
    # a file's own definition wins; `defined` sees the predefined ones
    (j,) = jobs(tmp_path, "executable = /bin/echo\nARCH = mine\nif defined OPSYS\n"
                          "arguments = $(ARCH) $(Process)\nendif\nqueue\n")
    assert j.arguments == ["mine", "0"]


def test_host_description_from_issue_files():
    from jrs.condor.predefined import machine

    assert machine("Linux", "x86_64", ["Ubuntu 22.04.3 LTS \\n \\l\n"]) == {
        "arch": "X86_64", "opsys": "LINUX", "opsysver": "2204", "opsysandver": "Ubuntu22",
        "opsysmajorver": "22", "islinux": "1", "iswindows": "0"}
    assert machine("Linux", "aarch64", ["\\S\n", "Rocky Linux release 9.3 (Blue Onyx)\n"])[
        "opsysandver"] == "Rocky9"
    assert machine("Linux", "i686", [])["arch"] == "INTEL"
    assert machine("Linux", "x86_64", [])["opsysandver"] == "Unknown0"


def test_queue_variables_named_like_commands(tmp_path):
    (tmp_path / "a").mkdir()
    got = jobs(tmp_path, "executable = /bin/echo\narguments = ignored\ninput = in.txt\n"
                         "queue initialdir, arguments from (\n  a, -x 1\n  . -y 2\n)\n")
    assert [(j.arguments, j.iwd) for j in got] == [(["-x", "1"], str(tmp_path / "a")),
                                                   (["-y", "2"], str(tmp_path))]
    # HTCondor looks the command up first: a queue variable with an alternate
    # name does not override a command that is set
    got = jobs(tmp_path, "executable = /bin/echo\ninput = zz\nqueue stdin in (a, b)\n")
    assert [j.input for j in got] == ["zz", "zz"]
    got = jobs(tmp_path, "executable = /bin/echo\nqueue request_memory in (1G, 300)\n")
    assert [j.request_memory for j in got] == [1024, 300]


def test_empty_expansions_are_unset(tmp_path):
    typed = ["request_memory", "request_disk", "request_cpus", "request_gpus", "max_retries",
             "priority", "should_transfer_files", "when_to_transfer_output",
             "transfer_executable", "universe", "transfer_output_files", "max_idle",
             "success_exit_code", "getenv", "initialdir"]
    text = "executable = /bin/echo\n" + "".join(f"{c} = $(EMPTY)\n" for c in typed) + "queue\n"
    (j,) = jobs(tmp_path, text)
    assert (j.request_memory, j.request_disk, j.request_cpus, j.request_gpus) == (
        None, None, 1, 0)
    assert (j.max_retries, j.priority, j.should_transfer_files, j.when_to_transfer_output,
            j.transfer_executable, j.universe, j.transfer_output_files) == (
        None, 0, "IF_NEEDED", "ON_EXIT", True, "vanilla", None)


def test_transfer_settings_as_htcondor_settles_them(tmp_path):
    def mode(lines):
        (j,) = jobs(tmp_path, "executable = /bin/echo\n" + lines + "queue\n")
        return j.should_transfer_files, j.when_to_transfer_output, j.transfer_executable
    assert mode("") == ("IF_NEEDED", "ON_EXIT", True)
    assert mode("ShouldTransferFiles = always\n") == ("YES", "ON_EXIT", True)
    assert mode("should_transfer_files = never\n") == ("NO", None, True)
    assert mode("should_transfer_files = NO\nwhen_to_transfer_output = none\n") == (
        "NO", None, True)
    assert mode("when_to_transfer_output = always\n") == ("YES", "ON_EXIT_OR_EVICT", True)
    assert mode("WhenToTransferOutput = onsuccess\n") == ("IF_NEEDED", "ON_SUCCESS", True)
    assert mode("transfer_executable = no\n")[2] is True  # only f... means false
    assert mode("TransferExecutable = False\n")[2] is False
    for bad, message in [
            ("should_transfer_files = y\n", "invalid value (y) for ShouldTransferFiles"),
            ("should_transfer_files = NO\ntransfer_output_files = \"\"\n",
             "but you disabled should_transfer_files"),
            ("should_transfer_files = NO\nwhen_to_transfer_output = ON_EXIT\n",
             "contradiction"),
            ("when_to_transfer_output = NONE\n", "contradiction"),
            ("should_transfer_files = IF_NEEDED\nwhen_to_transfer_output = ALWAYS\n",
             "are incompatible"),
            ("should_transfer_files = NO\ntransfer_executable = yes\n",
             "must eval to a boolean")]:
        with pytest.raises(SubmitError, match=re.escape(message)):
            mode(bad)


def test_quoted_file_lists(tmp_path):
    def lists(value):
        (j,) = jobs(tmp_path, f"executable = /bin/echo\ntransfer_input_files = {value}\n"
                              f"transfer_output_files = {value}\nqueue\n")
        return j.transfer_input_files, j.transfer_output_files
    assert lists('""') == ([], [])
    assert lists('"a, b"') == (['"a', 'b"'], ['"a', 'b"'])
    assert lists("$(NOTHING)") == ([], None)


def test_int_and_real_of_per_job_bodies(tmp_path):
    got = args_of(tmp_path, "base = 100\nseed = $(base) + $(Process) * 7\nhalf = $(Step) / 2.0\n"
                            "arguments = $INT(seed) $REAL(half) $INT(seed,%05d)\nqueue 3\n")
    assert got == [["100", "0", "00100"], ["107", "0.5", "00107"], ["114", "1", "00114"]]


def test_dry_run_line_is_the_json_object(tmp_path):
    (j,) = jobs(tmp_path, "executable = /bin/echo\narguments = \"'é x' \"\"q\"\"\"\n"
                          "environment = \"A=1 B='x y'\"\n+Tag = \"t\\u00e9\"\nqueue\n")
    assert j.to_json_line() == json.dumps(j.to_json(), ensure_ascii=False)


def test_submit_help_explains_the_language_and_the_warnings(pyz):
    r = subprocess.run([sys.executable, str(pyz), "submit", "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0
    assert "queue variables named like commands" in r.stdout
    assert "FILE:LINE: warning:" in r.stdout


@pytest.mark.parametrize("condition, taken", [
    ("yes", True), ("T", True), ("f", False), ("nO", False), ("2", True), ("0.0", False),
    ("-1", True), ("1e3", True), ("$(EMPTY)", False), ("! t", False), ("defined", False),
    ("version >= 8.9", True), ("version == 24.0", True)])
def test_if_conditions_as_htcondor_reads_them(tmp_path, condition, taken):
    (j,) = jobs(tmp_path, f"executable = /bin/echo\nif {condition}\narguments = in\nelse\n"
                          "arguments = out\nendif\nqueue\n")
    assert j.arguments == (["in"] if taken else ["out"])
