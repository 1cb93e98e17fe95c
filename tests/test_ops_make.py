"""`make install` / `make uninstall` into a DESTDIR: exactly the promised files."""

from __future__ import annotations

import os
import subprocess

from .conftest import PYZ, ROOT
from .ops import need

INSTALLED = {
    "usr/local/bin/jrs",
    "etc/init.d/jrs-daemon",
    "usr/local/lib/systemd/system/jrs-daemon.service",
    "usr/local/lib/systemd/system/jrs-master.service",
    "usr/local/lib/systemd/system/jrs-node.service",
    "etc/jrs/node.master",
    "etc/jrs/node.list",
}


def files(root) -> set:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([need("make"), "-C", str(ROOT), *args], capture_output=True,
                          text=True, timeout=120)


def test_install_and_uninstall_into_destdir(pyz, tmp_path):
    dest = tmp_path / "root"
    r = make("install", f"DESTDIR={dest}")
    assert r.returncode == 0, r.stderr
    assert files(dest) == INSTALLED
    assert (dest / "usr/local/bin/jrs").read_bytes() == PYZ.read_bytes()
    assert os.access(dest / "usr/local/bin/jrs", os.X_OK)
    assert os.access(dest / "etc/init.d/jrs-daemon", os.X_OK)
    script = (dest / "etc/init.d/jrs-daemon").read_text()
    assert "\nJRS_BIN=/usr/local/bin/jrs " in script and "\nJRS_BIN=/usr/bin/jrs" not in script
    assert subprocess.run(["sh", "-n", str(dest / "etc/init.d/jrs-daemon")]).returncode == 0
    units = dest / "usr/local/lib/systemd/system"
    node = (units / "jrs-node.service").read_text()
    assert "ExecStart=/usr/bin/python3 /usr/local/bin/jrs node " in node
    assert "/usr/bin/jrs " not in node
    r = subprocess.run([need("systemd-analyze"), "verify", "--man=no",
                        *map(str, sorted(units.iterdir()))], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert not (dest / "etc/jrs/secret").exists()

    r = make("uninstall", f"DESTDIR={dest}")
    assert r.returncode == 0, r.stderr
    assert files(dest) == set()
    assert not (dest / "etc/jrs").exists()


def test_install_keeps_an_existing_configuration(pyz, tmp_path):
    dest = tmp_path / "root"
    conf = dest / "etc/jrs"
    conf.mkdir(parents=True)
    (conf / "node.master").write_text("alpha\n")
    (conf / "secret").write_text("x" * 64)
    assert make("install", f"DESTDIR={dest}", "PREFIX=/opt/jrs").returncode == 0
    assert (conf / "node.master").read_text() == "alpha\n"
    assert (conf / "node.list").read_text() == (ROOT / "examples/etc-jrs/node.list").read_text()
    assert (dest / "opt/jrs/bin/jrs").is_file()
    assert "\nJRS_BIN=/opt/jrs/bin/jrs " in (dest / "etc/init.d/jrs-daemon").read_text()
    assert make("uninstall", f"DESTDIR={dest}", "PREFIX=/opt/jrs").returncode == 0
    assert files(dest) == {"etc/jrs/node.master", "etc/jrs/secret"}  # the user's, kept
