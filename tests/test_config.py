"""Every configuration mistake is one line naming file and line, exit status 2."""

from __future__ import annotations

import os
import stat

import pytest

from jrs import config
from jrs.errors import ConfigError

from .conftest import run_jrs, write_config


def load_error(directory) -> str:
    with pytest.raises(ConfigError) as info:
        config.load(directory)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_good_config_loads(tmp_path):
    d = write_config(tmp_path, master="localhost",
                     nodes="# the pool\n\n127.0.0.1 slots=4 memory=2048 gpus=1 +Rack=r7\n"
                           "[::1]:7090  # a second node on the same host\n")
    cfg = config.load(d)
    assert cfg.master == config.Endpoint("localhost", 7083)
    assert [n.endpoint for n in cfg.nodes] == [config.Endpoint("127.0.0.1", 7082),
                                               config.Endpoint("::1", 7090)]
    first = cfg.nodes[0]
    assert (first.slots, first.memory, first.gpus, first.attrs, first.line) == \
        (4, 2048, 1, {"Rack": "r7"}, 3)
    assert cfg.secret == b"s" * 40


@pytest.mark.parametrize("nodes, line, words", [
    ("127.0.0.1:99999\n", 1, "bad port"),
    ("127.0.0.1:x\n", 1, "bad port"),
    ("\n127.0.0.1 cores=4\n", 2, "unknown key 'cores'"),
    ("127.0.0.1 slots=0\n", 1, "slots must be"),
    ("127.0.0.1 memory=lots\n", 1, "memory must be"),
    ("127.0.0.1 slots\n", 1, "expected key=value"),
    ("127.0.0.1\n# again\n127.0.0.1:7082\n", 3, "duplicate node 127.0.0.1:7082"),
    ("nosuchhost.invalid\n", 1, "cannot resolve host 'nosuchhost.invalid'"),
    ("[::1\n", 1, "unterminated"),
    ("127.0.0.1 +9bad=x\n", 1, "bad attribute name"),
])
def test_node_list_errors(tmp_path, nodes, line, words):
    d = write_config(tmp_path, nodes=nodes)
    message = load_error(d)
    assert message.startswith(f"{d / 'node.list'}:{line}: ")
    assert words in message


def test_empty_node_list(tmp_path):
    d = write_config(tmp_path, nodes="# nothing yet\n")
    assert load_error(d) == f"{d / 'node.list'}: no nodes listed"


@pytest.mark.parametrize("master, words", [
    ("127.0.0.1:0", "bad port"),
    ("127.0.0.1:7083 extra", "expected `host[:port]`"),
    ("nosuchhost.invalid:7083", "cannot resolve host"),
])
def test_master_errors(tmp_path, master, words):
    d = write_config(tmp_path, master=master)
    message = load_error(d)
    assert message.startswith(f"{d / 'node.master'}:1: ") and words in message


def test_two_masters(tmp_path):
    d = write_config(tmp_path, master="a\nb")
    assert load_error(d).startswith(f"{d / 'node.master'}:2: more than one master")


@pytest.mark.parametrize("missing", ["node.master", "node.list", "secret"])
def test_missing_files(tmp_path, missing):
    d = write_config(tmp_path)
    (d / missing).unlink()
    message = load_error(d)
    assert message.startswith(f"{d / missing}: missing")


def test_missing_directory(tmp_path):
    assert "does not exist" in load_error(tmp_path / "nope")


def test_short_secret(tmp_path):
    d = write_config(tmp_path, secret=b"0123456789" * 3 + b"\n")
    assert load_error(d) == (f"{d / 'secret'}:1: secret is 30 bytes; at least 32 are "
                             "needed (`jrs keygen --force` makes one)")


@pytest.mark.parametrize("mode", [0o604, 0o620, 0o666, 0o601])
def test_secret_open_to_others_is_refused(tmp_path, mode):
    d = write_config(tmp_path, secret_mode=mode)
    message = load_error(d)
    assert f"run: chmod 600 {d / 'secret'}" in message


def test_group_readable_secret_is_allowed(tmp_path):
    d = write_config(tmp_path, secret_mode=0o640)
    assert config.load(d).secret == b"s" * 40


def test_find_config_dir_order(tmp_path):
    assert config.find_config_dir("/x", {"JRS_CONFIG": "/y"}) == config.Path("/x")
    assert config.find_config_dir(None, {"JRS_CONFIG": "/y"}) == config.Path("/y")
    assert config.find_config_dir(None, {}) == config.Path("/etc/jrs")


def test_config_beside_pyz_is_found(tmp_path, pyz):
    import shutil
    target = tmp_path / "jrs.pyz"
    shutil.copy(pyz, target)
    write_config(tmp_path, nodes="127.0.0.1 slots=nope\n")
    r = run_jrs(target, "status")
    assert r.returncode == 2
    assert r.stderr.strip() == (f"jrs status: {tmp_path / 'node.list'}:1: slots must be a "
                                "whole number above 0, got 'nope'")


@pytest.mark.parametrize("command", ["master", "node", "status", "q"])
def test_cli_reports_config_errors_with_status_2(tmp_path, pyz, command):
    d = write_config(tmp_path, master="127.0.0.1:70830")
    r = run_jrs(pyz, command, "-c", str(d))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1
    assert f"{d / 'node.master'}:1: bad port '70830'" in r.stderr


def test_keygen_writes_private_secret_and_refuses_overwrite(tmp_path, pyz):
    r = run_jrs(pyz, "keygen", "-c", str(tmp_path / "cfg"))
    assert r.returncode == 0, r.stderr
    secret = tmp_path / "cfg" / "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    first = secret.read_bytes()
    assert len(first.strip()) >= 64
    assert config.load_secret(secret) == first.strip()
    r = run_jrs(pyz, "keygen", "-c", str(tmp_path / "cfg"))
    assert r.returncode == 2 and "exists; pass --force" in r.stderr
    assert secret.read_bytes() == first
    r = run_jrs(pyz, "keygen", "-c", str(tmp_path / "cfg"), "--force")
    assert r.returncode == 0 and secret.read_bytes() != first
    assert not [p for p in os.listdir(tmp_path / "cfg") if p.endswith(".tmp")]
