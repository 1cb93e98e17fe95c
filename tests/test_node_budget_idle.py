"""The node's message budget (jrs/node/budget.py) refills to its burst and no further:
a session, or a host, that kept quiet a long while gets the burst at once and then the
rate, not everything it could have sent meanwhile (else one idle for an hour could
flood for minutes). test_node_budget holds the burst and the rate from a fresh bucket;
a bucket uncapped on refill passed it (audit A15)."""

from __future__ import annotations

from jrs.node import budget as B


def _read_at_once(b: B.MessageBudget, key, now: float) -> int:
    """Messages of `key` read at `now` before the first wait."""
    n = 0
    while b.charge(key, now) == 0.0:
        n += 1
        assert n < 10 ** 6
    return n


def test_an_idle_session_gets_its_burst_again_not_all_it_missed():
    b = B.MessageBudget(rate=100, burst=500, host_rate=10 ** 6, host_burst=10 ** 6)
    b.open("s", "h", 0.0)
    first = _read_at_once(b, "s", 0.0)
    assert first == 500 + B.BATCH  # the burst and a batch of debt let run on
    again = _read_at_once(b, "s", 3600.0)  # an hour quiet: 360,000 messages' worth missed
    assert again == first, again


def test_an_idle_host_gets_its_burst_again_not_all_it_missed():
    b = B.MessageBudget(rate=10 ** 6, burst=10 ** 6, host_rate=100, host_burst=500)
    b.open(1, "h", 0.0)
    first = _read_at_once(b, 1, 0.0)
    assert first == 500 + B.BATCH
    b.close(1)
    b.open(2, "h", 3600.0)
    assert _read_at_once(b, 2, 3600.0) == first
