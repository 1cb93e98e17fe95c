"""Issue 13's rules where the other tests checked one identity mode only (auditor A13):
the files and directories of a running root node have the documented modes (rules 5
and 11), `LOGNAME`/`USER` do not choose the account on a node that uses same-named
accounts (rule 2, the attack "`LOGNAME=other jrs submit` runs the job as `other`"),
the stdio and output attacks of tests/test_confine.py fail the same way on a node of
same-named accounts and on a non-root node (rule 4), and a job that ignores SIGTERM is
still removed, TERM then KILL after the grace period, in every identity mode (rule 3).

Real processes on loopback: a root master, root or non-root nodes, submitters run as
accounts this test makes (removed after).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from jrs.node import core as nc
from jrs.node import taskfile
from jrs.node.core import Capacity

from .cluster import Cluster, NonRootCluster, gate_sh, scratch_cluster, wait_for
from .cluster import process_alive as _alive
from .conftest import run_jrs
from .test_confine import _no_secret_under, secret_file  # noqa: F401
from .test_confine_escape import _shared_dir, account  # noqa: F401


def _mode(p: Path) -> tuple:
    st = os.lstat(p)
    return stat.S_IMODE(st.st_mode), st.st_uid


def test_a_running_root_nodes_state_and_sandboxes_have_the_documented_modes(pyz):
    """Rule 5: the state directory 0700, the execute directory root's 0711, the job's
    sandbox 0700 and its job's (inside the execute directory, not the state one); rule
    11: the taskfile 0600. Looked at while the job runs. (claims.json is left out: it
    is written 0644, the auditor's report names that gap.)"""
    with scratch_cluster(pyz, "jrs-modes-") as sc:
        c, base, work, gate = sc.c, sc.base, sc.work, sc.gate
        (work / "c.condor").write_text(f"executable = /bin/sh\narguments = \"-c 'id -u; "
                                       f"{gate_sh(gate)}'\"\noutput = out\nqueue\n")
        p = c.submit("c.condor", cwd=work)
        state = base / "node0"
        tasks = state / "tasks"
        wait_for(lambda: len(list(tasks.glob("*.task"))) == 1, timeout=60)
        (task,) = tasks.glob("*.task")
        wait_for(lambda: taskfile.load(str(task)).pid is not None, timeout=60)
        spec = taskfile.load(str(task)).spec
        execute = c.execute / "node0"
        box = Path(spec["sandbox"])
        got = {"state": _mode(state), "taskfile": _mode(task), "execute": _mode(execute),
               "sandbox": _mode(box)}
        gate.touch()
        _out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err + c.logs()
        uid = int((work / "out").read_text().split()[0])
        first, last = (int(x) for x in c.uid_ranges[0].split("-"))
        assert first <= uid <= last and spec["uid"] == uid, (uid, spec)
        assert got == {"state": (0o700, 0), "taskfile": (0o600, 0), "execute": (0o711, 0),
                       "sandbox": (0o700, uid)}, got
        assert box.parent == execute and state not in box.parents, box
        assert not _mode(tasks)[0] & 0o077, _mode(tasks)


def _make_account(prefix: str) -> pwd.struct_passwd:
    name = prefix + secrets.token_hex(3)
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True, capture_output=True)
    return pwd.getpwnam(name)


def _as_account(c: Cluster, acct, work: Path, *args: str, env=None, timeout: float = 90):
    """`jrs submit ARGS` run by `acct` in `work` (made its own, with a copy of the
    configuration it may read); (exit status, stdout, stderr)."""
    if not (work / "conf").exists():
        shutil.copytree(c.conf, work / "conf")
    for p in (work, *work.iterdir(), *(work / "conf").iterdir()):
        os.chown(p, acct.pw_uid, acct.pw_gid)
    prefix = ["env", *(f"{k}={v}" for k, v in (env or {}).items())]
    r = subprocess.run(["runuser", "-u", acct.pw_name, "--", *prefix, "/usr/bin/python3",
                        str(c.pyz), "submit", "-c", str(work / "conf"), "--no-progress", *args],
                       cwd=work, capture_output=True, text=True, timeout=timeout,
                       env=dict(c.env, JRS_CACHE=str(work / "cache")))
    return r.returncode, r.stdout, r.stderr


def ids_seen(c: Cluster, base: Path, accounts: list) -> dict:
    """{account name: [uid, gid, ...]} of a job each account submitted (`id -u; id -G`)."""
    seen = {}
    for acct in accounts:
        work = base / acct.pw_name
        work.mkdir()
        (work / "id.condor").write_text("executable = /bin/sh\narguments = \"-c 'id -u; "
                                        "id -G'\"\noutput = id.txt\nqueue\n")
        code, _out, err = _as_account(c, acct, work, "id.condor")
        assert code == 0, err + c.logs()
        seen[acct.pw_name] = (work / "id.txt").read_text().split()
    return seen


def test_logname_and_user_never_choose_the_account_of_a_job(pyz):
    """`LOGNAME=other USER=other jrs submit` by one ordinary account, on a node with
    --same-user-accounts: the job runs as the account that ran the submit, never as
    `other` (another ordinary account the node would use), and the master hears the
    real account's name."""
    me, other = _make_account("jrsl"), _make_account("jrso")
    try:
        with scratch_cluster(pyz, "jrs-logname-", start=False, work_mode=None) as sc:
            c, work, gate = sc.c, sc.work, sc.gate
            fake = {"LOGNAME": other.pw_name, "USER": other.pw_name}
            seen = subprocess.run(["runuser", "-u", me.pw_name, "--", "env",
                                   *(f"{k}={v}" for k, v in fake.items()), "/bin/sh", "-c",
                                   "echo $LOGNAME $USER"], capture_output=True, text=True)
            assert seen.stdout.split() == [other.pw_name] * 2, seen  # the lie reaches it
            c.start_master()
            c.start_node(0, "--same-user-accounts")
            c.wait_up(1)
            (work / "id.condor").write_text(
                "executable = /bin/sh\narguments = \"-c 'id -u; id -un; "
                f"{gate_sh(gate)}'\"\noutput = id.txt\nqueue\n")
            users = []

            def running() -> bool:
                subs = c.status()["submitters"]
                users.extend(s["user"] for s in subs)
                return any(s["claims"] for s in subs)

            result: dict = {}
            t = threading.Thread(target=lambda: result.update(
                r=_as_account(c, me, work, "id.condor", env=fake)))
            t.start()
            try:
                wait_for(running, timeout=60)
            finally:
                gate.touch()
                t.join(120)
            code, _out, err = result["r"]
            assert code == 0, err + c.logs()
            uid, name = (work / "id.txt").read_text().split()
            assert (int(uid), name) == (me.pw_uid, me.pw_name), (uid, name)
            assert users and set(users) == {me.pw_name}, users
    finally:
        for a in (me, other):
            subprocess.run(["userdel", a.pw_name], capture_output=True)


ATTACK_MODES = ["same-named account", "non-root node"]


@pytest.mark.parametrize("mode", ATTACK_MODES)
def test_stdio_and_output_attacks_fail_in_every_identity_mode(pyz, account, secret_file,  # noqa: F811
                                                              mode):
    """tests/test_confine.py's two attacks with real processes, on a root node whose jobs
    run as the submitter's same-named account and on a node run as that account: the
    shared-FS streams (`output = /etc/cron.d/x`, `input =` a root-only file) are opened
    with the job's rights and fail, and outputs linked to root-only files, a FIFO, a link
    to `/`, absolute and `..` names never bring anything root-only back; nothing appears
    in /etc/cron.d, the node keeps serving and the honest submit beside it succeeds."""
    d, token = secret_file
    nonroot = mode == "non-root node"
    cron = f"jrs-attack-{secrets.token_hex(4)}"
    os.makedirs("/etc/cron.d", exist_ok=True)
    try:
        with scratch_cluster(pyz, "jrs-attack-modes-", slots=(2,), start=nonroot,
                             make=(lambda base: NonRootCluster(pyz, base, account, slots=[2]))
                             if nonroot else None) as sc:
            c, work = sc.c, sc.work
            if nonroot:
                def submit(work: Path, name: str):
                    return c.run_submit(name, cwd=work, timeout=90)
            else:
                c.start_master()
                c.start_node(0, "--same-user-accounts")
                c.wait_up(1)

                def submit(work: Path, name: str):
                    return _as_account(c, account, work, name)
            (work / "a.condor").write_text(
                f"executable = /bin/cat\nshould_transfer_files = NO\niwd = {work}\n"
                f"input = {d}/flag\noutput = /etc/cron.d/{cron}\nqueue\n"
                f"input =\noutput = /etc/cron.d/{cron}\nqueue\n")
            code, _out, err = submit(work, "a.condor")
            assert code != 0 and "Permission denied" in err, err + c.logs()
            assert "2 failed" in err, err
            script = (f"mkdir dir; echo inner > dir/in; ln -s {d}/flag dir/leak; "
                      f"ln -s {d}/flag link; ln -s {d} linkdir; ln -s / slash; mkfifo fifo; "
                      f"echo out; ln -sf {d}/flag _condor_stdout; ln -sf {d}/flag _condor_stderr")
            (work / "b.condor").write_text(
                f"executable = /bin/sh\narguments = \"-c '{script}'\"\noutput = o.txt\n"
                "error = e.txt\ntransfer_output_files = dir, link, linkdir, slash, fifo\nqueue\n"
                f"transfer_output_files = {d}/flag, {d}, ../../x\nqueue\n")
            t0 = time.monotonic()
            code, _out, err = submit(work, "b.condor")
            assert time.monotonic() - t0 < 60, err
            assert code != 0, err + c.logs()
            assert (work / "dir" / "in").read_text() == "inner\n"  # the honest part came back
            assert not (work / "dir" / "leak").exists() and not (work / "link").exists()
            assert not Path(f"/etc/cron.d/{cron}").exists()
            _no_secret_under(work, token)
            assert c.nodes[0].poll() is None
            (work / "ok.condor").write_text("executable = /bin/echo\narguments = fine\n"
                                            "output = ok.out\nqueue\n")
            code, _out, err = submit(work, "ok.condor")
            assert code == 0, err + c.logs()
            assert (work / "ok.out").read_text() == "fine\n"
    finally:
        Path(f"/etc/cron.d/{cron}").unlink(missing_ok=True)


KILL_MODES = ["per-job uid + cgroups", "per-job uid, --cgroup=none",
              "same-named account, --cgroup=none", "non-root node"]


def _ignores_term(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@pytest.mark.parametrize("mode", KILL_MODES)
def test_a_job_that_ignores_sigterm_is_killed_after_the_grace_period(pyz, account, mode):  # noqa: F811
    """Rule 3: removing a job is TERM, a grace period, then KILL of its whole unit. The
    job ignores SIGTERM, and so does a child it left in a session of its own: `jrs rm`
    still ends both, and the submit ends with the job removed."""
    d = _shared_dir()
    mark = f"{300 + secrets.randbelow(10 ** 6) / 10 ** 4:.4f}"
    make = (lambda base: NonRootCluster(pyz, base, account)) if mode == "non-root node" \
        else None
    extra = {"per-job uid + cgroups": [], "per-job uid, --cgroup=none": ["--cgroup=none"],
             "same-named account, --cgroup=none": ["--cgroup=none", "--same-user-accounts"],
             "non-root node": []}[mode]
    pids: list = []
    try:
        with scratch_cluster(pyz, "jrs-term-", start=False, make=make) as sc:
            c, work = sc.c, sc.work
            # TERM to KILL in 1 s, not 5: that the KILL comes, to both, is what this
            # checks (the default and the setting: the test after this one)
            c.env["JRS_KILL_GRACE"] = "1"
            c.start_master()
            c.start_node(0, *extra)
            c.wait_up(1)
            # and a third process that takes TERM: it writes `termed` when the TERM
            # comes (its mtime: when), so the grace before the KILL is measured
            (work / "job.sh").write_text(
                "#!/bin/sh\n"
                f"sh -c 'trap \"echo t > {d}/termed; exit 0\" TERM; sleep {mark} & wait' "
                "</dev/null >/dev/null 2>&1 &\n"
                "trap '' TERM\n"
                f"setsid sh -c \"echo \\$\\$ > {d}/child; exec sleep {mark}\" "
                "</dev/null >/dev/null 2>&1 &\n"
                f"echo $$ > {d}/job\nexec sleep {mark}\n")
            os.chmod(work / "job.sh", 0o755)
            (work / "t.condor").write_text("executable = job.sh\noutput = out\nerror = err\n"
                                           "queue\n")
            if mode == "same-named account, --cgroup=none":
                result: dict = {}
                t = threading.Thread(target=lambda: result.update(
                    r=_as_account(c, account, work, "t.condor")))
                t.start()
            else:
                p = c.submit("t.condor", cwd=work)
            wait_for(lambda: all((d / f).exists() and (d / f).read_text().strip()
                                 for f in ("job", "child")), timeout=60)
            pids = [int((d / f).read_text()) for f in ("job", "child")]
            assert all(_alive(pid) and _ignores_term(pid) for pid in pids), pids
            r = run_jrs(pyz, "rm", "1.0", "-c", str(c.conf))
            assert r.returncode == 0, r.stderr
            t0 = time.monotonic()
            wait_for(lambda: not any(_alive(pid) for pid in pids), timeout=30)
            took, gone = time.monotonic() - t0, time.time()
            # TERM first, then the grace (1 s), then the KILL: the process that takes
            # TERM saw it at least half the grace before the others were gone (a KILL
            # with no grace: none, or ~0.01 s)
            assert (d / "termed").exists(), "no TERM before the KILL"
            assert gone - (d / "termed").stat().st_mtime >= 0.5, (
                gone - (d / "termed").stat().st_mtime)
            if mode == "same-named account, --cgroup=none":
                t.join(90)
                _code, _out, err = result["r"]
            else:
                _out, err = p.communicate(timeout=90)
            assert "1 removed" in err, err + c.logs()
            print(f"{mode}: both gone {took:.1f} s after jrs rm returned, "
                  f"{gone - (d / 'termed').stat().st_mtime:.2f} s after the TERM")
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(d, ignore_errors=True)


def test_the_kill_grace_is_5_s_unless_jrs_kill_grace_says_otherwise(pyz, tmp_path,
                                                                    monkeypatch):
    """The grace test above shortens JRS_KILL_GRACE: this holds the 5 s a user gets, the
    setting in each job's taskfile spec (what the executor waits) as the daemon makes
    its core (no launcher: nothing runs), and a bad setting stopping the node with one
    line naming it."""
    from jrs.config import load
    from jrs.node.daemon import NodeDaemon

    from .test_node_core import T0, attach, of, offer, run_msg

    c = Cluster(pyz, tmp_path, slots=[1])
    for i, (setting, want) in enumerate((("", 5.0), ("1", 1.0), ("0.25", 0.25))):
        monkeypatch.setenv("JRS_KILL_GRACE", setting)
        core = NodeDaemon(load(c.conf), Capacity("n1", 1, 1000, 0, {}),
                          str(tmp_path / f"state{i}"), None).core
        core.master_up()
        offer(core, 1)
        attach(core, 1)
        t = core.run_offered(1, run_msg(1))
        core.box_made(t)
        (prep,) = of(core.run_received(t, T0), nc.Prepare)
        assert core.task_spec(prep.ticket, None, {}, T0)["kill_grace"] == want, setting
    for bad in ("soon", "3601"):
        r = run_jrs(pyz, "node", "-c", str(c.conf), f"--name={c.names()[0]}", *c.node_flags(0),
                    f"--state={tmp_path / 'node'}", env={"JRS_KILL_GRACE": bad}, timeout=30)
        assert (r.returncode, r.stderr) == (2, f"jrs node: JRS_KILL_GRACE={bad}: want a "
                                               "number of seconds from 0 to 3600\n"), r


def test_same_named_accounts_refuse_system_accounts_and_the_configured_root_groups(pyz):
    """Rule 2 with real processes beyond uid 0 and group 0 (tests/test_confine.py): on a
    node started with --same-user-accounts --root-groups=root,GROUP, a system account
    (useradd -r: uid below UID_MIN) and an ordinary account in GROUP (supplementary)
    get a per-job uid, with the reason logged; an ordinary account runs as itself."""
    tag = secrets.token_hex(3)
    group = f"jrsg{tag}"
    subprocess.run(["groupadd", group], check=True, capture_output=True)
    made = []
    try:
        for name, flags in ((f"jrsp{tag}", []), (f"jrsr{tag}", ["-G", group]),
                            (f"jrss{tag}", ["-r"])):
            subprocess.run(["useradd", "-M", "-s", "/bin/sh", *flags, name], check=True,
                           capture_output=True)
            made.append(pwd.getpwnam(name))
        plain, grouped, system = made
        assert system.pw_uid < 1000 <= plain.pw_uid
        with scratch_cluster(pyz, "jrs-rootgroups-", start=False) as sc:
            c, base = sc.c, sc.base
            c.start_master()
            c.start_node(0, "--same-user-accounts", f"--root-groups=root,{group}")
            c.wait_up(1)
            seen = ids_seen(c, base, made)
            first, last = (int(x) for x in c.uid_ranges[0].split("-"))
            assert seen[plain.pw_name][0] == str(plain.pw_uid), seen
            for acct in (grouped, system):
                uid, *groups = seen[acct.pw_name]
                assert first <= int(uid) <= last and groups == [uid], seen
            logs = c.logs()
            assert f"member of {group}" in logs and "a system account" in logs, logs
    finally:
        for acct in made:
            subprocess.run(["userdel", acct.pw_name], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)


def test_a_non_root_nodes_state_and_sandboxes_are_private_to_it(pyz, account):  # noqa: F811
    """Rule 5 on a non-root node (it cannot switch identities): its state directory
    0700, the taskfile 0600, the sandbox (in STATE/sandbox by default) 0700, all the
    node account's; the job runs as that account."""
    with scratch_cluster(pyz, "jrs-nonroot-modes-",
                         make=lambda base: NonRootCluster(pyz, base, account)) as sc:
        c, base, work, gate = sc.c, sc.base, sc.work, sc.gate
        (work / "c.condor").write_text(f"executable = /bin/sh\narguments = \"-c 'id -u; "
                                       f"{gate_sh(gate)}'\"\noutput = out\nqueue\n")
        p = c.submit("c.condor", cwd=work)
        state = base / "node0"
        tasks = state / "tasks"
        wait_for(lambda: len(list(tasks.glob("*.task"))) == 1, timeout=60)
        (task,) = tasks.glob("*.task")
        wait_for(lambda: taskfile.load(str(task)).pid is not None, timeout=60)
        box = Path(taskfile.load(str(task)).spec["sandbox"])
        got = {"state": _mode(state), "taskfile": _mode(task), "sandbox": _mode(box)}
        gate.touch()
        _out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err + c.logs()
        me = account.pw_uid
        assert (work / "out").read_text().split()[0] == str(me)
        assert got == {"state": (0o700, me), "taskfile": (0o600, me), "sandbox": (0o700, me)}, got
        assert box.parent == state / "sandbox", box


def test_automatic_outputs_are_only_the_new_or_changed_top_level_files(pyz):
    """Rule 10's automatic mode with real processes: of the job's input files, one it
    leaves alone is not written back (its inode in the submit directory is the same
    after the job), one it rewrites comes back; a new top-level file comes back, a new
    file in a new directory does not."""
    with scratch_cluster(pyz, "jrs-auto-", work_mode=None) as sc:
        c, work = sc.c, sc.work
        (work / "keep.txt").write_text("as sent\n")
        (work / "edit.txt").write_text("as sent\n")
        inode = os.stat(work / "keep.txt").st_ino
        (work / "a.condor").write_text(
            "executable = /bin/sh\narguments = \"-c 'cat keep.txt > /dev/null; "
            "echo edited > edit.txt; echo new > new.txt; mkdir sub; echo x > sub/deep'\"\n"
            "transfer_input_files = keep.txt, edit.txt\nqueue\n")
        os.utime(work / "keep.txt", (1, 1))  # an old mtime: a rewrite would not keep it
        code, _out, err = c.run_submit("a.condor", cwd=work)
        assert code == 0, err + c.logs()
        st = os.stat(work / "keep.txt")
        assert (st.st_ino, st.st_mtime) == (inode, 1), (st, inode)
        assert (work / "keep.txt").read_text() == "as sent\n"
        assert (work / "edit.txt").read_text() == "edited\n"
        assert (work / "new.txt").read_text() == "new\n"
        assert not (work / "sub").exists()
