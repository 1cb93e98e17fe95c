"""The nested parts of what peers send the master, checked in one place.

The wire schema checks a message's top-level fields; what is inside them (a
node's claims and attributes, a submitter's requests and progress) arrives
here. Each function returns a clean value or raises `PayloadError`, so nothing
a peer sends reaches the pool's books with a type the pool did not expect, and
every size and count a peer controls is bounded.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

MAX_ATTRS = 256
MAX_CLAIMS = 4096
MAX_REQUESTS = 1024
MAX_CLUSTERS = 1024
MAX_TEXT = 4096
MAX_REQUIREMENTS = 16384
# What one request's ad (names and values) and one demand in all (every request's key,
# requirements and ad) may weigh: the master parses and evaluates them (under a budget
# per submitter and round, jrs/cluster/pool.py) and keeps them. 1,024 honest requests
# of 1 KiB each fit; 1,024 of 16 KiB do not.
MAX_AD = 16384
MAX_DEMAND = 1 << 20
MAX_COUNT = 10 ** 9
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}\Z")


class PayloadError(ValueError):
    """A field inside a message is of the wrong type or too big."""


def ident(value: Any, what: str) -> str:
    """A claim, submitter or request id: a short printable token."""
    if not isinstance(value, str) or not _ID.match(value):
        raise PayloadError(f"{what} must be a short id of letters, digits and ._:@+-")
    return value


def text(value: Any, what: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise PayloadError(f"{what} must be a string")
    if len(value) > limit:
        raise PayloadError(f"{what} is longer than {limit} characters")
    return value


def count(value: Any, what: str, default: Optional[int] = None, limit: int = MAX_COUNT) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise PayloadError(f"{what} must be an integer from 0 to {limit}")
    return value


def number(value: Any, what: str, default: float = 0.0) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise PayloadError(f"{what} must be a number")
    return float(value)


def _scalar(value: Any, what: str) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return text(value, what)
    raise PayloadError(f"{what} must be a string, number or boolean")


def attrs(value: Any, what: str = "attrs") -> dict:
    """A ClassAd of plain values: at most MAX_ATTRS names, scalar values only."""
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be an object")
    if len(value) > MAX_ATTRS:
        raise PayloadError(f"{what} has more than {MAX_ATTRS} attributes")
    out = {}
    for k, v in value.items():
        name = text(k, f"{what} name", 100)
        out[name] = _scalar(v, f"{what}.{name[:40]}")
    return out


def id_list(value: Any, what: str, limit: int = MAX_CLAIMS) -> list:
    if not isinstance(value, list) or len(value) > limit:
        raise PayloadError(f"{what} must be a list of at most {limit} ids")
    return [ident(v, f"{what} entry") for v in value]


def node_claims(value: Any) -> list:
    """node-hello's claims: [{claim, submitter, user, cpus, memory, gpus: [ids], releasing?}]."""
    if not isinstance(value, list) or len(value) > MAX_CLAIMS:
        raise PayloadError(f"claims must be a list of at most {MAX_CLAIMS} objects")
    out = []
    for c in value:
        if not isinstance(c, dict):
            raise PayloadError("each claim must be an object")
        gpus = c.get("gpus") or []
        if not isinstance(gpus, list) or len(gpus) > 1024:
            raise PayloadError("a claim's gpus must be a list")
        out.append({"claim": ident(c.get("claim"), "claim"),
                    "submitter": ident(c.get("submitter"), "claim submitter"),
                    "user": text(c.get("user"), "claim user", 256),
                    "cpus": count(c.get("cpus"), "claim cpus", 0),
                    "memory": count(c.get("memory"), "claim memory", 0),
                    "gpus": len(gpus), "releasing": c.get("releasing") is True})
    return out


def requests(value: Any) -> list:
    """demand's requests: [{key, count, cpus, memory, gpus, requirements?, ad?, weight?}]."""
    if not isinstance(value, list) or len(value) > MAX_REQUESTS:
        raise PayloadError(f"requests must be a list of at most {MAX_REQUESTS} objects")
    out = []
    total = 0
    for r in value:
        if not isinstance(r, dict):
            raise PayloadError("each request must be an object")
        weight = r.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not math.isfinite(weight) or weight <= 0:
            weight = 1.0
        key = text(r.get("key"), "request key", MAX_REQUIREMENTS + 256)
        requirements = text(r.get("requirements") or "", "requirements", MAX_REQUIREMENTS)
        ad = attrs(r.get("ad") or {}, "request ad")
        size = sum(len(k) + (len(v) if isinstance(v, str) else 8) for k, v in ad.items())
        if size > MAX_AD:
            raise PayloadError(f"a request ad is larger than {MAX_AD} characters")
        total += len(key) + len(requirements) + size
        if total > MAX_DEMAND:
            raise PayloadError(f"the requests' keys, requirements and ads are larger than "
                               f"{MAX_DEMAND} characters in all")
        out.append({"key": key,
                    "count": count(r.get("count"), "request count"),
                    "cpus": max(1, count(r.get("cpus"), "request cpus", 1, 1 << 20)),
                    "memory": count(r.get("memory"), "request memory", 0),
                    "gpus": count(r.get("gpus"), "request gpus", 0, 1 << 16),
                    "requirements": requirements,
                    "ad": ad,
                    "weight": min(float(weight), 1e6)})
    return out


def clusters(value: Any) -> list:
    """progress/hello clusters, for display only: objects of scalars."""
    if not isinstance(value, list) or len(value) > MAX_CLUSTERS:
        raise PayloadError(f"clusters must be a list of at most {MAX_CLUSTERS} objects")
    out = []
    for c in value:
        if not isinstance(c, dict):
            raise PayloadError("each cluster must be an object")
        out.append(attrs(c, "cluster"))
    return out
