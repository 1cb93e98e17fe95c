"""The one file: runs under every installed CPython 3.9+, with no home, no pip, no venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import run_jrs


def installed_pythons(lowest: tuple, highest: tuple) -> list[str]:
    """Interpreters pyenv keeps on this machine (plus the one running the tests)."""
    found = {}
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for d in sorted(Path(root, "versions").glob("*")) if Path(root, "versions").is_dir() else []:
        parts = d.name.split(".")
        if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
            continue
        version = (int(parts[0]), int(parts[1]))
        exe = d / "bin" / "python"
        if lowest <= version <= highest and exe.exists():
            found[version] = str(exe)
    if lowest <= sys.version_info[:2] <= highest:
        found.setdefault(sys.version_info[:2], sys.executable)
    return [found[v] for v in sorted(found)]


SUPPORTED = installed_pythons((3, 9), (3, 14))
TOO_OLD = installed_pythons((2, 0), (3, 8))


@pytest.fixture
def readonly_home(tmp_path):
    """An empty HOME nobody can write, even root: a read-only tmpfs when we can mount."""
    home = tmp_path / "home"
    home.mkdir()
    mounted = False
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs",
                                  str(home)], capture_output=True).returncode == 0
    if not mounted:
        home.chmod(0o555)
    try:
        yield home
    finally:
        if mounted:
            subprocess.run(["umount", str(home)], check=False)


def test_several_pythons_are_installed():
    assert len(SUPPORTED) >= 2, "the multi-Python checks need pyenv's interpreters"


@pytest.mark.parametrize("python", SUPPORTED, ids=lambda p: p.split("/")[-3])
def test_runs_isolated_with_readonly_home(pyz, python, readonly_home, tmp_path):
    """`python -I jrs.pyz`: --version and a crypto round trip, extracting to the temp fallback."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"HOME": str(readonly_home), "TMPDIR": str(tmpdir), "XDG_CACHE_HOME": "",
           "JRS_CACHE": ""}
    r = subprocess.run([python, "-I", str(pyz), "--version"], capture_output=True, text=True,
                       env={**os.environ, **env}, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("jrs "), r.stderr
    r = subprocess.run([python, "-I", str(pyz), "selftest"], capture_output=True, text=True,
                       env={**os.environ, **env}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "secretbox round trip passed" in r.stdout
    assert not os.listdir(readonly_home)
    caches = list((tmpdir / f"jrs-{os.getuid()}").iterdir())
    assert len(caches) == 1 and (caches[0] / ".complete").is_file()


@pytest.mark.parametrize("python", SUPPORTED, ids=lambda p: p.split("/")[-3])
def test_every_python_runs_jobs(pyz, python, tmp_path):
    """Not just start-up: master, node, launcher, executors and submit, on each CPython."""
    (tmp_path / "t.condor").write_text("executable = /bin/echo\narguments = hi $(Process)\n"
                                       "output = o.$(Process)\nqueue 3\n")
    r = subprocess.run([python, str(pyz), "submit", "--local", "--no-progress", "t.condor"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "JRS_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    assert [(tmp_path / f"o.{i}").read_text() for i in range(3)] == [f"hi {i}\n"
                                                                     for i in range(3)]


@pytest.mark.parametrize("python", TOO_OLD, ids=lambda p: p.split("/")[-3])
def test_old_interpreter_gets_a_clear_error(pyz, python):
    r = subprocess.run([python, str(pyz), "--version"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("jrs needs CPython 3.9+; this is cpython ") or \
        r.stderr.startswith("jrs needs CPython 3.9+; this is python 2.")


def test_executable_with_shebang(pyz, tmp_path):
    target = tmp_path / "jrs.pyz"
    shutil.copy(pyz, target)
    assert os.access(target, os.X_OK)
    assert target.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    r = subprocess.run([str(target), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("jrs ")


def test_concurrent_first_starts_share_one_extraction(pyz, tmp_path):
    """Eight processes extract at once into an empty cache: all work, one directory stays."""
    cache = tmp_path / "cache"
    env = {**os.environ, "JRS_CACHE": str(cache)}
    procs = [subprocess.Popen([sys.executable, str(pyz), "selftest"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    for code, out, err in results:
        assert code == 0, err
        assert "round trip passed" in out
    entries = os.listdir(cache)
    assert len(entries) == 1, entries  # no half-written or leftover temporary directories
    assert (cache / entries[0] / ".complete").is_file()


def test_reuses_the_cache(pyz, tmp_path):
    cache = tmp_path / "cache"
    env = {"JRS_CACHE": str(cache)}
    assert run_jrs(pyz, "selftest", env=env).returncode == 0
    (entry,) = cache.iterdir()
    marker = entry / "nacl" / "__init__.py"
    before = marker.stat().st_mtime_ns
    assert run_jrs(pyz, "selftest", env=env).returncode == 0
    assert marker.stat().st_mtime_ns == before


@pytest.mark.parametrize("python", SUPPORTED, ids=lambda p: p.split("/")[-3])
def test_later_starts_run_unpacked_with_cached_bytecode(pyz, python, tmp_path):
    """After the first start, our code is imported from the cache, compiled once per
    interpreter even under PYTHONDONTWRITEBYTECODE, and no module comes from the zip."""
    cache = tmp_path / "cache"
    env = {**os.environ, "JRS_CACHE": str(cache), "PYTHONDONTWRITEBYTECODE": "1"}
    assert run_jrs(pyz, "--version", python=python, env=env).returncode == 0
    (entry,) = cache.iterdir()
    tag = subprocess.run([python, "-c", "import sys; print(sys.implementation.cache_tag)"],
                         capture_output=True, text=True).stdout.strip()
    assert (entry / f".compiled-{tag}").is_file()
    assert (entry / "jrs" / "__pycache__" / f"__main__.{tag}.pyc").is_file()
    assert (entry / "docopt" / "__pycache__").is_dir()
    # a short command leaves through os._exit (jrs/__main__.py run()): report there
    origins = subprocess.run(
        [python, "-c", "import os, sys, runpy; sys.argv = [sys.argv[1], '--version']; "
         "leave = os._exit\n"
         "def report(status):\n"
         "    print(sorted({m.__file__.split('/jrs/')[0] "
         "for n, m in list(sys.modules.items()) if n.startswith('jrs') and "
         "getattr(m, '__file__', None)}), file=sys.stderr, flush=True)\n"
         "    leave(status)\n"
         "os._exit = report\n"
         "runpy.run_path(sys.argv[0], run_name='__main__')", str(pyz)],
        capture_output=True, text=True, env=env)
    assert origins.stdout.startswith("jrs "), origins.stderr
    assert origins.stderr.strip() == f"['{entry}']", origins.stderr


def test_refuses_a_cache_others_can_write(pyz, tmp_path):
    """A group/world-writable cache could hold planted code: skip it, use the next one."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    r = run_jrs(pyz, "selftest", env={"JRS_CACHE": str(shared), "TMPDIR": str(tmpdir),
                                      "XDG_CACHE_HOME": str(tmpdir / "xdg-missing-parent" /
                                                            "x")})
    assert r.returncode == 0, r.stderr
    assert os.listdir(shared) == []


def test_executor_does_not_import_crypto(pyz):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from jrs.__main__ import main; "
            "main(['executor', '/nonexistent.task']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('nacl', '_cffi_backend', 'jrs.wire')))")
    r = subprocess.run([sys.executable, "-c", code, str(pyz)], capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_zip_is_reproducible(tmp_path):
    from .conftest import ROOT
    a, b = tmp_path / "a.pyz", tmp_path / "b.pyz"
    for out in (a, b):
        subprocess.run([sys.executable, str(ROOT / "build_zipapp.py"), "--output", str(out)],
                       check=True, capture_output=True)
    assert a.read_bytes() == b.read_bytes()
