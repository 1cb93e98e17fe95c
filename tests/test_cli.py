"""The command line: docopt usage, per-command help, exit statuses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jrs import __version__
from jrs.__main__ import COMMAND_HELP, COMMANDS

from .conftest import run_jrs


def test_version(pyz):
    r = run_jrs(pyz, "--version")
    assert (r.returncode, r.stdout) == (0, f"jrs {__version__}\n")


def test_help_lists_every_command(pyz):
    r = run_jrs(pyz, "--help")
    assert r.returncode == 0
    for command in COMMANDS:
        assert f"jrs {command}" in r.stdout


@pytest.mark.parametrize("command", sorted(COMMAND_HELP))
def test_every_command_has_help_with_an_example(pyz, command):
    r = run_jrs(pyz, command, "--help")
    assert r.returncode == 0
    assert "Usage: jrs " + command in r.stdout
    assert "Example" in r.stdout


def test_every_command_has_help_text():
    assert set(COMMAND_HELP) == set(COMMANDS)


@pytest.mark.parametrize("argv", [["bogus"], ["submit"], ["rm"], ["submit", "--local", "-c",
                                                                  "x", "f"]])
def test_usage_errors_exit_2(pyz, argv):
    r = run_jrs(pyz, *argv)
    assert r.returncode == 2
    assert "Usage:" in r.stderr


def test_selftest(pyz):
    r = run_jrs(pyz, "selftest")
    assert r.returncode == 0, r.stderr
    assert "round trip passed" in r.stdout


# one argv per usage line of the text: each parsed with only its command's usage lines
# (what parse_args does) must give what the whole text gives
ONE_PER_USAGE_LINE = [
    ["master", "-c", "d", "--listen=h:1", "--state=s", "-v"],
    ["node", "--slots=2", "--memory=9", "--name=n", "--execute=e", "--job-uids=1-9",
     "--same-user-accounts", "--root-groups=a,b", "--job-pids=5", "--retain=1d", "-v"],
    ["executor", "T"],
    ["submit", "--local", "--dry-run", "--fresh", "--state=s", "F"],
    ["submit", "-c", "d", "--no-progress", "F"],
    ["status", "-c", "d", "--json"], ["q", "--json"], ["rm", "-c", "d", "1", "2.3"],
    ["keygen", "--force"], ["roles", "--name=n", "node"], ["selftest"],
]


@pytest.mark.parametrize("argv", ONE_PER_USAGE_LINE, ids=lambda a: " ".join(a[:2]))
def test_a_commands_own_usage_lines_parse_as_the_whole_text(argv):
    from docopt import docopt

    from jrs.__main__ import __doc__ as whole
    from jrs.__main__ import parse_args, usage_for

    own = parse_args(argv)
    everything = docopt(whole, argv=argv)
    assert own == {k: v for k, v in everything.items() if k in own}
    # what the command was given is all there; keys left out belong to other commands
    assert {k for k, v in everything.items() if v} <= set(own)
    assert [w for w in usage_for(argv[0]).split() if w == "jrs"] != []
    assert all(line.split()[1] == argv[0] for line in usage_for(argv[0]).splitlines()
               if line.strip().startswith("jrs "))


def test_a_usage_error_shows_the_commands_own_usage(pyz):
    r = run_jrs(pyz, "status", "--bogus")
    assert r.returncode == 2
    assert "jrs status" in r.stderr and "jrs master" not in r.stderr


@pytest.mark.parametrize("count", [3, 3000])  # inside a pipe buffer, and far beyond
def test_a_short_command_flushes_all_it_printed_before_its_fast_exit(pyz, tmp_path, count):
    """Short commands leave with os._exit (no interpreter teardown): whatever they
    printed must still arrive whole through a pipe, unbuffered mode off."""
    (tmp_path / "many.condor").write_text("executable = /bin/echo\narguments = $(Process)\n"
                                          f"queue {count}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "JRS_CONFIG")}
    r = subprocess.run([sys.executable, str(pyz), "submit", "--dry-run", "many.condor"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == count and r.stdout.endswith("\n")
    assert f'"{count - 1}"' in lines[-1]


@pytest.mark.parametrize("argv, teardown", [
    (["submit", "--loc", "--dry-run", "missing.condor"], True),  # docopt: --loc is --local
    (["submit", "--local", "--dry-run", "missing.condor"], True),
    (["submit", "-c", "--local", "--dry-run", "missing.condor"], False),  # a dir --local
    (["submit", "--state", "--local", "--dry-run", "missing.condor"], False),
    (["status", "-c", "--local"], False),
])
def test_only_a_parsed_local_submit_keeps_the_interpreters_teardown(pyz, tmp_path, argv,
                                                                    teardown):
    """`submit --local` runs a master and a node inside the process: it must leave
    through the interpreter's exit (which joins their threads); other short commands
    leave with os._exit. The choice follows what docopt parsed, not the string
    "--local" in argv: docopt takes the unique prefix `--loc` as --local, and
    `-c --local` or `--state --local` name a directory. An atexit hook tells which
    way the process left."""
    code = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: print('TEARDOWN', file=sys.stderr, flush=True))\n"
            "sys.argv = sys.argv[1:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    env = {k: v for k, v in os.environ.items() if k != "JRS_CONFIG"}
    r = subprocess.run([sys.executable, "-c", code, str(pyz), *argv], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    # parsed (no usage error), then failed on the missing file or configuration
    assert r.stderr.startswith(f"jrs {argv[0]}: ") and "Usage:" not in r.stderr, r.stderr
    assert ("TEARDOWN" in r.stderr) == teardown, r.stderr


def test_the_readme_lists_the_commands_as_the_usage_text_does():
    from pathlib import Path

    from jrs.__main__ import __doc__ as doc

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("### Commands\n\n```\n", 1)[1].split("```", 1)[0]
    usage = doc.split("Usage:\n", 1)[1].split("\n\n", 1)[0]
    assert block.splitlines() == [line[2:] for line in usage.splitlines()]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_commands_help_explains_every_option_its_usage_lines_take(command):
    import re

    from jrs.__main__ import usage_for

    options = set(re.findall(r"--[a-z][a-z-]*", usage_for(command).split("\nCommands:")[0]))
    assert [o for o in sorted(options) if o not in COMMAND_HELP[command]] == []
