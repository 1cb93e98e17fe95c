"""Errors of the wire layer."""

from __future__ import annotations


class WireError(Exception):
    """The peer broke the protocol or failed authentication: close the connection."""


class VersionMismatch(WireError):
    """The peer speaks another wire protocol version."""


class MessageError(ValueError):
    """A well-sealed frame whose message is not valid: answer with an error, keep going."""
