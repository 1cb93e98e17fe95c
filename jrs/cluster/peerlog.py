"""Moved to jrs/wire/peerlog.py (shared by every role); kept so imports here still work."""

from __future__ import annotations

from ..wire.peerlog import MAX_SOURCES, PeerLog, excerpt

__all__ = ["MAX_SOURCES", "PeerLog", "excerpt"]
