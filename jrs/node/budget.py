"""How fast a node reads the messages of its submitter sessions.

An attached session is a secret holder's, and the secret makes its holder an
operator, not the owner of the node's CPU: one session sending `ack`s or unknown
types as fast as it could took 40 % of a node's core (R9). So each session and each
source host (`hosts.host_key`) has a token bucket of messages; a message takes one
token, and a session whose bucket or host is a batch in debt is not read until the
debt is paid (nothing is dropped: the sender waits, as TCP makes it). The data frames
of a transfer are charged too, by `data_cost` (R10: uncharged, one `run` announcing
1 TiB and then 1-byte frames took 54 % of a node's core).

A message costs more the more it carries (`message_cost`; a `run` was one message
however big its JSON, up to the wire's 16 MiB, and however many file headers it listed,
up to 100,000: runs of 100,000 empty files, refused, took a node's whole core), and so
does the CPU the node spends creating the files of a run it took (`work_cost`).

An honest submitter sends a `run` and an `ack` per job and a `kill` per removal: the
rate is ~1,000 jobs a second from one submitter to one node (a node of 64 slots
finishing a job a second on each sees ~130 messages a second); a resume's burst of
acks is what `burst` is for. Flooded, a session costs the node ~10 % of a core.

Pure: the shell gives the time and sleeps for what `charge` returns.
"""

from __future__ import annotations

from typing import Hashable, Optional

RATE = 2000.0  # messages a second, one session
BURST = 10000.0
HOST_RATE = 4000.0  # ... all sessions of one host
HOST_BURST = 20000.0
BATCH = 64.0  # a debt smaller than this is let run on (a wake-up per message costs more)
REFUSED_COST = 4.0  # a frame the wire refuses and answers with an error (R10)
DATA_FRAME_COST = 1 / 8  # a data frame, whatever its size (see data_cost) ...
DATA_BYTES_PER_MESSAGE = float(1 << 20)  # ... plus a message's worth per MiB it carries
WASTED_PER_MIB = 50.0  # ... or this many, a MiB read to nowhere (see data_cost)
MESSAGE_BYTES = 8192.0  # a message's JSON: a message's worth per 8 KiB (see message_cost)
FILE_COST = 1 / 8  # a file header a run lists
UNIT_COST = 1 / 100  # a value or key of a message's JSON (`connection.json_units`)
# a session opened (its handshake, its attach, its end): measured ~0.74 ms of the node's
# CPU for one that attaches and closes; 40 messages' worth (2 ms), so a host opening and
# closing sessions as fast as it could (81 % of a core, R12) opens at most 100 a second
# after a burst of 500, ~7 %. An honest submitter opens one, and one per reconnect
SESSION_COST = 40.0
MESSAGE_CPU = 50e-6  # seconds of the node's CPU a message's worth stands for (work_cost)
HOSTS_KEPT = 4096  # host buckets past this are pruned of full ones with no session


def data_cost(frames: int, nbytes: int, wasted: int = 0) -> float:
    """What `frames` data frames carrying `nbytes` bytes in all cost, in messages.

    A frame costs the node its opening, its event and a write whatever it carries, ~5
    us against ~50 us for a message (R10: 390,000 frames of 1 byte in 3.5 s, 54 % of
    a core): an eighth of a message each bounds a flood of tiny frames to 16,000 a
    second, ~8 % of a core, like the message flood. Our own senders send 256 KiB frames
    (`files.CHUNK`, the last of a file shorter), so an honest transfer pays the frame
    term once per 256 KiB: a 64 MiB input costs 32 + 64 = 96 messages, 1 % of the
    burst, and a run of 10,000 small files 1,250 (creating them costs the node more).
    The bytes term, a message per MiB, makes a frame's cost grow with what it carries
    but is not the bound on bytes: decrypting and writing them is what a transfer is
    for, and at 256 KiB frames a session may still move ~1.3 GiB/s (5,333 frames of
    0.375 messages each at 2,000 a second), above a 10 GbE link; what bytes a run
    may announce is bounded by its file headers (1 TiB a file).

    `wasted` of the bytes went nowhere: the data of a run the node refused (read to
    nowhere) or the wire did (swallowed). Receiving a MiB costs the node ~2.5 ms
    (measured in the daemon: 29 % of a core at 115 MiB/s; its decryption alone ~1.1
    ms, in frames of 256 KiB or 16 MiB alike), 50 messages' worth, and those are
    charged at that (WASTED_PER_MIB): a refused run announcing 1 TiB, then frames of
    16 MiB, took 45-56 % of a node's core at a message a MiB (R11), the rate's ~10 %
    now (2,000 messages a second, 40 MiB/s). An accepted run's data is what the run
    asked for and stays at a message a MiB, ~1/50 of its CPU: charged at its cost, one
    submitter's inputs to one node could not pass 40 MiB/s. Its bytes are bounded by
    its headers (each charged), and it needs a claim the master granted."""
    return (frames * DATA_FRAME_COST + nbytes / DATA_BYTES_PER_MESSAGE
            + wasted * (WASTED_PER_MIB - 1.0) / DATA_BYTES_PER_MESSAGE)


def message_cost(size: int, files: int = 0, units: int = 0) -> float:
    """What a message of `size` JSON bytes listing `files` file headers, with `units`
    values and keys (`connection.json_units`), costs.

    Bytes: decoding and checking a message's JSON costs the node 1.1 ms a MiB for one
    long string to 5.5 ms for a map of 10,000 environment variables (measured,
    unloaded; a message whole, ~50 us), so a message's worth per 8 KiB (128 a MiB): a
    16 MiB frame costs 2,049, five of them in the burst, then one every second. Files:
    the wire's check and the node's of one header cost ~2 us, an eighth of a message.
    (Creating one costs far more, and depends on the disk: `work_cost`; a refused
    run's files are never made, their bytes read to nowhere.)

    Honest runs never wait: a run of 1,000 input files with a 1 MiB spec costs
    1 + 129 + 125 = 258, under 3 % of the burst;
    one of a few KB, ~1.3. The largest run a fresh session's burst takes without a
    wait (a cost of at most BURST + BATCH, 10,064): a frame of the wire's whole 16 MiB
    listing up to 64,000 files, or ~77,000 files with a small spec (35-byte headers).
    The most files the schema takes, 100,000 (3.5 MB), wait ~1.4 s, ~5 s with their
    700,000 units.

    Units (R11): bytes alone undercharge JSON of many small values. `[[0],[0],...]`
    decodes at ~0.12 us a byte here (a map of distinct keys ~0.08), 20-100 times a
    string's: refused frames of it charged by bytes kept a node at 100 % of a core.
    A value or key costs up to ~0.5 us (loaded), so a hundredth of a message each:
    such a flood then gets the rate's ~10 % of a core. An honest message's text has
    5-40 bytes a unit (a file header ~5), so units add 1-3 % of the bytes' charge to a
    text-heavy one, and ~70 a 1,000-file run.
    """
    return 1.0 + size / MESSAGE_BYTES + files * FILE_COST + units * UNIT_COST


def work_cost(cpu_seconds: float) -> float:
    """The CPU the node spent on a session's behalf outside reading it, in messages
    (MESSAGE_CPU each): creating the files of a run it took, measured by the shell,
    since what it costs depends on the disk: 5 us a file on tmpfs, 200-800 us on the
    test machine's ext4 (a constant would be 10 times too much on one or too little on
    the other; an empty file costs no data frame). Charged once they are made, so the
    session's next message waits if they cost more than its budget had left: files
    made for it then go at most at the rate's ~10 % of a core. A run of 1,000 files
    made in 0.2-0.8 s here costs 4,000-16,000: the run is never held, the message
    after it at most ~3 s."""
    return cpu_seconds / MESSAGE_CPU


def refused_cost(size: int, units: int = 0) -> float:
    """A frame the wire refused and answered: REFUSED_COST, plus its bytes and units
    as a message's (its JSON was decoded before it was refused)."""
    return REFUSED_COST + size / MESSAGE_BYTES + units * UNIT_COST


class _Bucket:
    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.last = rate, burst, burst, now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens; how long until the debt is paid (0.0 within a batch)."""
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
        self.tokens -= cost
        return -self.tokens / self.rate if self.tokens < -BATCH else 0.0

    def owed(self, now: float) -> float:
        """How long until the debt is paid (0.0: none, or within a batch), as `take`
        says after a charge, without charging."""
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
        return -self.tokens / self.rate if self.tokens < -BATCH else 0.0


class MessageBudget:
    def __init__(self, rate: float = RATE, burst: float = BURST,
                 host_rate: float = HOST_RATE, host_burst: float = HOST_BURST) -> None:
        self.rate, self.burst = rate, burst
        self.host_rate, self.host_burst = host_rate, host_burst
        self._sessions: dict = {}  # key -> [host, bucket, times it waited]
        self._hosts: dict = {}  # host -> [bucket, sessions open]
        self.waited = 0  # times a session was made to wait (for tests and status)

    def open(self, key: Hashable, host: str, now: float) -> None:
        self._sessions[key] = [host, _Bucket(self.rate, self.burst, now), 0]
        entry = self._hosts.get(host)
        if entry is None:
            if len(self._hosts) >= HOSTS_KEPT:
                self._prune(now)
            self._hosts[host] = [_Bucket(self.host_rate, self.host_burst, now), 1]
        else:
            entry[1] += 1

    def close(self, key: Hashable) -> None:
        """The host's bucket stays (a host reconnecting gets no fresh burst)."""
        got = self._sessions.pop(key, None)
        if got is not None:
            self._hosts[got[0]][1] -= 1

    def waits(self, key: Hashable) -> int:
        """How many times session `key` was made to wait (the shell logs the first: an
        honest session never is)."""
        got = self._sessions.get(key)
        return 0 if got is None else got[2]

    def _prune(self, now: float) -> None:
        """Hosts with no session whose bucket has refilled: forgetting them changes
        nothing (a new bucket is a full one)."""
        for host, (b, n) in list(self._hosts.items()):
            if n <= 0 and b.tokens + (now - b.last) * b.rate >= b.burst:
                del self._hosts[host]

    def owed(self, key: Hashable, now: float) -> float:
        """Seconds until session `key`'s bucket and its host's are out of debt (0.0:
        read it). The shell asks before every read of a session, its first message's
        included (`Channel.before_read`): a debt is otherwise waited out only by the
        session that ran it up, after its frame was decoded, and a host that opened
        session after session, each sending one frame of 4 MiB of dense JSON and
        closing, had every frame decoded free (R11: 97 % of a node's core, and a loop
        stalled long enough that the node thought itself stopped)."""
        got: Optional[list] = self._sessions.get(key)
        if got is None:
            return 0.0
        return max(got[1].owed(now), self._hosts[got[0]][0].owed(now))

    def charge(self, key: Hashable, now: float, cost: float = 1.0) -> float:
        """One message of session `key` read at `now` (`cost` messages' worth: a frame
        the wire refused costs REFUSED_COST, it is answered; a read's data frames cost
        `data_cost`): seconds the shell waits before it reads the next one (0.0: go on)."""
        got: Optional[list] = self._sessions.get(key)
        if got is None:
            return 0.0
        host, bucket, _ = got
        wait = max(bucket.take(now, cost), self._hosts[host][0].take(now, cost))
        if wait > 0.0:
            self.waited += 1
            got[2] += 1
        return wait
