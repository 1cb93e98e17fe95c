"""The node's policy, pure: the claims book, admission, task states, result building.

`NodeCore` takes events (a message from the master or a submitter, a probe of
an executor, a taskfile read back, the I/O the shell did for it) and returns
actions (send this, write that, start the job of taskfile X). Nothing in here
touches a socket, a file, the clock or randomness: `now` (wall-clock seconds)
comes in with the events that need it. So `daemon.py` is only the shell that
moves bytes and executes actions, and tests and the cluster simulation drive
this class directly.

Admission is the one place where what a peer sends is checked: job ids are
`CLUSTER.PROC`, attempts non-negative integers, claim and submitter ids and
session tokens of a fixed shape, file names plain relative paths inside the
sandbox, every field of a job spec typed. Whatever a peer sends, the answer is
a refusal or an `error` message, never an exception.

State changes only once the I/O that can fail has succeeded: a run becomes a
task (and its claim busy) when its taskfile exists; a failed write or launch
turns into `rejected` with the reason, and the sandbox goes.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..wire.messages import MAX_FILE_SIZE, TOO_BIG, error
from . import sandbox

LAUNCH_GRACE = 10.0  # seconds a written taskfile may wait for its executor before a relaunch
# "started" goes out only once a job has run this long: a job that ends sooner is
# announced by its "finished" alone, one message less per short job
STARTED_AFTER = 0.05
REKILL_EVERY = 10.0  # a kill is repeated this often while the executor lives (a lost TERM)
DEFAULT_RETAIN = 7 * 86400.0
# seconds a killed job (removed, its claim revoked) has between TERM and KILL of its
# unit; the daemon takes JRS_KILL_GRACE (tests of the KILL shorten the wait)
KILL_GRACE = 5.0
# A gap this long between two events (the shell ticks each second) means the node was
# stopped (SIGSTOP, a paused VM): the master may have declared it lost meanwhile (its
# node timeout is 6 s by default; the last report went up to a second before the stop)
STALL_AFTER = 3.0

_JOB = re.compile(r"[0-9]{1,18}\.[0-9]{1,18}\Z")
# submitter ids: os.urandom(12).hex(); claim ids: os.urandom(16).hex() (128 bits, contract
# 9), or 12 bytes from a master of before (claims it granted may still be on a node)
_ID = re.compile(r"[0-9a-f]{24}(?:[0-9a-f]{8})?\Z")
_TOKEN = re.compile(r"[0-9a-f]{64}\Z")  # a session token: a 32-byte BLAKE2b digest in hex
MAX_ARGS = 100_000
MAX_ENV = 10_000
MAX_OUTPUTS = 100_000
MAX_PATH = 4096


class Refused(ValueError):
    """What a peer sent breaks a rule; the text says which (and is safe to log)."""


class _NotYours(Refused):
    """A session named a claim or a job bound to another session (contract 9)."""


def _excerpt(value: object, limit: int = 60) -> str:
    return repr(value)[:limit]


# ------------------------------------------------------------------ validation

def check_job(value: object) -> str:
    if not isinstance(value, str) or not _JOB.match(value):
        raise Refused(f"bad job id {_excerpt(value)}: want CLUSTER.PROC")
    return value


def check_attempt(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 31:
        raise Refused(f"bad attempt {_excerpt(value)}: want a whole number >= 0")
    return value


def check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise Refused(f"bad {what} id {_excerpt(value)}: want 24 or 32 lowercase hex digits")
    return value


def check_token(value: object) -> str:
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise Refused("bad session token: want 64 lowercase hex digits")
    return value


def check_count(value: object, what: str, low: int = 0, high: int = 1 << 31) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value < high:
        raise Refused(f"bad {what} {_excerpt(value)}")
    return value


def check_user(value: object) -> str:
    """The submitter's account name (looked up, never used as a path)."""
    if not isinstance(value, str) or not 0 < len(value) <= 256 or "\0" in value \
            or "/" in value:
        raise Refused(f"bad user name {_excerpt(value)}")
    return value


def _text(value: object, what: str, limit: int = MAX_PATH, empty: bool = True) -> str:
    if not isinstance(value, str) or len(value) > limit or "\0" in value \
            or (not empty and not value):
        raise Refused(f"bad {what} {_excerpt(value)}")
    return value


def _opt_text(value: object, what: str) -> Optional[str]:
    return None if value is None else _text(value, what)


def _flag(value: object, what: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise Refused(f"bad {what} {_excerpt(value)}: want true or false")
    return value


def _str_map(value: object, what: str) -> Dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_ENV:
        raise Refused(f"bad {what}: want an object of strings")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str) or len(k) + len(v) > 1 << 17:
            raise Refused(f"bad {what} entry {_excerpt(k)}")
    return dict(value)


def check_name(value: object) -> str:
    """A file name inside the sandbox: a plain relative path (sandbox.safe_name)."""
    try:
        return sandbox.safe_name(value)
    except sandbox.BadName as exc:
        raise Refused(str(exc)) from None


def check_outputs(value: object) -> Optional[List[str]]:
    """transfer_output_files: None (automatic) or plain relative paths (a trailing
    `/` names a directory's content, as in HTCondor)."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_OUTPUTS:
        raise Refused("transfer_output_files must be a list of names")
    out = []
    for name in value:
        if not isinstance(name, str):
            raise Refused(f"bad output name {_excerpt(name)}")
        check_name(name[:-1] if name.endswith("/") and len(name) > 1 else name)
        out.append(name)
    return out


def check_spec(spec: object) -> dict:
    """A run's job spec with every field typed (unknown fields dropped)."""
    if not isinstance(spec, dict):
        raise Refused("the job spec must be an object")
    shared = _flag(spec.get("shared_fs"), "shared_fs")
    exe = _text(spec.get("executable"), "executable", empty=False)
    transfer_exe = _flag(spec.get("transfer_executable"), "transfer_executable") and not shared
    if transfer_exe:
        check_name(os.path.basename(exe))
    args = spec.get("arguments", [])
    if args is None:
        args = []
    if not isinstance(args, list) or len(args) > MAX_ARGS \
            or not all(isinstance(a, str) and "\0" not in a for a in args):
        raise Refused("arguments must be a list of strings")
    stdin = spec.get("input")
    if not (stdin is None or isinstance(stdin, bool)):
        stdin = _text(stdin, "input")
    when = spec.get("when_to_transfer_output", "ON_EXIT")
    if when is None:
        when = "ON_EXIT"
    when = _text(when, "when_to_transfer_output", 40).upper()
    return {
        "executable": exe, "transfer_executable": transfer_exe, "arguments": list(args),
        "environment": _str_map(spec.get("environment"), "environment"),
        "getenv": _str_map(spec.get("getenv"), "getenv"),
        "iwd": _opt_text(spec.get("iwd"), "iwd"), "shared_fs": shared, "input": stdin,
        "output": _opt_text(spec.get("output"), "output"),
        "error": _opt_text(spec.get("error"), "error"),
        "transfer_output_files": check_outputs(spec.get("transfer_output_files")),
        "when_to_transfer_output": when,
        "cpus": check_count(spec.get("cpus", 1), "cpus", 0),
    }


def check_headers(files: object) -> List[dict]:
    """A run's file headers: [{name, size, mode}] with names inside the sandbox."""
    if not isinstance(files, list) or len(files) > MAX_OUTPUTS:
        raise Refused("files must be a list of at most 100000 headers")
    out = []
    seen = set()
    for i, f in enumerate(files):
        if not isinstance(f, dict):
            raise Refused("each file header must be an object")
        name = check_name(f.get("name"))
        if name in seen:
            raise Refused(f"file {name[:60]!r} is sent twice")
        seen.add(name)
        size = f.get("size")
        if type(size) is int and size > MAX_FILE_SIZE:  # the schema's bound and words
            raise Refused(f"field 'files[{i}].size' {TOO_BIG}")
        size = check_count(size, f"size of {name[:60]!r}", 0, MAX_FILE_SIZE + 1)
        mode = f.get("mode", 0o644)
        if not isinstance(mode, int) or isinstance(mode, bool):
            mode = 0o644
        out.append({"name": name, "size": size, "mode": mode & 0o777})
    return out


def session_hash(token: Optional[str]) -> Optional[str]:
    """What a task stores of the token of the session that ran it (None: no token)."""
    return None if token is None else hashlib.sha256(token.encode()).hexdigest()


# ------------------------------------------------------------------ actions

@dataclass
class ToMaster:
    msg: dict


@dataclass
class ToSession:
    sid: int
    msg: dict


@dataclass
class CloseSession:
    sid: int


@dataclass
class SaveClaims:
    """Write claims.json; then send `reply` to the master, or, if the write failed and
    `offered` names a new claim, call `offer_failed(offered, error)`."""
    claims: list
    offered: Optional[str] = None
    reply: Optional[dict] = None


@dataclass
class Prepare:
    """Make the task of `ticket`: identity, ownership, snapshot, `task_spec`, the
    taskfile. Then call `created(ticket, error)`."""
    ticket: RunTicket


@dataclass
class Launch:
    """Start the job of taskfile `path` (a fresh executor today, an idle one later)."""
    key: str
    path: str


@dataclass
class Kill:
    key: str
    path: str


@dataclass
class MarkLost:
    """Record the job lost (killing its process if it is still that process, and with
    `reap` whatever else of its containment unit is left), re-read the taskfile, and
    call `loaded`."""
    key: str
    path: str
    reason: str
    pid: Optional[int]
    pid_start: Optional[int]
    reap: bool = False


@dataclass
class Deliver:
    """Send `finished` with the result and its files on session `sid` as one transfer,
    then call `delivery_done(key, sid, ok)`."""
    sid: int
    key: str


@dataclass
class Remove:
    """Remove a task's sandbox and taskfile (after recording `delivered` when acked);
    then its identity (`ident`: the spec's uid fields) may be reused."""
    key: str
    path: str
    box: str
    delivered: bool
    ident: Optional[dict] = None


@dataclass
class RemoveBox:
    """Remove the sandbox of a run that did not become a task; then release `ident`."""
    box: str
    ident: Optional[dict] = None


@dataclass
class AnnounceLater:
    key: str
    delay: float


@dataclass
class Log:
    level: str  # "info" or "warning"
    text: str


Action = Any


# ------------------------------------------------------------------ state

@dataclass
class Capacity:
    name: str
    slots: int
    memory: int
    gpus: int
    attrs: dict


@dataclass
class Claim:
    claim: str
    submitter: str
    user: str
    cpus: int
    memory: int
    gpus: list
    job: Optional[str] = None  # key of the task running on it
    releasing: bool = False
    # sha256 of the token of the session bound to it (contract 9): the first that ran on
    # it; None until then. Only that session may run, release or kill on it.
    session: Optional[str] = None

    def to_json(self) -> dict:
        """As the master knows it (node-hello)."""
        return {"claim": self.claim, "submitter": self.submitter, "user": self.user,
                "cpus": self.cpus, "memory": self.memory, "gpus": self.gpus}

    def to_saved(self) -> dict:
        """As claims.json keeps it: with the session binding (never sent to the master)."""
        out = self.to_json()
        if self.session is not None:
            out["session"] = self.session
        return out


@dataclass
class Task:
    key: str
    submitter: str
    session: Optional[str]  # sha256 of the token of the session that ran it
    job: str
    attempt: int
    claim: str
    path: str
    sandbox: str
    created: float
    state: Any = None  # the last taskfile.TaskState read (None: not read since written)
    ident: Optional[dict] = None  # the spec's identity fields (uid, per_job_uid)
    finished_at: Optional[float] = None
    delivering: Optional[int] = None  # the session a delivery is under way on
    kill_at: Optional[float] = None
    announce: bool = False

    @property
    def finished(self) -> bool:
        return self.state is not None and self.state.finished


@dataclass
class Session:
    sid: int
    submitter: str
    session: Optional[str]


@dataclass
class RunTicket:
    """A `run` between its header and its task: what the shell receives into and makes."""
    sid: int
    job: str
    attempt: int
    reason: Optional[str] = None  # set: refuse (the data is read and dropped)
    fatal: bool = False  # the headers themselves are bad: answer `error`, not `rejected`
    # "node": refused for the node's own trouble (I/O); "claim": the claim went or is
    # taken meanwhile (a race); neither is the job's fault
    cause: Optional[str] = None
    heads: list = field(default_factory=list)
    key: str = ""
    submitter: str = ""
    session: Optional[str] = None
    claim: str = ""
    user: str = ""
    spec: dict = field(default_factory=dict)
    box: str = ""
    path: str = ""
    made_box: bool = False
    ident: Optional[dict] = None  # the identity the shell gave it (uid, per_job_uid)
    shell: Any = None  # the shell's own handles (the sandbox being filled)

    @property
    def exe_in_box(self) -> Optional[str]:
        """The sandbox path of a transferred executable (the shell makes it executable)."""
        if self.spec.get("transfer_executable") and not self.spec.get("shared_fs"):
            return os.path.join(self.box, os.path.basename(self.spec["executable"]))
        return None


def task_key(submitter: str, session: Optional[str], job: str, attempt: int) -> str:
    """The name of a new task's taskfile and sandbox (contract 10). Derived from the
    submitter id *and* its session's token hash: the submitter id is public, so a key
    made from it alone (a 16-character prefix, before) let another secret holder take
    a job's name first and have the real run refused as a duplicate. Tasks already on
    disk keep the names they have (`recover` takes the key from the file name) and are
    found by (submitter, job, attempt), never by recomputing their key."""
    who = hashlib.sha256(f"{submitter}\0{session or ''}".encode()).hexdigest()[:16]
    return f"{who}-{job}.{attempt}"


class NodeCore:
    """The node's claims, tasks and sessions; events in, actions out."""

    def __init__(self, cap: Capacity, tasks_dir: str, sandbox_dir: str, boot: str = "",
                 notify: str = "", retain: float = DEFAULT_RETAIN,
                 stall_after: float = STALL_AFTER, kill_grace: float = KILL_GRACE) -> None:
        self.cap = cap
        self.tasks_dir = tasks_dir
        self.sandbox_dir = sandbox_dir
        self.boot = boot
        self.notify = notify
        self.retain = retain
        self.kill_grace = kill_grace
        self.claims: Dict[str, Claim] = {}
        self.tasks: Dict[str, Task] = {}
        # (submitter, job, attempt) -> keys of its tasks (one, but for sessions that
        # share a public submitter id): messages name jobs, not keys (contract 10)
        self.by_job: Dict[Tuple[str, str, int], List[str]] = {}
        self.unsaved = False  # claims.json is older than the claims book: write it again
        self.sessions: Dict[int, Session] = {}
        self.bound: Dict[Tuple[str, Optional[str]], int] = {}  # (submitter, hash) -> sid
        self.receiving: set = set()  # task keys whose run data is arriving
        self.master = False
        # back from a stop: no run starts until the master answered the ping of this seq
        # (sent after a report, so its claim-drops for claims it took away come first)
        self.stall_after = stall_after
        self.unconfirmed: Optional[int] = None
        self.held: List[RunTicket] = []  # runs received while unconfirmed
        self._asked = False  # the report + ping went on the current master session
        self._seq = 0
        self._last: Optional[float] = None  # `now` of the latest event that carried it
        self._load = 0.0
        self._from_master: Dict[str, Callable[[dict, float], list]] = {
            "claim-offer": self._offer, "claim-drop": self._claim_drop, "ping": self._ping,
            "welcome": self._ignore, "pong": self._pong, "error": self._master_error,
        }
        self._from_session: Dict[str, Callable[[Session, dict, float], list]] = {
            "ack": self._ack, "kill": self._kill_msg, "release": self._release,
            "pong": self._ignore_s, "error": self._ignore_s,
        }

    # ---------------------------------------------------------- the task table

    def _add(self, task: Task) -> None:
        self.tasks[task.key] = task
        self.by_job.setdefault((task.submitter, task.job, task.attempt), []).append(task.key)

    def _forget(self, task: Task) -> None:
        self.tasks.pop(task.key, None)
        ref = (task.submitter, task.job, task.attempt)
        keys = self.by_job.get(ref)
        if keys is not None:
            if task.key in keys:
                keys.remove(task.key)
            if not keys:
                del self.by_job[ref]

    def _find(self, submitter: str, session: Optional[str], job: str, attempt: int,
              ) -> Tuple[Optional[Task], bool]:
        """(the task of this job run by `session`, whether another session has one)."""
        own, other = None, False
        for key in self.by_job.get((submitter, job, attempt), ()):
            task = self.tasks[key]
            if task.session == session:
                own = task
            else:
                other = True
        return own, other

    # ---------------------------------------------------------- start-up

    def restore_claims(self, saved: object) -> List[str]:
        """Take the claims saved in claims.json; return a warning per one set aside."""
        warnings = []
        if not isinstance(saved, list):
            return ["claims.json is not a list: starting without claims"]
        for c in saved:
            try:
                if not isinstance(c, dict):
                    raise Refused("not an object")
                gpus = c.get("gpus", [])
                if not isinstance(gpus, list) or not all(
                        isinstance(g, int) and not isinstance(g, bool) for g in gpus):
                    raise Refused("bad gpus")
                bound = c.get("session")
                if bound is not None and not (isinstance(bound, str) and _TOKEN.match(bound)):
                    raise Refused("bad session")
                claim = Claim(check_id(c.get("claim"), "claim"),
                              check_id(c.get("submitter"), "submitter"),
                              check_user(c.get("user")), check_count(c.get("cpus"), "cpus"),
                              check_count(c.get("memory"), "memory"), list(gpus),
                              session=bound)
            except Refused as exc:
                warnings.append(f"saved claim {_excerpt(c, 80)} set aside: {exc}")
                continue
            self.claims[claim.claim] = claim
        return warnings

    def recover(self, st: Any, alive: bool, now: float) -> List[Action]:
        """A taskfile read back at start (`alive`: an executor holds it)."""
        spec = st.spec
        key = st.key
        task = Task(key, str(spec.get("submitter", "")), spec.get("session"),
                    str(spec.get("job", "")), _int(spec.get("attempt")),
                    str(spec.get("claim", "")), st.path, str(spec.get("sandbox", "")),
                    created=now, state=st, ident=ident_fields(spec))
        if st.delivered:
            return [Remove(key, st.path, task.sandbox, delivered=False, ident=task.ident)]
        self._add(task)
        actions: List[Action] = []
        if st.finished:
            task.finished_at = _ended_at(st, now)
        elif (st.boot or spec.get("boot")) and (st.boot or spec.get("boot")) != self.boot:
            # an executor of an earlier boot (or none yet: the taskfile was written
            # before the reboot, so its submitter may have run the job elsewhere)
            actions.append(MarkLost(key, st.path, "the node rebooted while the job ran",
                                    None, None))
        elif alive:
            actions.append(Log("info", f"re-adopted running job {key}"))
        elif st.executor_pid is None:
            actions.append(Launch(key, st.path))  # we died between writing it and launching
        else:
            actions.append(self._died(task))
        claim = self.claims.get(task.claim)
        if claim is not None and claim.submitter == task.submitter:
            if not st.finished:
                claim.job = key
            if claim.session is None and task.session is not None:
                # claims.json of a jrs before contract 9, or saved before the binding
                claim.session = task.session
                actions.append(self._save())
        return actions

    # ---------------------------------------------------------- the master

    def hello(self) -> dict:
        cap = self.cap
        return {"type": "node-hello", "name": cap.name, "slots": cap.slots,
                "memory": cap.memory, "gpus": cap.gpus, "attrs": cap.attrs,
                "claims": [dict(c.to_json(), releasing=True) if c.releasing else c.to_json()
                           for c in self.claims.values()]}

    def report(self, now: float, load: float) -> dict:
        self._load = load
        running = 0
        waiting = 0
        oldest: Optional[float] = None
        for t in self.tasks.values():
            if not t.finished:
                running += 1
            else:
                waiting += 1
                if t.finished_at is not None and (oldest is None or t.finished_at < oldest):
                    oldest = t.finished_at
        return {"type": "node-report", "load": load, "running": running,
                "claims": list(self.claims), "waiting": waiting,
                "oldest_wait": round(max(0.0, now - oldest), 3) if oldest is not None else 0}

    def master_up(self) -> None:
        self.master = True

    def master_down(self) -> None:
        self.master = False
        self._asked = False  # the ping is lost with the session: ask the next one

    # ---------------------------------------------------------- back from a stop

    def _clock(self, now: float) -> List[Action]:
        """Note the time of an event; a jump means the node was stopped (the master
        may have declared it lost and its submitters rerun its jobs elsewhere): new
        runs wait until the master confirmed the claims (`_pong`). Running jobs go on
        (the master's claim-drop kills them if it took their claims)."""
        last, self._last = self._last, now
        if last is None or now - last <= self.stall_after or self.unconfirmed is not None:
            return []
        self._seq += 1
        self.unconfirmed = self._seq
        self._asked = False
        return [Log("warning", f"the node was stopped for {now - last:.1f}s: no new job "
                               "starts until the master has confirmed its claims")]

    def _noted(self, now: float) -> List[Action]:
        """`_clock`, and back from a stop the master asked at once: for the events that
        deliver a result (a job's end, an attach), so a result that goes out before the
        master confirmed the claims says so (`claim_gone`). A job that ended while the
        node was stopped is read back before the first tick: with the stop noted only
        at ticks and runs, its result went out as if the claims were confirmed, the
        submitter put its claim to work again, and the master's revocation landed ms
        later: sim revoke 4, 9, 29, 65, 112, 253 of 1-300, a run refused "unknown
        claim" each (issue 12)."""
        out = self._clock(now)
        return out + self._ask(now)

    def _ask(self, now: float) -> List[Action]:
        if self.unconfirmed is None or self._asked or not self.master:
            return []
        self._asked = True
        return [ToMaster(self.report(now, self._load)),
                ToMaster({"type": "ping", "seq": self.unconfirmed})]

    def _pong(self, msg: dict, now: float) -> List[Action]:
        if self.unconfirmed is None or msg.get("seq") != self.unconfirmed:
            return []
        return self._confirmed()

    def _master_error(self, msg: dict, now: float) -> List[Action]:
        # a master of before takes no ping from a node: its error is as good an answer
        # (it comes after the drops of the report too); runs must not wait for good
        if self.unconfirmed is None or msg.get("re") != "ping":
            return []
        return self._confirmed()

    def _confirmed(self) -> List[Action]:
        # every claim-drop the master had for us came before this answer
        self.unconfirmed = None
        out: List[Action] = [Log("info", "the master confirmed the claims: jobs start again")]
        held, self.held = self.held, []
        for t in held:
            self.receiving.discard(t.key)
            if t.sid not in self.sessions:
                out += self.run_aborted(t)
                continue
            t.reason = self._admit(t)
            out += self._reject(t, t.reason) if t.reason is not None else [Prepare(t)]
        return out

    def from_master(self, msg: dict, now: float) -> List[Action]:
        kind = msg.get("type")
        handler = self._from_master.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return [ToMaster(error("unexpected", f"a node does not take {_excerpt(kind)}",
                                   kind if isinstance(kind, str) else None))]
        try:
            return handler(msg, now)
        except Refused as exc:
            return [ToMaster(error("bad-message", str(exc), kind))]

    def _ignore(self, msg: dict, now: float) -> List[Action]:
        return []

    def _ping(self, msg: dict, now: float) -> List[Action]:
        return [ToMaster({"type": "pong", "seq": msg.get("seq")})]

    def free(self) -> Tuple[int, int, List[int]]:
        used_gpus = {g for c in self.claims.values() for g in c.gpus}
        return (self.cap.slots - sum(c.cpus for c in self.claims.values()),
                self.cap.memory - sum(c.memory for c in self.claims.values()),
                [g for g in range(self.cap.gpus) if g not in used_gpus])

    def _offer(self, msg: dict, now: float) -> List[Action]:
        cid = check_id(msg.get("claim"), "claim")
        if cid in self.claims:
            return [ToMaster({"type": "claim-ok", "claim": cid,
                              "gpu_ids": self.claims[cid].gpus})]
        sub = check_id(msg.get("submitter"), "submitter")
        user = check_user(msg.get("user"))
        cpus, mem = check_count(msg.get("cpus"), "cpus"), check_count(msg.get("memory"), "memory")
        gpus = check_count(msg.get("gpus"), "gpus")
        free_cpus, free_mem, free_gpus = self.free()
        if cpus > free_cpus or mem > free_mem or gpus > len(free_gpus):
            return [ToMaster({"type": "claim-refused", "claim": cid,
                              "reason": f"no room: free {free_cpus} slots, {free_mem} MiB, "
                                        f"{len(free_gpus)} GPUs"})]
        self.claims[cid] = Claim(cid, sub, user, cpus, mem, free_gpus[:gpus])
        # claim-ok goes only once claims.json holds the claim (see offer_failed)
        return [SaveClaims(self._claims_json(), cid,
                           {"type": "claim-ok", "claim": cid, "gpu_ids": free_gpus[:gpus]})]

    def offer_failed(self, cid: str, err: str) -> List[Action]:
        """claims.json could not be written for a new claim: refuse it after all."""
        self.claims.pop(cid, None)
        return [Log("warning", f"claim {cid} refused: cannot save it: {err}"),
                ToMaster({"type": "claim-refused", "claim": cid,
                          "reason": f"the node cannot save its claims: {err}"})]

    def save_failed(self, offered: Optional[str], err: str) -> List[Action]:
        """A `SaveClaims` could not be written. claims.json now says something else than
        the claims book (a released claim would come back after a restart), so `tick`
        writes it again each second until `saved`; a new claim is refused at once."""
        out: List[Action] = []
        if not self.unsaved:
            out.append(Log("warning", f"claims.json: cannot save the claims: {err} "
                                      "(trying again each second)"))
        self.unsaved = True
        if offered is not None:
            out += self.offer_failed(offered, err)
        return out

    def saved(self) -> List[Action]:
        """A `SaveClaims` was written: claims.json holds the claims book."""
        if not self.unsaved:
            return []
        self.unsaved = False
        return [Log("info", "claims.json: the claims are saved again")]

    def _claim_drop(self, msg: dict, now: float) -> List[Action]:
        # contract 3: a drop kills only when it says so
        return self.drop_claim(check_id(msg.get("claim"), "claim"), msg.get("kill") is True, now)

    def _claims_json(self) -> list:
        return [c.to_saved() for c in self.claims.values()]

    def _save(self) -> SaveClaims:
        return SaveClaims(self._claims_json())

    def drop_claim(self, cid: str, kill: bool, now: float) -> List[Action]:
        claim = self.claims.get(cid)
        if claim is None:
            return []
        task = self.tasks.get(claim.job) if claim.job else None
        if task is not None and not task.finished:
            claim.releasing = True
            return self._kill(task, now) if kill else []
        del self.claims[cid]
        out: List[Action] = [self._save()]
        if self.master:
            out.append(ToMaster({"type": "claim-released", "claim": cid}))
        return out

    # ---------------------------------------------------------- submitter sessions

    def _visible(self, s: Session, task: Optional[Task]) -> bool:
        return task is not None and task.submitter == s.submitter and task.session == s.session

    def attach(self, sid: int, msg: dict, now: float) -> List[Action]:
        """The first message of a submitter session."""
        if not isinstance(msg, dict) or msg.get("type") != "attach":
            return [ToSession(sid, error("protocol", "the first message must be attach")),
                    CloseSession(sid)]
        if msg.get("token") is None:  # contract 8: no session without its proof
            return [ToSession(sid, error("session", "attach without a session token: "
                                                    "this node needs a newer jrs submit",
                                         "attach")),
                    CloseSession(sid)]
        try:
            sub = check_id(msg.get("submitter"), "submitter")
            s = Session(sid, sub, session_hash(check_token(msg.get("token"))))
            jobs = msg.get("jobs")
            if not isinstance(jobs, list):
                raise Refused("jobs must be a list")
        except Refused as exc:
            return [ToSession(sid, error("bad-message", str(exc), "attach")), CloseSession(sid)]
        self.sessions[sid] = s
        self.bound[(s.submitter, s.session)] = sid
        unknown = []
        for item in jobs:
            if not (isinstance(item, list) and len(item) == 2):
                continue
            try:
                own, _other = self._find(sub, s.session, check_job(item[0]),
                                         check_attempt(item[1]))
            except Refused:
                continue
            if own is None:
                unknown.append(item)
        out: List[Action] = [ToSession(sid, {"type": "attached", "unknown": unknown})]
        out += self._noted(now)  # before the results go: `claim_gone`
        for task in self.tasks.values():
            if self._visible(s, task) and task.finished and task.delivering is None:
                out.append(self._deliver(task, sid))
        return out

    def session_closed(self, sid: int) -> List[Action]:
        s = self.sessions.pop(sid, None)
        if s is not None and self.bound.get((s.submitter, s.session)) == sid:
            del self.bound[(s.submitter, s.session)]
        out: List[Action] = []
        for t in [t for t in self.held if t.sid == sid]:  # held runs of it never start
            self.held.remove(t)
            out += self.run_aborted(t)
        return out

    def from_session(self, sid: int, msg: dict, now: float) -> List[Action]:
        s = self.sessions.get(sid)
        if s is None:
            return []
        kind = msg.get("type")
        handler = self._from_session.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return [ToSession(sid, error("unexpected", f"a node does not take {_excerpt(kind)}",
                                         kind if isinstance(kind, str) else None))]
        try:
            return handler(s, msg, now)
        except _NotYours as exc:
            return [ToSession(sid, error("session", str(exc), kind))]
        except Refused as exc:
            return [ToSession(sid, error("bad-message", str(exc), kind))]

    def _ignore_s(self, s: Session, msg: dict, now: float) -> List[Action]:
        return []

    def _own_task(self, s: Session, msg: dict) -> Optional[Task]:
        """The task an ack/kill names, if this session ran it. Raises Refused (an
        `error`, code "session") when only another session of the submitter id has it."""
        kind = msg.get("type")
        own, other = self._find(s.submitter, s.session, check_job(msg.get("job")),
                                check_attempt(msg.get("attempt")))
        if own is None and other:
            raise _NotYours(f"{kind}: job {msg.get('job')} attempt {msg.get('attempt')} "
                            "belongs to another session")
        return own

    def _ack(self, s: Session, msg: dict, now: float) -> List[Action]:
        task = self._own_task(s, msg)
        if task is None or not task.finished:
            return []
        # Forget it now; dying before the files are gone only means delivering it again.
        self._forget(task)
        return [Remove(task.key, task.path, task.sandbox, delivered=True, ident=task.ident)]

    def _kill_msg(self, s: Session, msg: dict, now: float) -> List[Action]:
        task = self._own_task(s, msg)
        return self._kill(task, now) if task is not None and not task.finished else []

    def _release(self, s: Session, msg: dict, now: float) -> List[Action]:
        claim = self.claims.get(check_id(msg.get("claim"), "claim"))
        if claim is None or claim.submitter != s.submitter:
            return []
        if claim.session is not None and claim.session != s.session:
            raise _NotYours(f"release: claim {claim.claim} belongs to another session")
        return self.drop_claim(claim.claim, False, now)

    # ---------------------------------------------------------- runs

    def run_offered(self, sid: int, msg: dict) -> RunTicket:
        """A `run` header: admit it or say why not (its data is read either way)."""
        job = msg.get("job")
        attempt = msg.get("attempt")
        t = RunTicket(sid, job[:64] if isinstance(job, str) else "",
                      attempt if isinstance(attempt, int) else 0)
        try:
            t.heads = check_headers(msg.get("files"))
        except Refused as exc:
            t.reason, t.fatal = str(exc), True
            return t
        s = self.sessions.get(sid)
        if s is None:
            t.reason = "no attach on this session"
            return t
        try:
            t.job, t.attempt = check_job(job), check_attempt(attempt)
            t.claim = check_id(msg.get("claim"), "claim")
            t.spec = check_spec(msg.get("spec"))
        except Refused as exc:
            t.reason = f"bad job: {exc}"
            return t
        t.submitter, t.session = s.submitter, s.session
        t.key = task_key(s.submitter, s.session, t.job, t.attempt)
        t.box = os.path.join(self.sandbox_dir, t.key)
        t.path = os.path.join(self.tasks_dir, t.key + ".task")
        t.reason = self._admit(t)
        if t.reason is None:
            if t.key in self.receiving:
                t.reason = self._race(t, "this job's input is already arriving on another "
                                         "session")
            else:
                self.receiving.add(t.key)
        return t

    def _admit(self, t: RunTicket) -> Optional[str]:
        """Why this run cannot go on its claim now (None: it can). A refusal because the
        claim went or is taken meanwhile is a race, neither the job's fault nor the
        node's: it says `cause: "claim"`, and the submitter does not count it toward
        the refusals that hold a job."""
        claim = self.claims.get(t.claim)
        if claim is None or claim.submitter != t.submitter:
            return self._race(t, "unknown claim (it may have been dropped)")
        if claim.session is not None and claim.session != t.session:
            return "the claim belongs to another session"
        if claim.releasing:
            return self._race(t, "claim is being released")
        if t.key in self.tasks or self._find(t.submitter, t.session, t.job, t.attempt)[0]:
            return "duplicate"
        busy = self.tasks.get(claim.job) if claim.job else None
        if busy is not None and not busy.finished:
            return self._race(t, "the claim is busy with another job")
        if t.spec["cpus"] > claim.cpus:
            return f"the job asks for {t.spec['cpus']} cpus; the claim has {claim.cpus}"
        t.user = claim.user
        return None

    @staticmethod
    def _race(t: RunTicket, reason: str) -> str:
        t.cause = "claim"
        return reason

    def box_made(self, t: RunTicket) -> None:
        """The shell made the ticket's sandbox directory."""
        t.made_box = True

    def refuse(self, t: RunTicket, reason: str) -> None:
        """The shell could not receive the run (mkdir, a write): refuse it with `reason`
        (the node's own trouble: the submitter runs the job elsewhere, not blaming it)."""
        if t.reason is None:
            t.reason, t.cause = reason, "node"

    def run_aborted(self, t: RunTicket) -> List[Action]:
        """The session ended while the run's data was arriving."""
        self.receiving.discard(t.key)
        return [RemoveBox(t.box, t.ident)] if t.made_box else []

    def run_received(self, t: RunTicket, now: float) -> List[Action]:
        """All of the run's data arrived (into the sandbox, or dropped if refused)."""
        out = self._clock(now)
        if t.fatal:
            out.append(ToSession(t.sid, error("bad-message", t.reason or "bad run", "run")))
            return out
        if t.reason is None:
            t.reason = self._admit(t)  # the claim may have gone while the data arrived
            if t.reason is None and self.unconfirmed is not None:
                self.held.append(t)  # its key stays in `receiving` until `_pong`
                return out + self._ask(now)
            self.receiving.discard(t.key)
        elif t.reason == "duplicate":  # a run sent again (a resumed submitter): it runs
            if t.sid in self.sessions and self._find(t.submitter, t.session, t.job,
                                                     t.attempt)[0] is not None:
                out.append(ToSession(t.sid, {"type": "started", "job": t.job,
                                             "attempt": t.attempt}))
                return out
            t.reason = "refused"
        if t.reason is not None:
            return out + self._reject(t, t.reason)
        out.append(Prepare(t))
        return out

    def _reject(self, t: RunTicket, reason: str) -> List[Action]:
        out: List[Action] = [RemoveBox(t.box, t.ident)] if t.made_box else []
        out.append(self._rejected(t, reason))
        return out

    def _rejected(self, t: RunTicket, reason: str) -> ToSession:
        msg = {"type": "rejected", "job": t.job, "attempt": t.attempt, "reason": reason}
        if t.cause is not None:
            msg["cause"] = t.cause
        return ToSession(t.sid, msg)

    def task_spec(self, t: RunTicket, ident: Optional[dict], snapshot: dict, now: float,
                  home: Optional[str] = None) -> dict:
        """The taskfile spec of an admitted run. `ident`: the identity and containment
        fields for the executor (uid, gid, groups, run_as, ...; None: run as the node)."""
        spec, box = t.spec, t.box
        claim = self.claims.get(t.claim)
        gpus = claim.gpus if claim is not None else []
        cpus = claim.cpus if claim is not None else 1
        shared = spec["shared_fs"]
        exe = t.exe_in_box or spec["executable"]
        cwd = spec["iwd"] if shared else box
        env = sandbox.job_environment(spec["environment"], spec["getenv"], box, t.job,
                                      cpus, gpus, home)
        if shared:
            stdin = spec["input"] if isinstance(spec["input"], str) else None
            stdout, stderr = spec["output"], spec["error"]
        else:
            # no `output`/`error` in the submit file: HTCondor discards the stream, so do we
            stdin = os.path.join(box, sandbox.STDIN) if spec["input"] else None
            stdout = os.path.join(box, sandbox.STDOUT) if spec["output"] else None
            stderr = os.path.join(box, sandbox.STDERR) if spec["error"] else None
        out = {"job": t.job, "attempt": t.attempt, "submitter": t.submitter,
               "session": t.session, "claim": t.claim, "node": self.cap.name,
               "argv": [exe] + spec["arguments"], "cwd": cwd, "env": env, "stdin": stdin,
               "stdout": stdout, "stderr": stderr, "sandbox": box, "shared_fs": shared,
               "transfer_output_files": spec["transfer_output_files"],
               "when_to_transfer_output": spec["when_to_transfer_output"],
               "snapshot": snapshot, "kill_grace": self.kill_grace, "notify": self.notify,
               "created": now, "boot": self.boot}
        if ident is not None:
            out.update(ident)
            if ident.get("uid") is not None and ident.get("run_as"):
                env["USER"] = env["LOGNAME"] = str(ident["run_as"])
        return out

    def created(self, t: RunTicket, err: Optional[str], now: float) -> List[Action]:
        """The shell did (or failed) the `Prepare` I/O; on success the run becomes a task."""
        if err is not None:
            t.cause = "node"
            return [Log("warning", f"job {t.key} refused: {err}"),
                    Remove(t.key, t.path, t.box, delivered=False, ident=t.ident),
                    self._rejected(t, f"the node cannot take the job: {err}")]
        reason = self._admit(t)
        if reason is not None:  # another session took the claim meanwhile
            return [Remove(t.key, t.path, t.box, delivered=False, ident=t.ident),
                    self._rejected(t, reason)]
        task = Task(t.key, t.submitter, t.session, t.job, t.attempt, t.claim, t.path, t.box,
                    created=now, announce=True, ident=t.ident)
        self._add(task)
        claim = self.claims[t.claim]
        claim.job = t.key
        out: List[Action] = [Launch(t.key, t.path), AnnounceLater(t.key, STARTED_AFTER)]
        if claim.session is None:  # the first run on it binds the claim (contract 9)
            claim.session = t.session
            out.insert(0, self._save())
        return out

    def launch_failed(self, key: str, err: str, now: float) -> List[Action]:
        """`Launch` could not be done: the run is refused and its claim free again."""
        task = self.tasks.get(key)
        if task is None:
            return []
        self._forget(task)
        out: List[Action] = [Log("warning", f"job {key} could not be launched: {err}"),
                             Remove(key, task.path, task.sandbox, delivered=False,
                                    ident=task.ident)]
        out += self._free_claim(task, now)
        sid = self.bound.get((task.submitter, task.session))
        if sid is not None:
            out.append(ToSession(sid, {"type": "rejected", "job": task.job,
                                       "attempt": task.attempt, "cause": "node",
                                       "reason": f"the node cannot start the job: {err}"}))
        return out

    def announce(self, key: str) -> List[Action]:
        task = self.tasks.get(key)
        if task is None or not task.announce or task.finished:
            return []
        task.announce = False
        sid = self.bound.get((task.submitter, task.session))
        if sid is None:
            return []
        return [ToSession(sid, {"type": "started", "job": task.job, "attempt": task.attempt})]

    # ---------------------------------------------------------- job lifetimes

    def checks(self) -> List[Tuple[str, str]]:
        """(key, taskfile) of every job not known to have ended: probe these."""
        return [(t.key, t.path) for t in self.tasks.values() if not t.finished]

    def probe(self, key: str, alive: bool, st: Any, now: float) -> List[Action]:
        """A liveness probe of the job's executor; `st` is the taskfile read when not alive."""
        task = self.tasks.get(key)
        if task is None or task.finished:
            return []
        if alive:
            if task.kill_at is not None and now - task.kill_at >= REKILL_EVERY:
                return self._kill(task, now)
            return []
        if st is None:
            return []
        task.state = st
        if st.finished:
            return self._ended(task, now)
        if st.executor_pid is None:
            if now - task.created > LAUNCH_GRACE:
                task.created = now
                return [Launch(key, task.path)]
            return []
        return [self._died(task)]

    def _died(self, task: Task) -> MarkLost:
        st = task.state
        return MarkLost(task.key, task.path, f"its executor (pid {st.executor_pid}) died",
                        st.pid, st.pid_start, reap=True)

    def loaded(self, key: str, st: Any, now: float) -> List[Action]:
        """The taskfile was read again (an executor's notice, or after MarkLost)."""
        task = self.tasks.get(key)
        if task is None or task.finished:
            return []
        task.state = st
        return self._ended(task, now) if st.finished else []

    def _ended(self, task: Task, now: float) -> List[Action]:
        task.announce = False  # "finished" says it all
        task.finished_at = _ended_at(task.state, now)
        out = self._noted(now)  # back from a stop: its result says the claim may be gone
        out += self._free_claim(task, now)
        sid = self.bound.get((task.submitter, task.session))
        if sid is not None and task.delivering is None:
            out.append(self._deliver(task, sid))
        return out

    def _free_claim(self, task: Task, now: float) -> List[Action]:
        claim = self.claims.get(task.claim)
        if claim is None or claim.job != task.key:
            return []
        claim.job = None
        return self.drop_claim(claim.claim, False, now) if claim.releasing else []

    def _kill(self, task: Task, now: float) -> List[Action]:
        task.kill_at = now
        return [Kill(task.key, task.path)]

    # ---------------------------------------------------------- delivery

    def claim_gone(self, task: Task) -> bool:
        """Whether the submitter must send no run on the claim `task` ran on: this node
        no longer holds it (dropped with the job: a claim released while its job ran
        goes when it ends; or dropped since the job ended, before the result went
        out), or cannot tell yet: back from a stop, the master has not confirmed the
        claims (it may have declared the node lost and revoked them; its claim-drops
        come before its pong). A run sent on such a claim waits for the confirmation
        and is refused "unknown claim" if it went: one wasted input transfer and a
        rerun each (issue 12). Retired instead, the claim is released and another one
        granted: a few round trips, and only after a stop."""
        claim = self.claims.get(task.claim)
        return (claim is None or claim.submitter != task.submitter or claim.releasing
                or self.unconfirmed is not None)

    def finished_msg(self, task: Task, result: dict, files: list) -> dict:
        """The `finished` of `task`, built by the core for both node shells as it goes
        (the real daemon after its output scan, which can take seconds), so
        `claim_gone: true` says what holds then (`claim_gone`): the submitter retires
        the claim instead of sending its next job there. Left out while the claim is
        held: the message an older submitter knows (it would drop the field anyway)."""
        msg = {"type": "finished", "job": task.job, "attempt": task.attempt,
               "result": result, "files": files}
        if self.claim_gone(task):
            msg["claim_gone"] = True
        return msg

    def _deliver(self, task: Task, sid: int) -> Deliver:
        task.delivering = sid
        return Deliver(sid, task.key)

    def delivery_done(self, key: str, sid: int, ok: bool) -> List[Action]:
        """A delivery ended. If another session took over meanwhile (the old one was
        half-open and drained slowly), deliver again there."""
        task = self.tasks.get(key)
        if task is None or task.delivering != sid:
            return []
        task.delivering = None
        current = self.bound.get((task.submitter, task.session))
        if current is not None and current != sid and task.finished:
            return [self._deliver(task, current)]
        return []

    def tick(self, now: float) -> List[Action]:
        """Once a second: claims.json written again if a write failed; results nobody
        came for within the retention time go; back from a stop, the master is asked to
        confirm the claims before a new run starts."""
        out: List[Action] = self._clock(now)
        out += self._ask(now)
        if self.unsaved:
            out.append(self._save())
        for task in list(self.tasks.values()):
            if not task.finished or task.delivering is not None or task.finished_at is None:
                continue
            age = now - task.finished_at
            if age > self.retain:
                self._forget(task)
                out.append(Log("warning", f"result of job {task.job} attempt {task.attempt} "
                                          f"(submitter {task.submitter}) was not collected "
                                          f"within {_duration(self.retain)}: removed"))
                out.append(Remove(task.key, task.path, task.sandbox, delivered=False,
                                  ident=task.ident))
        return out

    def task_of(self, key: str) -> Optional[Task]:
        return self.tasks.get(key)


# ------------------------------------------------------------------ results

def result_of(st: Any, node: str) -> dict:
    """The `finished` result of a finished taskfile state (files aside)."""
    end = st.exit or {}
    result = {"node": node, "exit_code": end.get("code"), "signal": end.get("signal"),
              "rusage": end.get("rusage"), "started": end.get("started", st.running_since),
              "ended": end.get("ended"), "removed": st.killed is not None}
    if end.get("e") == "exec-failed":
        result["reason"] = end.get("reason")
        result["errno"] = end.get("errno")
        result["exec_failed"] = True
    elif end.get("e") == "lost":
        result["reason"] = end.get("reason")
        result["lost"] = True
    return result


@dataclass
class OutputPlan:
    """Which files of a finished job go back (sandbox.collect does the finding): the
    std streams it has, and, when `transfer`, its outputs (all but `skip`)."""
    transfer: bool
    skip: frozenset
    report_missing: bool


def output_plan(st: Any) -> Optional[OutputPlan]:
    """None: nothing comes back from the sandbox (shared file system)."""
    spec = st.spec
    if spec.get("shared_fs") or not spec.get("sandbox"):
        return None
    end = st.exit or {}
    transfer = spec.get("when_to_transfer_output") != "ON_SUCCESS" or end.get("code") == 0
    exe = os.path.basename(str((spec.get("argv") or [""])[0]))
    return OutputPlan(transfer, frozenset({exe}), end.get("e") == "exit")


def add_outputs(result: dict, plan: OutputPlan, missing: list, refused: dict,
                over: Optional[str]) -> dict:
    """What the output collection found wrong, in the result (bounded)."""
    if missing and plan.report_missing:
        result["missing"] = [str(m)[:200] for m in missing[:1000]]
    if refused:
        result["refused"] = {str(k)[:200]: str(v)[:200] for k, v in list(refused.items())[:100]}
    if over:
        result["outputs_over_limit"] = str(over)[:200]
    return result


def ident_fields(spec: dict) -> dict:
    """The identity fields of a taskfile spec (to release a per-job uid)."""
    return {"uid": spec.get("uid"), "per_job_uid": bool(spec.get("per_job_uid"))}


def _ended_at(st: Any, now: float) -> float:
    end = st.exit or {}
    for k in ("ended", "t"):
        v = end.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return now


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_duration(text: str) -> float:
    """`7d`, `12h`, `30m`, `5s` or plain seconds -> seconds (ValueError if not)."""
    m = re.match(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*\Z", text or "")
    if not m:
        raise ValueError("want a duration like 7d, 12h, 30m or 5s")
    value = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if value <= 0:
        raise ValueError("want a duration above 0")
    return value
