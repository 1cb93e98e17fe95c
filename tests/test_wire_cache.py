"""The code cache (jrs/_native.py) never creates a missing HOME or a missing parent."""

from __future__ import annotations

import os

from .conftest import run_jrs


def test_a_missing_home_is_never_created(pyz, tmp_path):
    """A root run with HOME=/nonexistent used to create /nonexistent/.cache/jrs. Now the
    missing HOME is skipped like an unwritable cache and the temp fallback is used."""
    home = tmp_path / "nonexistent"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"HOME": str(home), "XDG_CACHE_HOME": "", "JRS_CACHE": "", "TMPDIR": str(tmpdir)}
    r = run_jrs(pyz, "selftest", env=env)
    assert r.returncode == 0, r.stderr
    assert not home.exists()
    caches = list((tmpdir / f"jrs-{os.getuid()}").iterdir())
    assert len(caches) == 1 and (caches[0] / ".complete").is_file()
    assert not os.path.exists("/nonexistent")


def test_missing_parents_of_xdg_and_jrs_cache_are_not_created(pyz, tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"HOME": str(tmp_path / "gone"), "TMPDIR": str(tmpdir),
           "JRS_CACHE": str(tmp_path / "a" / "b" / "cache"),
           "XDG_CACHE_HOME": str(tmp_path / "x" / "y")}
    r = run_jrs(pyz, "--version", env=env)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]


def test_an_existing_home_gets_its_cache_made_private(pyz, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    r = run_jrs(pyz, "--version", env={"HOME": str(home), "XDG_CACHE_HOME": "",
                                      "JRS_CACHE": ""})
    assert r.returncode == 0, r.stderr
    for d in (home / ".cache", home / ".cache" / "jrs"):
        assert d.is_dir() and (d.stat().st_mode & 0o777) == 0o700
