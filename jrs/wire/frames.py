"""Frames after the handshake: `len(4, big-endian) || secretbox(payload)`.

Nonces are not sent: each direction has its own key and a counter both sides
keep, so a replayed, reordered, dropped, truncated or modified frame fails
to open and the connection ends. The length is checked against the maximum
before any byte of the body is buffered.
"""

from __future__ import annotations

from .crypto import MAC_BYTES, CryptoError, open_frame, seal_frame
from .errors import WireError

MAX_MESSAGE = 16 << 20  # the largest message or data chunk a caller may send
MAX_PAYLOAD = MAX_MESSAGE + 1  # plus the frame-kind byte
MAX_SEALED = MAX_PAYLOAD + MAC_BYTES
_ZERO16 = bytes(16)


def _nonce(counter: int) -> bytes:
    return _ZERO16 + counter.to_bytes(8, "big")


class FrameEncoder:
    """Seals payloads for one direction."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._counter = 0

    def seal(self, payload: bytes, kind: bytes = b"") -> bytes:
        """The frame carrying `kind + payload` (concatenated inside the box, not here)."""
        if len(kind) + len(payload) > MAX_PAYLOAD:
            raise WireError(f"frame of {len(kind) + len(payload)} bytes exceeds the "
                            f"{MAX_PAYLOAD}-byte limit")
        frame = seal_frame(self._key, _nonce(self._counter), payload, kind)
        self._counter += 1
        return frame


class FrameDecoder:
    """Opens frames for one direction from a byte stream fed in any pieces."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._counter = 0
        self._buf = bytearray()
        self._need = -1  # body length of the frame being read, -1 while reading a header
        # the largest payload the first frame may carry (0: any): a server's first frame
        # is the client's wire hello, so a big one is refused before it is buffered
        self.first_max = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def discard(self) -> None:
        """Drop what is buffered (the stream is given up)."""
        self._buf = bytearray()
        self._need = -1

    def feed(self, data: bytes) -> list[memoryview]:
        """Add bytes; return every payload now complete (possibly none)."""
        buf = self._buf
        buf += data
        out = []
        pos = 0
        while True:
            if self._need < 0:
                if len(buf) - pos < 4:
                    break
                size = int.from_bytes(buf[pos:pos + 4], "big")
                if size < MAC_BYTES or size > MAX_SEALED:
                    raise WireError(f"frame length {size} out of range")
                if self.first_max and not self._counter and size > self.first_max + MAC_BYTES:
                    raise WireError(f"first frame of {size} bytes: a hello is at most "
                                    f"{self.first_max}")
                self._need = size
                pos += 4
            if len(buf) - pos < self._need:
                break
            try:
                with memoryview(buf) as view, view[pos:pos + self._need] as sealed:
                    out.append(open_frame(self._key, _nonce(self._counter), sealed))
            except CryptoError:
                raise WireError("frame failed authentication (tampered, replayed, reordered "
                                "or from the wrong direction)")
            pos += self._need
            self._need = -1
            self._counter += 1
        if pos:
            del buf[:pos]
        return out
