"""An in-memory handshake and message round trip: proves the crypto bundle works here;
and the echo peer the wire's tests and benchmark talk to."""

from __future__ import annotations

import os


def run() -> str:
    from .connection import Connection, Message
    from .crypto import NACL_VERSION, box, unbox
    from .keys import root_key

    key = os.urandom(32)
    if unbox(key, bytes(24), box(key, bytes(24), b"x" * 1000)) != b"x" * 1000:
        raise RuntimeError("secretbox round trip failed")
    root = root_key(os.urandom(32))
    client = Connection(root, "tool", is_client=True)
    server = Connection(root, "node", is_client=False)
    server.receive(client.initiate())
    client.receive(server.data_to_send())
    events = server.receive(client.data_to_send() + client.send_message(
        {"type": "ping", "seq": 7}))
    if Message({"type": "ping", "seq": 7}) not in events:
        raise RuntimeError("handshake round trip failed")
    return f"PyNaCl {NACL_VERSION}, handshake and secretbox round trip passed"


async def echo(channel) -> None:
    """Serve a channel by sending back what comes: a message as it is, a `blob` and its
    data as one transfer (the test and benchmark traffic of the schema)."""
    while True:
        item = await channel.recv()
        if item["type"] == "blob":
            async with channel.transfer(item) as unit:
                while unit.left:
                    unit.write(await channel.recv())
                    await unit.drain()
        else:
            channel.send(item)
        await channel.drain()
