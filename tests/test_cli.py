"""The command line: docopt usage, per-command help, exit statuses."""

from __future__ import annotations

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
