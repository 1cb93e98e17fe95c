"""R11: a message frame's JSON is decoded only under a cap on its values and keys.

The wire takes 16 MiB frames, and 16 MiB of `[[0],[0],...]` cost ~2 s of a core and
~500 MB to `json.loads`, at the node, the master and a submitter's link from a node (no
budget there at all). `Connection._decode` now counts the frame's `json_units` first
and ends the connection (WireError) past `connection.MAX_UNITS`, before decoding; our
own senders refuse such a message (`Connection.encode`, MessageTooBig). The largest
honest messages of the schema are built here and must stay well under the cap."""

from __future__ import annotations

import json
import time

import pytest

from jrs.wire.connection import KIND_MESSAGE, MAX_UNITS, Connection, Message, json_units
from jrs.wire.errors import LocalProtocolError, MessageTooBig, WireError
from jrs.wire.frames import MAX_MESSAGE
from jrs.wire.keys import root_key

from .test_wire_core import handshake, pair

N = 100_000


def _pair() -> tuple:
    client, server = pair()
    handshake(client, server)
    client.strict = server.strict = True
    return client, server


def _dense_run(units: int) -> dict:
    """A `run` (no files) of exactly `units` json_units: three arguments of commas
    (strings: cheap to decode, yet each comma counts, json_units being a bound that
    overcounts)."""
    base = {"type": "run", "claim": "c", "job": "1.0", "attempt": 1,
            "spec": {"executable": "x", "arguments": []}, "files": []}
    extra = units - json_units(json.dumps(base, separators=(",", ":")).encode()) - 2
    third = extra // 3
    base["spec"]["arguments"] = ["," * third, "," * third, "," * (extra - 2 * third)]
    return base


def _echo(units: int) -> bytes:
    encoded = json.dumps(_dense_run(units), separators=(",", ":")).encode()
    assert json_units(encoded) == units
    return encoded


def test_a_frame_over_the_cap_closes_the_connection_and_one_at_it_is_taken():
    client, server = _pair()
    at = _echo(MAX_UNITS)
    assert json_units(at) == MAX_UNITS
    (event,) = server.receive(client._seal(at, KIND_MESSAGE))
    assert isinstance(event, Message) and event.units == MAX_UNITS, event
    assert event.body["spec"]["arguments"][0].startswith(",,,")
    (event,) = server.receive(client._seal(_echo(MAX_UNITS - 1), KIND_MESSAGE))
    assert isinstance(event, Message)
    with pytest.raises(WireError) as info:
        server.receive(client._seal(_echo(MAX_UNITS + 1), KIND_MESSAGE))
    assert f"{MAX_UNITS + 1:,}" in str(info.value) and f"{MAX_UNITS:,}" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_frame_over_the_cap_is_refused_without_being_decoded():
    """Not valid JSON, so a decode would have made a BadMessage (the session goes on),
    and 16 MiB of `[0],` whose decode takes seconds is refused in a fraction of it."""
    client, server = _pair()
    with pytest.raises(WireError, match="over the wire's cap"):
        server.receive(client._seal(b"[" * (MAX_UNITS + 1), KIND_MESSAGE))
    dense = b"[" + b",".join([b"[0]"] * ((MAX_MESSAGE - 2) // 4)) + b"]"
    assert len(dense) <= MAX_MESSAGE and json_units(dense) > 3 * MAX_UNITS
    t0 = time.perf_counter()
    json.loads(dense)
    decode = time.perf_counter() - t0
    client, server = _pair()
    frame = client._seal(dense, KIND_MESSAGE)
    t0 = time.perf_counter()
    with pytest.raises(WireError):
        server.receive(frame)
    refused = time.perf_counter() - t0
    print(f"16 MiB of [0],: decode {decode:.2f} s, refused in {refused:.3f} s")
    assert refused < decode / 4, (refused, decode)


def test_a_frame_over_the_cap_is_refused_before_it_is_held_as_costly():
    """With `hold_units` set (a daemon's session, `Channel.on_costly`), a frame over the
    cap is refused at once, not held as `Costly`: held, its owner would charge it and
    wait out the debt before the decode refused it (ac4733b), a wait bought for nothing."""
    client, server = _pair()
    server.hold_units = 4096
    with pytest.raises(WireError, match="over the wire's cap"):
        server.receive(client._seal(_echo(MAX_UNITS + 1), KIND_MESSAGE))
    assert server._holding is None


def test_a_transfer_header_over_the_cap_closes_too():
    """Its data frames would follow and it cannot be told how many: no way to stay in
    step with the stream, whatever the role (the submitter's link to a node too)."""
    client, server = _pair()
    server.keep_bad_transfers = True  # (a submitter's link: raise_bad)
    run = (b'{"type":"run","claim":"c","job":"1.0","attempt":1,"spec":{"executable":"x"},'
           b'"files":[{"name":"f","size":5}' + b',{"name":"g","size":0}' * (MAX_UNITS // 5 + 1)
           + b']}')
    with pytest.raises(WireError):
        server.receive(client._seal(run, KIND_MESSAGE) + client._seal(b"hello", b"D"))


def test_a_kept_frame_over_the_cap_is_a_bad_message():
    """A frame kept undecoded (the master's demands, `keep_raw`) has left its place in
    the stream: decoded later, over the cap it is refused alone, not decoded."""
    client, server = _pair()
    server.keep_raw = lambda body: True
    (raw,) = server.receive(client._seal(_echo(MAX_UNITS + 1), KIND_MESSAGE))
    bad = server.decode(raw.body)
    assert "over the wire's cap" in bad.reason and bad.units == MAX_UNITS + 1


def _run() -> dict:
    return {"type": "run", "claim": "c" * 32, "job": "1.0", "attempt": 1,
            "spec": {"executable": "/bin/x", "transfer_executable": True,
                     "arguments": ["a"] * N,
                     "environment": {f"E{i}": "v" for i in range(10_000)},
                     "getenv": {f"G{i}": "v" for i in range(10_000)},
                     "iwd": "/w", "shared_fs": False, "input": None, "output": "o",
                     "error": "e", "transfer_output_files": [f"o{i}" for i in range(N)],
                     "when_to_transfer_output": "ON_EXIT", "cpus": 1},
            "files": [{"name": f"f{i}", "size": 1, "mode": 0o644} for i in range(N)]}


def _finished() -> dict:
    result = {"node": "n", "exit_code": 0, "signal": None,
              "rusage": {"utime": 1.0, "stime": 1.0, "maxrss_kb": 1}, "started": 1.0,
              "ended": 2.0, "removed": False, "reason": None,
              "missing": [f"m{i}" for i in range(N)],
              "refused": {f"r{i}": "why" for i in range(N)}, "outputs_over_limit": "x"}
    return {"type": "finished", "job": "1.0", "attempt": 1, "result": result,
            "files": [{"name": f"f{i}", "size": 1, "mode": 0o644} for i in range(N)],
            "claim_gone": True}


def _node_hello() -> dict:
    claim = {"claim": "c" * 32, "submitter": "s" * 24, "user": "u", "cpus": 1,
             "memory": 1, "gpus": [0, 1, 2, 3], "releasing": False}
    return {"type": "node-hello", "name": "n", "slots": 4096, "memory": 1, "gpus": 4,
            "attrs": {f"A{i}": 1 for i in range(1000)}, "claims": [claim] * 4096}


def _status_reply(nodes: int = 1000) -> dict:
    def node(n):
        return {"name": f"n{n}", "address": "h:1", "state": "up", "slots": 64,
                "slots_used": 1, "memory": 1, "memory_used": 1, "gpus": 0, "gpus_used": 0,
                "load": 0.0, "running": 1, "claims": {f"c{i}": 1 for i in range(64)},
                "arch": "x", "attrs": {f"A{i}": 1 for i in range(20)}, "seen_ago": 0.0,
                "results_waiting": 0, "oldest_result_age": 0.0}
    sub = {"submitter": "s", "user": "u", "host": "h", "pid": 1, "connected": True,
           "claims": 1, "slots": 1, "idle": 1, "share": 1.0}
    return {"type": "status-reply", "nodes": [node(i) for i in range(nodes)],
            "submitters": [sub] * 1000}


@pytest.mark.parametrize("build,role,figure", [
    (_run, "submit", 940_038), (_finished, "node", 1_000_040),
    (_node_hello, "node", 79_838), (_status_reply, "master", 223_006)])
def test_the_largest_honest_messages_are_well_under_the_cap(build, role, figure):
    """The figures of connection.MAX_UNITS's docstring, each at the schema's count
    limits (checked: JRS_STRICT's check of what we send), and their decode."""
    conn = Connection(root_key(b"k" * 32), role, is_client=True)
    conn.strict = True
    encoded = conn.encode(build())
    assert json_units(encoded) == figure
    assert figure * 2 < MAX_UNITS
    client, server = _pair()
    (event,) = server.receive(client._seal(encoded, KIND_MESSAGE))
    assert isinstance(event, Message) and event.units == figure


def test_encode_refuses_what_no_peer_would_take():
    conn = Connection(root_key(b"k" * 32), "submit", is_client=True)
    conn.strict = True
    conn.encode(_dense_run(MAX_UNITS))  # at the cap: sent
    with pytest.raises(MessageTooBig, match=r"'run'.*over the wire's cap of 2,097,152"):
        conn.encode(_dense_run(MAX_UNITS + 1))
    big = dict(_dense_run(100), spec={"executable": "x", "arguments": ["a" * (1 << 20)] * 17})
    with pytest.raises(MessageTooBig, match=r"'run' message of 17,825,9.. bytes is over"):
        conn.encode(big)
    # local, not the peer's fault: nothing is sent, the connection is not to be closed
    assert issubclass(MessageTooBig, LocalProtocolError)
    assert not issubclass(MessageTooBig, WireError)
    client, _server = _pair()
    with pytest.raises(MessageTooBig):  # nor a transfer opened by send_message
        client.send_message(_dense_run(MAX_UNITS + 1))
    assert client.sending_transfer == 0
