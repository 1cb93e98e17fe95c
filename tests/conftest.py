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


@pytest.fixture(scope="session")
def pyz() -> Path:
    """dist/jrs.pyz, built once per test session if missing."""
    if not PYZ.exists():
        subprocess.run([sys.executable, str(ROOT / "build_zipapp.py")], check=True)
    return PYZ


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
