"""An in-memory crypto round trip, used by `jrs selftest` and the packaging tests."""

from __future__ import annotations

import os

from .._native import ensure_native


def run() -> str:
    ensure_native()
    import nacl
    from nacl.secret import SecretBox

    key = os.urandom(32)
    box = SecretBox(key)
    msg = os.urandom(1000)
    if box.decrypt(box.encrypt(msg)) != msg:
        raise RuntimeError("secretbox round trip failed")
    return f"PyNaCl {nacl.__version__}, secretbox round trip passed"
