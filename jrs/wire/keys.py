"""Key derivation: from the shared secret file to per-session, per-direction keys.

    root  = BLAKE2b-256(secret, key="JRS wire v1 root")          never a box key
    th    = BLAKE2b-256(msg1 || msg2 without its tag)             the transcript
    chain = BLAKE2b-512(th || X25519(e_self, e_peer), key=root)   needs both: the
            secret (authentication) and the ephemerals (forward secrecy)
    c2s   = BLAKE2b-256("c2s", key=chain)   client -> server frames
    s2c   = BLAKE2b-256("s2c", key=chain)   server -> client frames
    proof = BLAKE2b-256("confirm", key=chain): the server's tag over th

Only hashlib is needed here; X25519 comes from PyNaCl (see crypto.py).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

ROOT_CONTEXT = b"JRS wire v1 root"
TAG_BYTES = 32


def root_key(secret: bytes) -> bytes:
    """The 32-byte root key every session key descends from."""
    return hashlib.blake2b(secret, key=ROOT_CONTEXT, digest_size=32).digest()


def mac(key: bytes, *parts: bytes) -> bytes:
    """Keyed BLAKE2b over length-prefixed parts (no ambiguity between parts)."""
    h = hashlib.blake2b(key=key, digest_size=TAG_BYTES)
    for part in parts:
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


def tags_equal(a: bytes, b: bytes) -> bool:
    """Compare two MACs in constant time (an early-exit `==` leaks how many bytes match)."""
    return hmac.compare_digest(a, b)


def transcript(*messages: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=32)
    for m in messages:
        h.update(len(m).to_bytes(4, "big"))
        h.update(m)
    return h.digest()


@dataclass(frozen=True)
class SessionKeys:
    """Everything a finished handshake yields."""

    send: bytes
    recv: bytes
    confirm: bytes


def session_keys(root: bytes, th: bytes, shared: bytes, is_client: bool) -> SessionKeys:
    chain = hashlib.blake2b(th + shared, key=root, digest_size=64).digest()
    c2s = hashlib.blake2b(b"c2s", key=chain, digest_size=32).digest()
    s2c = hashlib.blake2b(b"s2c", key=chain, digest_size=32).digest()
    confirm = hashlib.blake2b(b"confirm", key=chain, digest_size=32).digest()
    return SessionKeys(c2s, s2c, confirm) if is_client else SessionKeys(s2c, c2s, confirm)
