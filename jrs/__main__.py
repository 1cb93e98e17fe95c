"""JRS, the Job-Running System: run command-line jobs across Linux machines.

Usage:
  jrs master  [-c DIR] [--listen=ADDR] [--state=DIR] [-v]
  jrs node    [-c DIR] [--listen=ADDR] [--state=DIR] [--slots=N] [--memory=MB] [--name=NAME]
              [--execute=DIR] [--job-uids=RANGE] [--same-user-accounts] [--root-groups=LIST]
              [--job-pids=N] [--cgroup=PATH] [--retain=DURATION] [-v]
  jrs executor TASKFILE
  jrs submit  [-c DIR | --local] [--dry-run] [--no-progress] [--fresh] [--state=DIR] FILE
  jrs status  [-c DIR] [--json]
  jrs q       [-c DIR] [--json]
  jrs rm      [-c DIR] JOBID...
  jrs keygen  [-c DIR] [--force]
  jrs roles   [-c DIR] [--name=NAME] [ROLE]
  jrs selftest
  jrs -h | --help | --version

Commands:
  master     serve the pool: share node slots among submitters (port 7083)
  node       run jobs on this machine (port 7082)
  executor   own one job and record it in its taskfile (started by `node`)
  submit     run the jobs of an HTCondor submit file and show their progress
  status     show the nodes of the pool, like condor_status
  q          show the clusters being run, like condor_q
  rm         remove clusters (CLUSTER) or single jobs (CLUSTER.PROC)
  keygen     write a new shared secret into the configuration directory
  roles      show which daemons (master, node) this host runs
  selftest   check that this file runs here (native crypto included)

Options:
  -c DIR, --config=DIR  configuration directory; default: $JRS_CONFIG, else the
                        directory of jrs.pyz when it holds node.master, else /etc/jrs
  --listen=ADDR         address to listen on, host[:port]
  --state=DIR           directory for state that must survive restarts
  --slots=N             job slots on this node (default: its CPU count)
  --memory=MB           memory for jobs on this node in MiB (default: MemTotal)
  --name=NAME           this node's entry in node.list (default: found by address)
  --execute=DIR         where a node makes job sandboxes (default: /var/lib/jrs/execute-PORT
                        as root, else STATE/sandbox)
  --job-uids=RANGE      FIRST-LAST: the uids a root node gives jobs, one per job
                        (default 1879048192-1879113727)
  --same-user-accounts  run a job as the submitter's same-named account when it is an
                        ordinary one (trusts every secret holder to be who they say)
  --root-groups=LIST    groups whose members never run jobs under their own account
                        (default root,sudo,wheel,adm,docker,lxd,disk,shadow,kvm)
  --job-pids=N          processes a job may have at once (default 4096)
  --cgroup=PATH         the cgroup below which a root node makes its jobs' cgroups
                        (default: its own; `none`: no cgroups)
  --retain=DURATION     keep a result nobody collects this long, then remove it:
                        7d (the default), 12h, 30m, 5s
  --local               run on an embedded one-machine cluster for this submit only
  --dry-run             print the expanded jobs as JSON lines; contact no server
  --no-progress         do not show the live status line
  --fresh               ignore a journal left by an earlier run of this submit
  --json                machine-readable output
  --force               replace an existing secret
  -v, --verbose         log more
  -h, --help            show this help (`jrs COMMAND --help` for one command)
  --version             show the version

Environment:
  JRS_CONFIG           the configuration directory (see -c)
  JRS_CACHE            where jrs.pyz unpacks itself (default ~/.cache/jrs)
  JRS_CONNECT_TIMEOUT  seconds submit and the tools wait for the master (15)
  JRS_NODE_TIMEOUT     seconds of silence before the master declares a node dead (6)
  JRS_OFFER_TIMEOUT    seconds the master waits for a node to answer a claim offer
                       before it withdraws the offer and frees the slot (10)
  JRS_SUBMITTER_LEASE  seconds the master remembers a disconnected submitter (300)
  JRS_MASTER_TICK      seconds between the master's rounds: matching, time-outs, and
                       a round's evaluation budget for each submitter (1; tests of
                       many rounds set it shorter)
  JRS_MASTER_SESSIONS_PER_HOST     submitter sessions the master lets one host
                       (an IPv4 address; an IPv6 /64, or an address of the
                       master's own LANs) hold open at once (64)
  JRS_MASTER_REQUESTS_PER_SESSION  request entries one demand may list (1024)
  JRS_MASTER_REQUESTS_PER_HOST     request entries one host's sessions may hold (16384)
  JRS_MASTER_DEMAND_RATE, JRS_MASTER_DEMAND_BURST  a submitter session's demand
                       budget: bytes a second (524288) and at most (4194304); a
                       demand costs its bytes + JRS_MASTER_DEMAND_MESSAGE_COST (512)
                       + JRS_MASTER_DEMAND_ENTRY_COST (2048) per request entry; over
                       it the newest demand waits, and is applied when it refills;
                       every other submitter message (progress, release, ...) costs
                       its bytes + 512 + JRS_MASTER_PROGRESS_ENTRY_COST (256) per
                       cluster entry, a data frame its bytes + 512, and over it the
                       session is not read until then
  JRS_MASTER_HOST_DEMAND_RATE, JRS_MASTER_HOST_DEMAND_BURST  the same budget shared
                       by all sessions of one host (2097152, 8388608)
  JRS_MASTER_NODE_RATE, JRS_MASTER_NODE_BURST  a node session's budget: bytes a
                       second (4194304) and at most (16777216); every frame costs
                       its bytes + JRS_MASTER_NODE_MESSAGE_COST (512) +
                       JRS_MASTER_NODE_CLAIM_COST (64) per claim it lists (a
                       refused one four messages, a data frame its bytes + 512);
                       over it the session is not read until then
  JRS_MASTER_HOST_NODE_RATE, JRS_MASTER_HOST_NODE_BURST  the same for all node
                       sessions of one host (8388608, 33554432)
  JRS_MASTER_SESSION_COST, JRS_MASTER_NODE_SESSION_COST  what opening a submitter
                       (65536) or node (262144) session costs its host's budget
  JRS_MASTER_TOOL_COST, JRS_MASTER_TOOL_ENTRY_COST  what a status, q or rm costs its
                       host's demand budget (65536, + 256 per node, submitter or
                       cluster it lists; at most half a second of the host's rate)
  JRS_PEER_TIMEOUT     seconds before a connection to a vanished peer is given up (20)
  JRS_NODE_GIVE_UP     seconds submit keeps trying a node it cannot reach, or waits
                       for a node to answer the kill of a run the master revoked,
                       before it reruns those jobs elsewhere (20)
  JRS_MAX_TRANSFER_OUTPUT_MB  per-job cap on the bytes a job returns (none)
  JRS_SCAN_EVERY       seconds between a root node's scans for world-writable
                       directories a job's uid may leave files in (1800)
  JRS_KILL_GRACE       seconds a node gives a job it kills (removed, its claim
                       revoked) between TERM and KILL (5)
  JRS_DEBUG=1          submit logs what it does; JRS_TRACE=1: every role prints
                       one timestamped line per message sent or received

Exit status: 0 success, 1 some jobs failed, 2 bad input or configuration,
3 the cluster cannot be reached or refuses our secret.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable  # not typing: it costs ~4 ms of start-up

from . import __version__
from .errors import EXIT_USAGE, JrsError

COMMAND_HELP = {
    "master": """Serve the pool: track nodes, grant claims to submitters, share slots fairly.

Usage: jrs master [-c DIR] [--listen=ADDR] [--state=DIR] [-v]

Listens on the address in node.master (default port 7083) unless --listen says
otherwise. Keeps only soft state: a restarted master rebuilds the pool.
What one host may hold and send is bounded (JRS_MASTER_* in `jrs --help`): past
a limit the peer gets an error naming it and nothing of that message is applied.
At most 32 authenticated connections of one host (1,024 in all) may wait for
their first message; past that the one waiting the longest is closed.

Example:
  jrs master -c /etc/jrs --state=/var/lib/jrs/master
""",
    "node": """Run jobs on this machine for submitters holding a claim from the master.

Usage: jrs node [-c DIR] [--listen=ADDR] [--state=DIR] [--slots=N] [--memory=MB]
                [--name=NAME] [--execute=DIR] [--job-uids=RANGE] [--same-user-accounts]
                [--root-groups=LIST] [--job-pids=N] [--cgroup=PATH] [--retain=DURATION]
                [-v]

Finds its own node.list entry by --name, else --listen, else this host's names
and addresses. Jobs survive `kill -9` of this daemon: each has an executor
process and a taskfile under --state (default /var/lib/jrs/node-PORT as root,
else ~/.local/state/jrs/node-PORT; 0700). Sandboxes live in --execute (0711).
Run as root, every job runs under a uid of its own from --job-uids (matching
gid, no groups, USER jrs-UID, HOME its sandbox), reclaimed when nothing of it is
left; with --same-user-accounts, as the submitter's account of the same name
when that is not root, not in group 0 or --root-groups, and not a system
account (uid below UID_MIN). Never as root. Each job gets a cgroup below the
node's own (or --cgroup's; `none`: no cgroups). Run as another user, jobs run as
that user.
A finished job's result (its sandbox and taskfile) waits for its submitter
to collect it; one not collected within --retain (default 7d; also 12h, 30m,
5s) is removed and logged. `jrs status` shows per node how many results wait
and the oldest one's age. A result carries at most 100,000 files and 8 MiB of
their names (else its job is held, code 33). At most 32 authenticated
connections of one host (1,024 in all, at most a quarter of the open-file
limit) may wait for their first message; past that the oldest is closed.
A submitter session is read within 2,000 messages a second after 10,000 (4,000
after 20,000 for one host): a message costs one plus one per 8 KiB of it and an
eighth per file header it lists, a data frame an eighth plus one a MiB, a
refused frame four plus its bytes, the files made for a run one per 50 us of
CPU they took; past that the session waits, and it is logged. A file sent to
or from a node is at most 1 TiB less a byte.

Example:
  jrs node -c /etc/jrs --state=/var/lib/jrs/node --slots=16
""",
    "executor": """Own one job: start it, wait for it and record everything in its taskfile.

Usage: jrs executor TASKFILE

Normally started by `jrs node`; runs by hand too on an existing taskfile.

Example:
  jrs executor /var/lib/jrs/node/tasks/17.3.task
""",
    "submit": """Run the jobs of an HTCondor submit file and show their progress.

Usage: jrs submit [-c DIR | --local] [--dry-run] [--no-progress] [--fresh]
                  [--state=DIR] FILE

--dry-run prints one JSON object per job (the expansion HTCondor 24.0 would
make: queue variables named like commands set them, an empty expansion is
unset, HTCondor's spellings, synonyms and predefined macros; see the README,
"The submit language") without contacting any server. Commands JRS does not
implement are named on stderr, one line each (FILE:LINE: warning: ...), by a
dry run and a run alike. --local runs the jobs on a throw-away cluster of this
machine alone (all cores).

The submit process is the queue of its jobs. It expands FILE once and
journals the run in --state (default: beside FILE as .FILE.jrs, mode 0600,
else ~/.local/state/jrs/submit); killed (even with kill -9) and run again with
the same command it resumes: finished jobs are not rerun and jobs still running
are re-attached and collected. --fresh starts over. Ctrl-C removes the jobs;
SIGTERM and SIGHUP leave them running and the journal in place (rerun to
resume; --local's cluster ends with the submit and its running jobs with it: the
rerun keeps the finished ones and runs the rest again). Outputs land only where
the job asked for them, never through a symlink; over 100,000 files or
JRS_MAX_TRANSFER_OUTPUT_MB a job is held.

Exit status: 0 all succeeded, 1 some failed, were held or removed, 2 bad submit
file, 3 cluster unreachable, 4 internal error or a damaged job spool (journal
kept, the jobs left running: rerun to resume),
129/143 left running on SIGHUP/SIGTERM.

Examples:
  jrs submit --dry-run sweep.condor
  jrs submit --local examples/sweep.condor
  jrs submit -c /etc/jrs sweep.condor
""",
    "status": """Show the nodes of the pool: state, slots used/total, memory, load, results
waiting on the node for their submitter (WAITING) and how long the oldest has waited
(OLDEST), claims per user. --json has them as results_waiting and oldest_result_age
(seconds); both are null for a node that does not report them.

Usage: jrs status [-c DIR] [--json]

Example:
  jrs status --json
""",
    "q": """Show the clusters being run: submitter, user, host, idle/running/done/failed.

Usage: jrs q [-c DIR] [--json]

Example:
  jrs q
""",
    "rm": """Remove whole clusters (CLUSTER) or single jobs (CLUSTER.PROC).

Usage: jrs rm [-c DIR] JOBID...

Example:
  jrs rm 17 18.4
""",
    "keygen": """Write a new shared secret (mode 0600) into the configuration directory.

Usage: jrs keygen [-c DIR] [--force]

Copy the file to every machine of the cluster; it is the only key to it.

Example:
  jrs keygen -c /etc/jrs
""",
    "roles": """Show which daemons this host runs: master, node, both or none.

Usage: jrs roles [-c DIR] [--name=NAME] [ROLE]

This host is the master when node.master names it, and a node when one line of
node.list does: an exact match on its host name, FQDN or one of its addresses
(or on --name). Prints one line per daemon. With ROLE (master or node), exits 0
when this host runs it and 1 when not; the init script and the systemd units
ask this before starting anything.

Example:
  jrs roles -c /etc/jrs node
""",
    "selftest": """Check that this jrs.pyz works on this machine, native crypto included.

Usage: jrs selftest

Example:
  python3 jrs.pyz selftest
""",
}

# command -> "module:function"; modules are imported only when used, so a
# command never pays for what it does not need (the executor skips crypto).
COMMANDS = {
    "master": "jrs.roles.master:main",
    "node": "jrs.roles.node:main",
    "executor": "jrs.roles.executor:main",
    "submit": "jrs.roles.submit:main",
    "status": "jrs.roles.tools:status",
    "q": "jrs.roles.tools:queue",
    "rm": "jrs.roles.tools:remove",
    "keygen": "jrs.roles.tools:keygen",
    "roles": "jrs.roles.hostroles:main",
    "selftest": "jrs.roles.tools:selftest",
}


def usage_for(command: str) -> str:
    """The usage text with only `command`'s own usage lines (all of it for no command).

    docopt tries every usage pattern against argv: the whole text costs 7-11 ms per
    start, one command's lines ~1 ms. The Commands and Options sections stay, so
    option descriptions and defaults are the same; a wrong argv still gets the
    command's own usage in its error."""
    if command not in COMMANDS:
        return __doc__
    head, sep, rest = __doc__.partition("\nCommands:")
    lines, keep = [], False
    for line in head.split("\n"):
        words = line.split()
        if words[:1] == ["jrs"]:
            keep = words[1:2] == [command]
        elif not line.startswith("  "):  # "Usage:", the summary above it, blank lines
            keep = False
        if keep:
            lines.append(line)
    return "Usage:\n" + "\n".join(lines) + "\n" + sep + rest


def parse_args(argv: list[str]) -> dict:
    """docopt over the usage text above; usage errors exit with status 2."""
    from docopt import DocoptExit, docopt

    try:
        return docopt(usage_for(argv[0] if argv else ""), argv=argv,
                      version=f"jrs {__version__}")
    except DocoptExit as exc:
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(EXIT_USAGE)


def _command_of(args: dict) -> str:
    return next(name for name in COMMANDS if args.get(name))


def _handler(command: str) -> Callable[[dict], int | None]:
    module, func = COMMANDS[command].split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    return _main(sys.argv[1:] if argv is None else argv)[0]


def _main(argv: list[str]) -> tuple[int, bool]:
    """The exit status, and whether the process may leave without the interpreter's
    teardown (`run`): decided from what docopt parsed, not from argv's strings."""
    if argv == ["--version"]:  # fast path: no docopt import for the most common probe
        print(f"jrs {__version__}")
        return 0, True
    if len(argv) >= 2 and argv[0] in COMMAND_HELP and ("-h" in argv or "--help" in argv):
        sys.stdout.write(COMMAND_HELP[argv[0]])
        return 0, True
    args = parse_args(argv)
    command = _command_of(args)
    fast = _exits_fast(command, args)
    try:
        status = _handler(command)(args)
    except JrsError as exc:
        sys.stderr.write(f"jrs {command}: {exc}\n")
        return exc.exit_status, fast
    except KeyboardInterrupt:
        return 130, fast
    except BrokenPipeError:
        return 0, fast
    return status or 0, fast


# Long-lived roles, and a submit that runs its own master and node inside the process:
# they leave through the normal interpreter exit, which joins worker threads.
_TEARDOWN_ROLES = ("master", "node", "executor")


def _exits_fast(command: str, args: dict) -> bool:
    """`args` as docopt parsed them: `submit --loc F` is `--local` (docopt takes a
    unique prefix), while `submit -c --local F` or `--state --local` name a directory
    called --local, so a string test of argv gets both wrong."""
    return command not in _TEARDOWN_ROLES and not args.get("--local")


def run() -> None:
    """The process entry (the zipapp's shim and `python -m jrs`): main(), then exit.

    A short command (submit, status, q, rm, ...) ends with os._exit once stdio and
    logging are flushed. Tearing the interpreter down frees every module and object,
    ~25-30 ms of CPU after a submit: a sixth of a one-job submit's wall time, for
    nothing. Nothing is lost by skipping it: every file these commands write (journal,
    spool, event log, outputs) is a raw descriptor written before main() returns, no
    role registers atexit work, and no thread is left running."""
    status, fast = _main(sys.argv[1:])
    if not fast:
        sys.exit(status)
    import logging
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: what was lost is lost either way
            pass
    os._exit(status)


if __name__ == "__main__":
    run()
