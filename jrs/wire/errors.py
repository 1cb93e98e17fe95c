"""Errors of the wire layer."""

from __future__ import annotations


class WireError(Exception):
    """The peer broke the protocol or failed authentication: close the connection."""


class VersionMismatch(WireError):
    """The peer speaks another wire protocol version."""


class MessageError(ValueError):
    """A well-sealed frame whose message is not valid: answer with an error, keep going."""


class LocalProtocolError(Exception):
    """We asked the protocol core for something the protocol forbids (a bug on our side,
    as h11's LocalProtocolError): a message in the middle of a transfer, data outside one."""


class MessageTooBig(LocalProtocolError):
    """A message we were about to send encodes to more than one frame may carry
    (frames.MAX_MESSAGE bytes) or more JSON values and keys than a receiver decodes
    (connection.MAX_UNITS). Local, not a WireError: nothing was sent, the connection
    is in step and stays open, and retrying the same message cannot help; the caller
    ends what needed it (a job fails with the text, which says what is too big)."""


class TransferInProgress(LocalProtocolError):
    """A message was sent while a transfer's data frames are still owed."""


class AuthError(WireError):
    """The handshake's proof failed: the peer does not hold our secret (or we not its)."""


class HandshakeClosed(WireError):
    """The peer closed, or stayed silent, during the handshake: busy or gone, not a proof
    failure; an honest client tries again."""
