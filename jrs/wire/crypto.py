"""The PyNaCl primitives the wire uses, imported once the native bundle is ready."""

from __future__ import annotations

import os

from .._native import ensure_native

ensure_native()

from nacl import __version__ as NACL_VERSION  # noqa: E402
from nacl.bindings import (  # noqa: E402
    crypto_scalarmult,
    crypto_scalarmult_base,
    crypto_secretbox_easy,
    crypto_secretbox_open_easy,
)
from nacl.exceptions import CryptoError  # noqa: E402

__all__ = ["NACL_VERSION", "CryptoError", "box", "dh", "ephemeral", "open_frame", "seal_frame",
           "unbox"]


def ephemeral() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair (secret, public)."""
    secret = os.urandom(32)
    return secret, crypto_scalarmult_base(secret)


def dh(secret: bytes, public: bytes) -> bytes:
    """X25519; an all-zero result (a low-order point) is refused."""
    shared = crypto_scalarmult(secret, public)
    if shared == bytes(32):
        raise CryptoError("peer sent a low-order public key")
    return shared


def box(key: bytes, nonce: bytes, plaintext: bytes) -> bytes:
    return crypto_secretbox_easy(plaintext, nonce, key)


def unbox(key: bytes, nonce: bytes, sealed: bytes) -> bytes:
    return crypto_secretbox_open_easy(sealed, nonce, key)


# The frame path calls libsodium's crypto_secretbox_easy/_open_easy through
# PyNaCl's own cffi module: the same primitive as box()/unbox(), without the
# wrapper's zero-filled output buffer and extra copies (three passes over every
# megabyte less). Known answers tie the two together in the tests.
try:
    from nacl._sodium import ffi as _ffi
    from nacl._sodium import lib as _lib

    _alloc = _ffi.new_allocator(should_clear_after_alloc=False)
except ImportError:  # pragma: no cover - a PyNaCl without its cffi module
    _lib = None

MAC_BYTES = 16


def seal_frame(key: bytes, nonce: bytes, payload: bytes, kind: bytes = b"") -> bytes:
    """`len(4, big-endian) || secretbox(kind || payload)`, built and sealed in place."""
    size = len(kind) + len(payload) + MAC_BYTES
    if _lib is None:
        return size.to_bytes(4, "big") + box(key, nonce, kind + payload)
    out = _alloc("unsigned char[]", 4 + size)
    out[0:4] = size.to_bytes(4, "big")
    start = 4 + MAC_BYTES
    out[start:start + len(kind)] = kind
    _ffi.memmove(out + start + len(kind), payload, len(payload))
    if _lib.crypto_secretbox_easy(out + 4, out + start, size - MAC_BYTES, nonce, key) != 0:
        raise CryptoError("encryption failed")
    return _ffi.buffer(out)[:]


def open_frame(key: bytes, nonce: bytes, sealed) -> memoryview:
    """Open a sealed body given as any contiguous buffer; no copy in, none out."""
    if _lib is None:
        return memoryview(unbox(key, nonce, bytes(sealed)))
    size = len(sealed) - MAC_BYTES
    if size < 0:
        raise CryptoError("frame shorter than its authenticator")
    out = _alloc("unsigned char[]", max(size, 1))
    with _ffi.from_buffer(sealed) as src:
        if _lib.crypto_secretbox_open_easy(out, src, len(sealed), nonce, key) != 0:
            raise CryptoError("Decryption failed. Ciphertext failed verification")
    return memoryview(_ffi.buffer(out, size))
