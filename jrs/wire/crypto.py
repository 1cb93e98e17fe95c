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

__all__ = ["NACL_VERSION", "CryptoError", "box", "dh", "ephemeral", "unbox"]


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
