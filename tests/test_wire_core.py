"""The sans-IO wire core, byte by byte: keys, handshake, frames, messages."""

from __future__ import annotations

import hashlib
import json

import pytest

from jrs.wire.connection import (
    MSG1_LEN,
    MSG2_LEN,
    BadMessage,
    Connection,
    Data,
    Established,
    Message,
)
from jrs.wire.errors import (
    AuthError,
    LocalProtocolError,
    MessageError,
    TransferInProgress,
    VersionMismatch,
    WireError,
)
from jrs.wire.frames import MAX_PAYLOAD, FrameDecoder, FrameEncoder
from jrs.wire.keys import mac, root_key, session_keys, transcript
from jrs.wire.messages import SCHEMA, validate

SECRET = b"j" * 32
ROOT = root_key(SECRET)


def test_root_key_known_answer():
    assert ROOT.hex() == "a1b7bc4c8daef0f00f8cf4f82d0b628116ede13cb652465b0fc5da22d8ab0d2c"
    independent = hashlib.blake2b(SECRET, key=b"JRS wire v1 root", digest_size=32).digest()
    assert independent == ROOT
    assert root_key(SECRET + b"x") != ROOT


def test_session_keys_known_answer():
    th = transcript(b"m1", b"m2")
    assert th.hex() == "027e83a4de678cc388f81ea081a7be8be691f0f2359f3f0b5313aa0c2c21acd9"
    client = session_keys(ROOT, th, bytes(range(32)), True)
    server = session_keys(ROOT, th, bytes(range(32)), False)
    assert client.send.hex() == ("d3e98523b24639e17e8bbd23882f3a4922befde8c8cf32385afcfcb2"
                                 "4e0e7df4")
    assert client.recv.hex() == ("65bb2912394e173a5442a266f2ba5aad31566f770a66c5303433ca59"
                                 "865595d9")
    assert (client.send, client.recv) == (server.recv, server.send)
    assert client.send != client.recv  # one key per direction: no reflection
    chain = hashlib.blake2b(th + bytes(range(32)), key=ROOT, digest_size=64).digest()
    assert client.send == hashlib.blake2b(b"c2s", key=chain, digest_size=32).digest()
    assert mac(ROOT, b"a", b"bc") != mac(ROOT, b"ab", b"c")  # parts are length-prefixed


def pair(client_secret=SECRET, server_secret=SECRET, client_role="submit", server_role="node",
         peer_roles=None):
    client = Connection(root_key(client_secret), client_role, is_client=True)
    server = Connection(root_key(server_secret), server_role, is_client=False,
                        peer_roles=peer_roles)
    return client, server


def handshake(client, server):
    msg1 = client.initiate()
    assert len(msg1) == MSG1_LEN
    assert server.receive(msg1) == []
    msg2 = server.data_to_send()
    assert len(msg2) == MSG2_LEN
    assert client.receive(msg2) == [Established("node" if server.role == "node" else
                                                server.role)]
    hello = client.data_to_send()
    events = server.receive(hello)
    assert events[0] == Established(client.role)
    return msg1, msg2, hello


@pytest.mark.parametrize("size", [0, 1, 4095, 1 << 20])
def test_frames_are_plain_secretbox(size):
    """The low-copy frame path is byte-identical to PyNaCl's public secretbox, and a
    frame sealed by one opens with the other."""
    from nacl.bindings import crypto_secretbox_easy, crypto_secretbox_open_easy
    from nacl.exceptions import CryptoError

    from jrs.wire.crypto import open_frame, seal_frame
    key, nonce, msg = bytes(range(32)), bytes(range(24)), bytes(i % 251 for i in range(size))
    frame = seal_frame(key, nonce, msg)
    reference = crypto_secretbox_easy(msg, nonce, key)
    assert frame == len(reference).to_bytes(4, "big") + reference
    assert open_frame(key, nonce, memoryview(frame)[4:]) == msg
    assert crypto_secretbox_open_easy(frame[4:], nonce, key) == msg
    tampered = bytearray(frame[4:])
    tampered[-1] ^= 1
    with pytest.raises(CryptoError, match="failed verification"):
        open_frame(key, nonce, tampered)


def test_frames_without_the_fast_path(monkeypatch):
    """A PyNaCl without its cffi module falls back to the public API, same bytes."""
    from jrs.wire import crypto
    key, nonce = bytes(32), bytes(24)
    fast = crypto.seal_frame(key, nonce, b"payload", b"D")
    monkeypatch.setattr(crypto, "_lib", None)
    assert crypto.seal_frame(key, nonce, b"payload", b"D") == fast
    assert crypto.open_frame(key, nonce, fast[4:]) == b"Dpayload"


def test_handshake_and_messages_both_ways():
    client, server = pair()
    handshake(client, server)
    client.strict = False  # play a newer peer: an extra field the receiver drops
    wire = client.send_message({"type": "echo", "seq": 1, "body": "hi", "extra": 1})
    assert server.receive(wire) == [Message({"type": "echo", "seq": 1, "body": "hi"})]
    blob = server.send_message({"type": "blob", "size": 5})
    assert client.receive(blob + server.send_data(b"\x00" * 5)) == [
        Message({"type": "blob", "size": 5}), Data(b"\x00" * 5)]


def test_fed_one_byte_at_a_time():
    client, server = pair()
    events = []
    for b in client.initiate():
        events += server.receive(bytes([b]))
    msg2 = server.data_to_send()
    for b in msg2:
        events += client.receive(bytes([b]))
    stream = client.data_to_send() + client.send_message({"type": "ping", "seq": 3})
    for b in stream:
        events += server.receive(bytes([b]))
    assert events[-1] == Message({"type": "ping", "seq": 3})


def test_wrong_secret_is_refused_by_both_sides():
    client, server = pair(server_secret=b"k" * 32)
    with pytest.raises(WireError, match="does not hold our secret"):
        server.receive(client.initiate())
    # a server that somehow answers without the secret is refused by the client
    impostor = Connection(root_key(b"k" * 32), "node", is_client=False)
    client2 = Connection(ROOT, "submit", is_client=True)
    msg1 = client2.initiate()
    forged = Connection(ROOT, "node", is_client=False)
    forged.receive(msg1)
    msg2 = bytearray(forged.data_to_send())
    msg2[-1] ^= 1
    with pytest.raises(WireError, match="server does not hold our secret"):
        client2.receive(bytes(msg2))
    del impostor


def test_roles_are_checked_and_bound():
    client, server = pair(client_role="tool", peer_roles=frozenset({"submit"}))
    with pytest.raises(WireError, match="a tool may not connect here"):
        server.receive(client.initiate())
    client, server = pair()
    msg1 = bytearray(client.initiate())
    msg1[4] = 1  # claim to be the master: the tag no longer matches
    with pytest.raises(WireError):
        server.receive(bytes(msg1))


def test_version_mismatch_is_clear_on_both_sides():
    client, server = pair()
    msg1 = bytearray(client.initiate())
    msg1[3] = 2
    with pytest.raises(VersionMismatch, match="peer speaks JRS wire version 2; this jrs "
                                              "speaks version 1"):
        server.receive(bytes(msg1))
    refusal = server.data_to_send()
    client2, _ = pair()
    client2.initiate()
    with pytest.raises(VersionMismatch,
                       match="server speaks JRS wire version 3; this jrs speaks version 1"):
        client2.receive(refusal[:3] + bytes([3]) + refusal[4:])


def test_garbage_before_handshake():
    _, server = pair()
    with pytest.raises(WireError, match="bad handshake magic"):
        server.receive(b"GET / HTTP/1.1\r\n\r\n")


def established():
    client, server = pair()
    handshake(client, server)
    return client, server


@pytest.mark.parametrize("attack", ["replay", "reorder", "drop", "flip", "truncate",
                                    "reflect", "huge", "garbage"])
def test_frame_attacks_close_the_connection(attack):
    client, server = established()
    f1 = client.send_message({"type": "ping", "seq": 1})
    f2 = client.send_message({"type": "ping", "seq": 2})
    if attack == "replay":
        server.receive(f1)
        bad = f1
    elif attack == "reorder":
        bad = f2 + f1
    elif attack == "drop":
        bad = f2
    elif attack == "flip":
        bad = bytearray(f1)
        bad[-3] ^= 0x40
        bad = bytes(bad)
    elif attack == "truncate":
        bad = (len(f1) - 5).to_bytes(4, "big") + f1[4:-1]
    elif attack == "reflect":
        reflected = server.send_message({"type": "ping", "seq": 1})
        with pytest.raises(WireError):
            server.receive(reflected)
        return
    elif attack == "huge":
        bad = (2 ** 32 - 1).to_bytes(4, "big")
    else:
        bad = b"\x00\x00\x00\x20" + b"\xff" * 32
    with pytest.raises(WireError):
        server.receive(bad)


def test_length_is_checked_before_buffering():
    decoder = FrameDecoder(bytes(32))
    with pytest.raises(WireError, match="out of range"):
        decoder.feed((MAX_PAYLOAD + 17).to_bytes(4, "big"))
    assert decoder.buffered == 4  # nothing of a body was waited for


def test_max_payload_round_trip_and_limit():
    enc, dec = FrameEncoder(bytes(32)), FrameDecoder(bytes(32))
    big = bytes(MAX_PAYLOAD)
    assert dec.feed(enc.seal(big)) == [big]
    client, server = established()
    header = client.send_message({"type": "blob", "size": 16 << 20})
    (_, event) = server.receive(header + client.send_data(bytes(16 << 20)))
    assert event == Data(bytes(16 << 20))
    with pytest.raises(WireError):
        enc.seal(big + b"x")


def test_recorded_session_replayed_to_a_server_goes_nowhere():
    client, server = pair()
    msg1, _, hello = handshake(client, server)
    recorded = msg1 + hello + client.send_message({"type": "ping", "seq": 1})
    fresh = Connection(ROOT, "node", is_client=False)
    with pytest.raises(WireError):
        fresh.receive(recorded)


def test_recorded_server_reply_replayed_to_a_client_is_refused():
    client, server = pair()
    _, msg2, _ = handshake(client, server)
    new_client = Connection(ROOT, "submit", is_client=True)
    new_client.initiate()
    with pytest.raises(WireError, match="server does not hold our secret"):
        new_client.receive(msg2)


def test_forward_secrecy_ephemeral_is_dropped():
    client, server = established()
    assert client._secret == b"" and server._secret == b""


def test_bad_message_is_an_event_not_a_crash():
    client, server = established()
    sealed = client._seal(b"M" + b"{not json")
    (event,) = server.receive(sealed)
    assert isinstance(event, BadMessage)
    client.strict = False  # a peer that sends what the schema does not know
    (event,) = server.receive(client.send_message({"type": "launch-missiles"}))
    assert event == BadMessage("unknown message type 'launch-missiles'")


@pytest.mark.parametrize("obj, words", [
    ([], "JSON object"), ({"seq": 1}, "string `type`"), ({"type": "ping"}, "missing field"),
    ({"type": "ping", "seq": "1"}, "must be int"), ({"type": "ping", "seq": True}, "must be int"),
    ({"type": "ping", "seq": 2 ** 60}, "out of range"),
    (json.loads('{"type": "echo", "seq": 1, "body": "\\ud800"}'), "not valid unicode"),
    (json.loads('{"type": "node-hello", "name": "n", "slots": 1, "memory": 1, "gpus": 0, '
                '"claims": [], "attrs": {"\\udfff": 1}}'), "not valid unicode"),
])
def test_validator_rejects(obj, words):
    with pytest.raises(MessageError, match=words):
        validate(obj)


def test_generated_messages_are_valid_and_mutations_are_refused_or_clean():
    """The fuzzer's generator (tests/wirefuzz.py) makes messages the schema takes
    strictly, for every type; a mutated one is refused with MessageError or comes out
    as a clean copy that survives JSON (never an exception of another kind)."""
    import random

    from . import wirefuzz
    rnd = random.Random(5)
    gen = wirefuzz.Gen(rnd)
    refused = 0
    for kind in sorted(SCHEMA):
        for _ in range(20):
            msg = gen.message(kind)
            assert validate(msg, strict=True) == msg, msg
            bad, _how = gen.mutate(json.loads(json.dumps(msg)))
            try:
                clean = validate(json.loads(json.dumps(bad)))
            except MessageError:
                refused += 1
                continue
            assert json.loads(json.dumps(clean)) == clean
    assert refused > 5 * len(SCHEMA)


@pytest.mark.parametrize("pos", range(MSG1_LEN))
def test_every_byte_of_the_first_handshake_message_is_checked(pos):
    """A valid msg1 with any one byte changed is refused (magic, version, role, key or
    tag): the server never answers it as if it were valid."""
    client, server = pair()
    msg1 = bytearray(client.initiate())
    msg1[pos] ^= 0x01
    with pytest.raises(WireError):
        server.receive(bytes(msg1))


@pytest.mark.parametrize("pos", range(MSG2_LEN))
def test_every_byte_of_the_server_answer_is_checked(pos):
    client, server = pair()
    server.receive(client.initiate())
    msg2 = bytearray(server.data_to_send())
    msg2[pos] ^= 0x01
    with pytest.raises(WireError):
        client.receive(bytes(msg2))


# ---------------------------------------------------------------- transfers (issue 12.4)

RUN = {"type": "run", "claim": "c", "job": "1.0", "attempt": 1, "spec": {"executable": "x"},
       "files": [{"name": "a", "size": 3, "mode": 0o644}, {"name": "b", "size": 4,
                                                           "mode": 0o755}]}


def test_a_message_inside_a_transfer_is_refused_by_the_sender():
    client, server = established()
    frames = [client.send_message(RUN)]
    assert client.sending_transfer == 7
    with pytest.raises(TransferInProgress, match="owes 7 bytes"):
        client.send_message({"type": "ack", "job": "1.0", "attempt": 1})
    with pytest.raises(LocalProtocolError, match="owes 7"):
        client.send_data(b"x" * 8)  # more than the header announced
    frames.append(client.send_data(b"abc"))
    with pytest.raises(TransferInProgress):
        client.send_message({"type": "ping", "seq": 1})
    frames.append(client.send_data(b"defg"))
    assert client.sending_transfer == 0
    frames.append(client.send_message({"type": "ping", "seq": 1}))  # the unit is over
    with pytest.raises(LocalProtocolError, match="outside a transfer"):
        client.send_data(b"late")
    events = server.receive(b"".join(frames))
    assert [type(e).__name__ for e in events] == ["Message", "Data", "Data", "Message"]
    assert server.receiving_transfer == 0


def test_a_transfer_of_nothing_is_no_transfer():
    client, server = established()
    empty = dict(RUN, files=[{"name": "a", "size": 0, "mode": 0o644}])
    wire = client.send_message(empty) + client.send_message({"type": "ping", "seq": 2})
    assert [type(e).__name__ for e in server.receive(wire)] == ["Message", "Message"]


@pytest.mark.parametrize("case", ["data_outside", "message_inside", "too_much_data",
                                  "bad_header"])
def test_the_receiver_reports_a_broken_transfer(case):
    """What a peer that ignores the rule sends is a protocol error: the connection ends."""
    client, server = established()
    def raw_message(body):
        return client._seal(json.dumps(body).encode(), b"M")

    if case == "data_outside":
        wire, words = client._seal(b"xyz", b"D"), "outside a transfer"
    elif case == "message_inside":
        wire = (raw_message(RUN) + client._seal(b"abc", b"D")
                + raw_message({"type": "ack", "job": "1.0", "attempt": 1}))
        words = "middle of a transfer"
    elif case == "too_much_data":
        wire = raw_message(RUN) + client._seal(b"abcdefgh", b"D")
        words = "did not match its header"
    else:
        wire = raw_message(dict(RUN, files=[{"name": "a", "size": "3"}]))
        words = "bad transfer header"
    with pytest.raises(WireError, match=words):
        server.receive(wire)


def test_a_refused_transfer_header_is_answered_and_its_data_swallowed():
    """A header that fails the schema but says how many bytes follow: a bad message (the
    receiver answers it), its data is consumed by the core, the stream stays in step."""
    client, server = established()
    bad = dict(RUN, spec={"executable": 7})
    wire = client._seal(json.dumps(bad).encode(), b"M") + client._seal(b"abcdefg", b"D")
    wire += client._seal(json.dumps({"type": "ping", "seq": 4}).encode(), b"M")
    events = server.receive(wire)
    assert isinstance(events[0], BadMessage) and "spec.executable" in events[0].reason
    assert events[1:] == [Message({"type": "ping", "seq": 4})]
    # counted all the same, for the channel to charge (R10: swallowed 1-byte frames)
    assert (server.data_frames_in, server.data_bytes_in) == (1, 7)


def test_deep_nesting_is_a_bad_message_not_a_crash():
    client, server = established()
    deep = b"M" + b"[" * 100_000 + b"]" * 100_000
    (event,) = server.receive(client._seal(deep))
    assert isinstance(event, BadMessage) and "nested too deeply" in event.reason
    (event,) = server.receive(client.send_message({"type": "ping", "seq": 1}))
    assert event == Message({"type": "ping", "seq": 1})  # and the connection lives on


def test_macs_are_compared_in_constant_time(monkeypatch):
    """Both handshake tags go through hmac.compare_digest, never `==`."""
    import hmac

    from jrs.wire import keys
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(keys.hmac, "compare_digest",
                        lambda a, b: calls.append((a, b)) or real(a, b))
    established()
    assert len(calls) == 2 and all(len(a) == len(b) == 32 for a, b in calls)
    client, server = pair(server_secret=b"k" * 32)
    with pytest.raises(AuthError):
        server.receive(client.initiate())
