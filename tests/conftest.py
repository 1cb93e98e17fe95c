"""Shared helpers: the built jrs.pyz, a way to run it, and config directories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYZ = ROOT / "dist" / "jrs.pyz"
SHARED = ROOT.parent / "shared"

# Every message any jrs process of the suite sends (this one and every child) is held
# to jrs/wire/messages.py's SCHEMA, nested payloads included (jrs/wire/strict.py); a
# mismatch leaves a BAD line in this file and fails the test during which it happened.
# Set when pytest starts, not on import: bench/ imports tests.cluster (and so this file),
# and a benchmark must measure the build as users run it, without the checks.
STRICT_LOG = Path(os.environ.get("JRS_STRICT_LOG") or f"/tmp/jrs-strict-{os.getpid()}.log")


def pytest_configure(config) -> None:
    os.environ["JRS_STRICT_LOG"] = str(STRICT_LOG)
    os.environ["JRS_STRICT"] = "1"


@pytest.fixture(autouse=True)
def _schema_holds():
    """Fail a test during which some jrs process sent a message SCHEMA does not describe."""
    start = STRICT_LOG.stat().st_size if STRICT_LOG.exists() else 0
    yield
    if STRICT_LOG.exists():
        with open(STRICT_LOG, "rb") as f:
            f.seek(start)
            bad = [line for line in f.read().decode(errors="replace").splitlines()
                   if " BAD " in line]
        assert not bad, "messages that do not match the schema:\n" + "\n".join(bad[:20])


@pytest.fixture(scope="session")
def pyz() -> Path:
    """dist/jrs.pyz, built once per test session if missing."""
    if not PYZ.exists():
        subprocess.run([sys.executable, str(ROOT / "build_zipapp.py")], check=True)
    return PYZ


@pytest.fixture
def two_nodes(pyz, tmp_path):
    """A master and two nodes of 2 slots each (the crash and resume tests' cluster)."""
    from .cluster import Cluster  # (cluster.py imports this module)

    c = Cluster(pyz, tmp_path, slots=[2, 2]).start()
    yield c
    c.stop()


def run_jrs(pyz: Path, *args: str, python: str = sys.executable, env=None, cwd=None,
            timeout: float = 60, input=None) -> subprocess.CompletedProcess:
    """Run the built file as a user would: `python3 jrs.pyz ARGS`."""
    full_env = dict(os.environ)
    full_env.pop("JRS_CONFIG", None)
    if env:
        full_env.update(env)
    return subprocess.run([python, str(pyz), *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout, input=input)


def write_config(directory: Path, master: str = "127.0.0.1:7083",
                 nodes: str = "127.0.0.1:7082 slots=2\n", secret: bytes = b"s" * 40,
                 secret_mode: int = 0o600) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "node.master").write_text(master + "\n")
    (directory / "node.list").write_text(nodes)
    (directory / "secret").write_bytes(secret)
    os.chmod(directory / "secret", secret_mode)
    return directory
