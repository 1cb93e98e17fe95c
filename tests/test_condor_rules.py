"""The submit-language rules, each pinned to what HTCondor 24.0's bindings produced."""

from __future__ import annotations

import itertools
import json
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
            "  if $(A) > 0\n   arguments = a-positive\n  else\n   arguments = a-zero\n  endif\n"
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
