"""Issue 13 audit rows that had no test of their own (A13's minor rows): /etc/subgid is
read for itself when a node checks its per-job uid range (not only through /etc/subuid's
code path), and the default list of root-equivalent groups (rule 2) holds with real
processes: a local account in `disk` (one of the defaults), on a node with
--same-user-accounts and no --root-groups, runs its jobs as a per-job identity, not as
itself. (Rule 8's defaults, 32 and 1,024, are asserted by value in test_wire_slots.)"""

from __future__ import annotations

import pwd
import secrets
import shutil
import subprocess
import sys

from jrs.node import identity

from .cluster import Cluster, scratch
from .test_confine_modes import ids_seen

# far from the blocks tests/cluster.py hands out (1,879,113,728 and up)
FIRST = 1_000_000_000


def test_a_range_overlapping_only_etc_subgid_is_refused_naming_it():
    r = identity.UidRange(FIRST, FIRST + 255)
    files = {"/etc/passwd": "root:x:0:0::/root:/bin/sh\n",
             "/etc/subuid": "alice:100000:65536\n",
             "/etc/subgid": "alice:100000:65536\nbob:999999000:65536\n"}
    assert identity.range_conflicts(r, files) == [
        "/etc/subgid:2: bob has 999999000-1000064535"]
    assert "/etc/subgid" in identity.ID_FILES


def test_a_node_refuses_a_job_uid_range_that_only_etc_subgid_gives_out(pyz, tmp_path):
    """Real node, in a mount namespace of its own whose /etc/subgid (bind-mounted over
    the machine's, which is untouched) gives bob the range: it exits 2 with one line
    naming the file, the line and the block; with the machine's own /etc/subgid the same
    range is accepted (the refusal is the bind-mounted line's)."""
    fake = tmp_path / "subgid"
    fake.write_text("bob:999999000:65536\n")
    fake.chmod(0o644)
    c = Cluster(pyz, tmp_path, slots=[1])
    args = [sys.executable, str(pyz), "node", f"--name={c.names()[0]}",
            f"--job-uids={FIRST}-{FIRST + 255}", f"--execute={c.execute / 'n'}",
            f"--state={tmp_path / 'node'}", "-c", str(c.conf)]
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            f'mount --bind "{fake}" /etc/subgid && exec "$@"', "sh", *args],
                           capture_output=True, text=True, timeout=60, env=c.env)
        assert r.returncode == 2, (r.returncode, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "/etc/subgid:1: bob has 999999000-1000064535" in lines[0], \
            r.stderr
        identity.check_range(identity.UidRange(FIRST, FIRST + 255))  # not the machine's
    finally:
        c.stop()


def test_the_default_root_groups_give_a_member_of_disk_a_per_job_identity(pyz):
    tag = secrets.token_hex(3)
    assert "disk" in identity.DEFAULT_ROOT_GROUPS
    made = []
    try:
        for name, flags in ((f"jrsp{tag}", []), (f"jrsd{tag}", ["-G", "disk"])):
            subprocess.run(["useradd", "-M", "-s", "/bin/sh", *flags, name], check=True,
                           capture_output=True)
            made.append(pwd.getpwnam(name))
        plain, disk = made
        base = scratch("jrs-defgroups-")
        c = Cluster(pyz, base, slots=[1])
        try:
            c.start_master()
            c.start_node(0, "--same-user-accounts")  # no --root-groups: the defaults
            c.wait_up(1)
            seen = ids_seen(c, base, made)
            first, last = (int(x) for x in c.uid_ranges[0].split("-"))
            assert seen[plain.pw_name][0] == str(plain.pw_uid), seen  # as itself
            uid, *groups = seen[disk.pw_name]
            assert first <= int(uid) <= last and groups == [uid], seen  # not disk's
            assert "member of disk" in c.logs(), c.logs()
        finally:
            c.stop()
            shutil.rmtree(base, ignore_errors=True)
    finally:
        for acct in made:
            subprocess.run(["userdel", acct.pw_name], capture_output=True)
