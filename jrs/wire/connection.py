"""The sans-IO connection: bytes in -> events out, messages in -> bytes out.

Handshake (modelled on Noise NNpsk0: `-> psk, e` / `<- e, ee`):

    msg1  C->S  "JRS" ver role_c e_c  mac(root, header)            69 bytes
    msg2  S->C  "JRS" ver 0 role_s e_s mac(confirm, th)            70 bytes
          S->C  "JRS" ver 1                                          5 bytes  (version refused)
          S->C  "JRS" ver 2                                          5 bytes  (proof failed)
    then  C->S  first sealed frame (a `hello` message)

mac(root, ...) proves the client holds the secret; the server's tag is keyed
by the session chain, so it proves the secret *and* the ephemeral exchange;
the client's first frame, sealed with a key neither side can know without both
ephemerals, completes the proof for the server (a replayed msg1 goes no further).
The transcript binds both roles and both ephemerals into every key.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from .crypto import CryptoError, dh, ephemeral
from .errors import (
    AuthError,
    LocalProtocolError,
    MessageError,
    MessageTooBig,
    TransferInProgress,
    VersionMismatch,
    WireError,
)
from .frames import MAX_MESSAGE, FrameDecoder, FrameEncoder
from .keys import SessionKeys, mac, session_keys, tags_equal, transcript
from .messages import TRANSFER_TYPES, transfer_size, validate
from .strict import check_sent
from .strict import enabled as strict_enabled

MAGIC = b"JRS"
VERSION = 1
ROLES = {"master": 1, "node": 2, "submit": 3, "tool": 4}
ROLE_NAMES = {v: k for k, v in ROLES.items()}
MSG1_LEN = 3 + 1 + 1 + 32 + 32
MSG2_LEN = 3 + 1 + 1 + 1 + 32 + 32
REJECT_LEN = 5
STATUS_OK, STATUS_VERSION, STATUS_AUTH_FAILED = 0, 1, 2  # msg2's status byte; a refusal
# (version, proof) is the 5-byte header alone, then the server closes
KIND_MESSAGE = b"M"
# a server's first frame is the client's wire hello (`_client_step`): bounded, so the
# handshake's own reads decode next to nothing before the first message (R11)
FIRST_FRAME_MAX = 1024
KIND_DATA = b"D"


@dataclass(frozen=True)
class Established:
    """The handshake finished; the peer holds the secret and plays `peer_role`."""

    peer_role: str


def json_units(body: bytes) -> int:
    """A bound on the values and keys decoding `body` makes, past its first: each one
    follows a `,` or a `:` or opens a container. What a frame costs to decode goes with
    it, not with its bytes: `[[0],[0],...]` takes ~0.12 us a byte here, ~60 times a
    long string's (R11). Four passes at memory speed, ~1 % of a decode."""
    return body.count(b",") + body.count(b":") + body.count(b"[") + body.count(b"{")


MAX_UNITS = 1 << 21  # 2,097,152
"""The most `json_units` a message frame may have: past it the frame is not decoded
and the connection closes (WireError), on every role, before `json.loads` (R11). The
wire takes frames of 16 MiB, and 16 MiB of `[0],[0],...` cost ~2 s of a core and
~500 MB to decode; at this cap the worst dense shapes measured here (CPython 3, this
project's 2-core machine, at load ~1) cost: distinct-key maps `{"0":0,"1":0,...}`
(10.9 MiB) 1.03 s and ~125 MB, `[[0],[0],...]` (4 MiB) 0.53 s and ~110 MB, `[[],...]`
0.26 s, `[0,0,...]` 0.14 s; counting the units takes 6-25 ms.
The largest honest messages the schema allows, at every count limit (short values;
tests/test_wire_units.py builds them): a `run` with 100,000 file headers each with a
mode, 100,000 arguments, 10,000 environment and 10,000 getenv entries and 100,000
transfer_output_files: 940,038 units (5.3 MB); a `finished` with 100,000 headers,
100,000 missing and 100,000 refused: 1,000,040 (the node sends at most 1,000 missing and
100 refused: 701,240); a node-hello of 4,096 claims and 1,000 attributes: 79,838; a
status-reply of 1,000 nodes (64 claims and 20 attributes each) and 1,000 submitters:
223,006 (~204 a node: about 10,000 such nodes fit). So the cap is 2.1 times the largest
honest message. `json_units` overcounts: a `,` or `:` inside a string counts too, so a
job whose arguments or output names hold millions of commas can pass the byte limit
and still be over the cap; our senders refuse such a message (`Connection.encode`
raises MessageTooBig) and the job fails saying so, never a frame the peer must drop.
A frame over the cap cannot be told from a transfer header whose data frames follow,
so the stream cannot be kept in step: it ends the connection."""


def _over_cap(units: int) -> str:
    return (f"a message of {units:,} JSON values and keys is over the wire's cap of "
            f"{MAX_UNITS:,} (connection.MAX_UNITS)")


@dataclass(frozen=True)
class Message:
    """A validated message (a dict with a `type`); `size`: its frame's JSON bytes;
    `units`: `json_units` of them."""

    body: dict
    size: int = field(default=0, compare=False)
    units: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Data:
    """A chunk of raw bytes (file contents, output)."""

    chunk: bytes


@dataclass(frozen=True)
class BadMessage:
    """An authenticated frame that is not a valid message; answer it with an error."""

    reason: str
    body: Optional[dict] = field(default=None, compare=False)  # as it came, if an object
    size: int = field(default=0, compare=False)  # its frame's bytes (what it cost to read)
    units: int = field(default=0, compare=False)  # json_units of a message frame's bytes


@dataclass(frozen=True)
class Costly:
    """A message frame of more than `Connection.hold_units` JSON values and keys, not
    decoded yet (R11: decoding is what a frame of many small values costs, and a
    budget charged after the decode let every session of a host decode one such frame
    free, all at once): its owner charges `size` bytes and `units` to the peer's
    budget, waiting if it must, then `Connection.resume`s it. Nothing after it is
    turned into events meanwhile: it may be a transfer's header."""

    size: int
    units: int


@dataclass(frozen=True)
class Raw:
    """A message frame left undecoded because `Connection.keep_raw` said so: its owner
    decodes it with `Connection.decode` when, and if, it needs it (the master keeps only
    the newest of a flood of demands; the older ones cost no JSON decode or check)."""

    body: bytes


Event = Union[Established, Message, Data, BadMessage, Raw, Costly]


class Connection:
    """One side of a connection. Feed it bytes; send what it hands back."""

    def __init__(self, root: bytes, role: str, is_client: bool,
                 peer_roles: Optional[frozenset] = None) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        self.root = root
        self.role = role
        self.is_client = is_client
        self.peer_roles = peer_roles
        self.peer_role: Optional[str] = None
        self.established = False
        self._secret, self._public = ephemeral()
        self._hs = bytearray()
        self._msg1 = b""
        self._out = bytearray()
        self._enc: Optional[FrameEncoder] = None
        self._dec: Optional[FrameDecoder] = None
        self._awaiting_first_frame = False
        self._send_left = 0  # data bytes still owed by the transfer we are sending
        self._recv_left = 0  # data bytes still owed by the transfer we are receiving
        self._discarding = False  # ... of a header refused as a bad message
        # data frames, and their bytes, received so far: those swallowed (of a refused
        # header) too, which no event shows; the channel charges them (`Channel.on_data`)
        self.data_frames_in = 0
        self.data_bytes_in = 0
        self.data_bytes_discarded = 0  # ... of them, those swallowed
        # True: the data of a refused transfer header is handed on as Data (the caller,
        # given the header in BadMessage.body, drains it) instead of being swallowed
        self.keep_bad_transfers = False
        self.strict = strict_enabled()  # JRS_STRICT: what we send is checked (tests)
        # given a message frame's JSON bytes, True: hand it on as `Raw`, undecoded. Only
        # for frames that cannot open a transfer (see `decode`)
        self.keep_raw: Optional[Callable[[bytes], bool]] = None
        # a message frame of more `json_units` than this (0: any) is held as `Costly`
        # until `resume`; the frames after it wait in `_held`
        self.hold_units = 0
        self._held: deque = deque()  # opened payloads not yet made events
        self._holding: Optional[tuple] = None  # (body, units) of the frame held

    @property
    def sending_transfer(self) -> int:
        """Data bytes our open transfer still owes (0: no transfer open)."""
        return self._send_left

    @property
    def receiving_transfer(self) -> int:
        """Data bytes the peer's open transfer still owes us."""
        return self._recv_left

    # ------------------------------------------------------------------ output

    def data_to_send(self) -> bytes:
        """Bytes produced by the protocol itself (handshake), to be written out."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def initiate(self) -> bytes:
        """Client: the first handshake message."""
        assert self.is_client and not self._msg1
        header = MAGIC + bytes((VERSION, ROLES[self.role])) + self._public
        self._msg1 = header + mac(self.root, b"msg1", header)
        return self._msg1

    def encode(self, body: dict) -> bytes:
        """The payload of `body` (checked under JRS_STRICT): touches no state, so a caller
        may do it in a thread for a big message (a `finished` listing 100,000 files:
        0.35 s of json, 0.3 s more of strict checks) and give it to send_message.
        Always (not only under JRS_STRICT) raises MessageTooBig for a body no peer would
        take: more than MAX_MESSAGE bytes (the frame sealer's WireError, a network error
        to its callers, sent a too-big `run` again on every reconnect) or more than
        MAX_UNITS (the receiver closes the connection)."""
        if self.strict:
            check_sent(body, self.role)
        encoded = json.dumps(body, separators=(",", ":")).encode()
        kind = body.get("type") if isinstance(body, dict) else None
        if len(encoded) > MAX_MESSAGE:
            raise MessageTooBig(f"a {kind!r:.40} message of {len(encoded):,} bytes is over "
                                f"the wire's {MAX_MESSAGE:,}-byte (16 MiB) limit")
        units = json_units(encoded)
        if units > MAX_UNITS:
            raise MessageTooBig(f"{kind!r:.40}: {_over_cap(units)}")
        return encoded

    def send_message(self, body: dict, encoded: Optional[bytes] = None) -> bytes:
        """The frame carrying `body` (`encoded`: what encode(body) gave). A transfer
        header (`run`, `finished`, `blob`) opens a transfer: until its announced bytes
        have gone out as data frames, no message may be sent (TransferInProgress), so
        nothing can land between a header and its data."""
        if self._send_left:
            raise TransferInProgress(f"cannot send {body.get('type')!r}: a transfer still "
                                     f"owes {self._send_left} bytes")
        if encoded is None:
            encoded = self.encode(body)
        size = transfer_size(body) if body.get("type") in TRANSFER_TYPES else 0
        frame = self._seal(encoded, KIND_MESSAGE)
        self._send_left = size
        return frame

    def send_data(self, chunk: bytes) -> bytes:
        """A data frame of the open transfer; refused outside one or past its size."""
        if len(chunk) > self._send_left or not self._send_left:
            raise LocalProtocolError(
                f"{len(chunk)} bytes of data but the open transfer owes {self._send_left}"
                if self._send_left else "data sent outside a transfer")
        frame = self._seal(chunk, KIND_DATA)
        self._send_left -= len(chunk)
        return frame

    def _seal(self, payload: bytes, kind: bytes = b"") -> bytes:
        if self._enc is None:
            raise WireError("cannot send before the handshake")
        return self._enc.seal(payload, kind)

    # ------------------------------------------------------------------ input

    def receive(self, data: bytes) -> list[Event]:
        """Feed received bytes; return events. Raises WireError: close the connection."""
        events: list[Event] = []
        if self._dec is None:
            self._hs += data
            data = self._handshake_step(events)
            if self._dec is None:
                return events
        self._held.extend(self._dec.feed(data))
        if self._holding is None:
            self._events(events)
        return events

    @property
    def buffered(self) -> int:
        """Bytes received and kept that no event has handed on yet: of frames not
        complete, and of frames held after a `Costly` one (what the peer makes us hold;
        `aio.Server` bounds it per host)."""
        held = sum(len(p) for p in self._held)
        if self._holding is not None:
            held += len(self._holding[0])
        return held + (self._dec.buffered if self._dec is not None else 0)

    def discard_input(self) -> None:
        """Forget what `buffered` counts (the connection is closed: nothing reads on)."""
        self._held.clear()
        self._holding = None
        if self._dec is not None:
            self._dec.discard()

    def resume(self) -> list[Event]:
        """After a `Costly` event: the held frame's event and those of the frames after
        it, up to the next Costly one. Raises WireError as `receive` does."""
        if self._holding is None:
            return []
        body, units = self._holding
        self._holding = None
        events: list[Event] = [self._decode(body, units=units)]
        self._events(events)
        return events

    def _events(self, events: list) -> None:
        held = self._held
        while held:
            payload = held.popleft()
            if self._awaiting_first_frame:
                self._awaiting_first_frame = False
                self.established = True
                events.append(Established(self.peer_role or ""))
            event = self._event(payload)
            if event is not None:
                events.append(event)
                if self._holding is not None:
                    return

    def _event(self, payload: memoryview) -> Optional[Event]:
        kind, body = bytes(payload[:1]), bytes(payload[1:])  # the one copy out of the box
        if kind == KIND_DATA:
            if len(body) > self._recv_left:
                raise WireError("file data did not match its header" if self._recv_left
                                else "file data outside a transfer")
            self._recv_left -= len(body)
            self.data_frames_in += 1
            self.data_bytes_in += len(body)
            if self._discarding:
                self.data_bytes_discarded += len(body)
                self._discarding = self._recv_left > 0
                return None  # the data of a header we refused: swallowed, stream in step
            return Data(body)
        if self._recv_left:
            raise WireError(f"a message in the middle of a transfer ({self._recv_left} "
                            "bytes still owed)")
        if kind != KIND_MESSAGE:
            return BadMessage(f"unknown frame kind {kind!r}", size=len(body))
        if self.keep_raw is not None and self.keep_raw(body):
            return Raw(body)
        units = json_units(body)
        if units > MAX_UNITS:  # never decoded: not held, nor charged, for nothing
            raise WireError(f"{_over_cap(units)}: not decoded")
        if self.hold_units and units > self.hold_units:
            self._holding = (body, units)
            return Costly(len(body), units)
        return self._decode(body, units=units)

    def decode(self, body: bytes) -> Union[Message, BadMessage]:
        """The message in a frame handed on as `Raw`. Its place in the stream is gone, so
        it cannot open a transfer: a transfer header is a BadMessage here (and its data
        frames, already come, ended the connection as data outside a transfer)."""
        event = self._decode(body, kept=True)
        if isinstance(event, Message) and event.body["type"] in TRANSFER_TYPES:
            return BadMessage("a message kept undecoded cannot carry data", event.body)
        return event

    def _decode(self, body: bytes, kept: bool = False,
                units: Optional[int] = None) -> Union[Message, BadMessage]:
        if units is None:
            units = json_units(body)
        if units > MAX_UNITS:  # (before json.loads: that is what the cap bounds)
            if kept:  # its place in the stream is gone already: only this frame is bad
                return BadMessage(_over_cap(units), size=len(body), units=units)
            raise WireError(f"{_over_cap(units)}: not decoded")
        try:
            obj = json.loads(body)
        except RecursionError:  # json's C decoder on deep nesting: bounded, not a crash
            return BadMessage("message nested too deeply", size=len(body), units=units)
        except ValueError as exc:
            return BadMessage(str(exc), size=len(body), units=units)
        try:
            clean = validate(obj)
        except MessageError as exc:
            if isinstance(obj, dict) and obj.get("type") in TRANSFER_TYPES and not kept:
                # its data frames follow: swallow them if we can tell how many, else
                # there is no way to stay in step with the stream
                try:
                    self._recv_left = transfer_size(obj)
                except ValueError:
                    raise WireError(f"bad transfer header: {exc}")
                self._discarding = self._recv_left > 0 and not self.keep_bad_transfers
            return BadMessage(str(exc), obj if isinstance(obj, dict) else None, len(body),
                              units)
        if clean["type"] in TRANSFER_TYPES and not kept:
            try:
                self._recv_left = transfer_size(clean)
            except ValueError as exc:
                raise WireError(f"bad transfer header: {exc}")
        return Message(clean, len(body), units)

    def _handshake_step(self, events: list) -> bytes:
        """Consume handshake bytes; return what is left over for the frame decoder."""
        if len(self._hs) >= 3 and bytes(self._hs[:3]) != MAGIC:
            raise WireError("not a JRS peer (bad handshake magic)")
        if self.is_client:
            return self._client_step(events)
        return self._server_step()

    def _check_role(self, code: int) -> str:
        name = ROLE_NAMES.get(code)
        if name is None:
            raise WireError(f"unknown peer role {code}")
        if self.peer_roles is not None and name not in self.peer_roles:
            raise WireError(f"a {name} may not connect here")
        return name

    def _server_step(self) -> bytes:
        hs = self._hs
        if len(hs) >= 4 and hs[3] != VERSION:
            self._out += MAGIC + bytes((VERSION, 1))
            raise VersionMismatch(f"peer speaks JRS wire version {hs[3]}; this jrs speaks "
                                  f"version {VERSION}")
        if len(hs) < MSG1_LEN:
            return b""
        msg1, rest = bytes(hs[:MSG1_LEN]), bytes(hs[MSG1_LEN:])
        header, tag = msg1[:-32], msg1[-32:]
        if not tags_equal(mac(self.root, b"msg1", header), tag):
            raise AuthError("handshake failed: the peer does not hold our secret")
        self.peer_role = self._check_role(header[4])
        peer_public = header[5:37]
        header2 = MAGIC + bytes((VERSION, 0, ROLES[self.role])) + self._public
        th = transcript(msg1, header2)
        keys = self._derive(th, peer_public)
        self._out += header2 + mac(keys.confirm, b"msg2", th)
        self._awaiting_first_frame = True
        return rest

    def _client_step(self, events: list) -> bytes:
        hs = self._hs
        if len(hs) >= 5 and hs[4] == STATUS_AUTH_FAILED and hs[3] == VERSION:
            raise AuthError("handshake failed: the server says we do not hold its secret")
        if len(hs) >= 5 and hs[4] == STATUS_VERSION:
            raise VersionMismatch(f"server speaks JRS wire version {hs[3]}; this jrs speaks "
                                  f"version {VERSION}")
        if len(hs) >= 4 and hs[3] != VERSION:
            raise VersionMismatch(f"server speaks JRS wire version {hs[3]}; this jrs speaks "
                                  f"version {VERSION}")
        if len(hs) < MSG2_LEN:
            return b""
        msg2, rest = bytes(hs[:MSG2_LEN]), bytes(hs[MSG2_LEN:])
        header2, tag = msg2[:-32], msg2[-32:]
        if header2[4] != 0:
            raise WireError("server refused the handshake")
        self.peer_role = self._check_role(header2[5])
        th = transcript(self._msg1, header2)
        keys = self._derive(th, header2[6:38])
        if not tags_equal(mac(keys.confirm, b"msg2", th), tag):
            raise AuthError("handshake failed: the server does not hold our secret")
        self.established = True
        events.append(Established(self.peer_role))
        self._out += self.send_message({"type": "hello", "version": VERSION})
        return rest

    def _derive(self, th: bytes, peer_public: bytes) -> SessionKeys:
        try:
            shared = dh(self._secret, peer_public)
        except CryptoError as exc:
            raise WireError(f"handshake failed: {exc}")
        keys = session_keys(self.root, th, shared, self.is_client)
        self._secret = b""  # forward secrecy: the ephemeral is gone once used
        self._enc = FrameEncoder(keys.send)
        self._dec = FrameDecoder(keys.recv)
        if not self.is_client:
            self._dec.first_max = FIRST_FRAME_MAX
        self._hs = bytearray()
        return keys
