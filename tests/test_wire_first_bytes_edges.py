"""slots.HostBytes (R11) at its edges: a host quiet for long gets its burst again and
no more, and a host in debt is never forgotten when the table is pruned (forgotten,
its next read would start from a full bucket). test_wire_first_bytes passed with
either rule taken out (audit A15)."""

from __future__ import annotations

import pytest

from jrs.wire.slots import HostBytes


def test_a_quiet_host_refills_to_its_burst_and_no_further():
    b = HostBytes(rate=100.0, burst=1000.0)
    assert b.take("h", 1000, 0.0) == 0.0
    assert b.take("h", 1000, 3600.0) == 0.0  # an hour quiet: its burst, at once
    assert b.take("h", 200, 3600.0) == pytest.approx(2.0)  # not 360,000 bytes more


def test_a_host_in_debt_outlives_a_prune():
    b = HostBytes(rate=100.0, burst=1000.0, kept=2)
    assert b.take("busy", 5000, 0.0) > 0  # its debt: the burst's worth
    b.take("a", 10, 0.0)
    b.take("b", 10, 1.0)  # the table is full: pruned first
    assert b.take("busy", 0, 1.0) == pytest.approx(9.0)  # its debt stands, less 1 s


def test_most_wait_keeps_a_hosts_debt_within_that_many_seconds():
    """R12: the first-bytes debt of a burst (32 s) outlasted the daemons' 30 s
    first-message deadline it was spent within; `most_wait` bounds it (FIRST_BYTES_MOST_WAIT)."""
    b = HostBytes(rate=100.0, burst=5000.0, most_wait=10.0)
    for _ in range(100):
        wait = b.take("h", 1000, 0.0)
    assert wait == pytest.approx(10.0)  # not the burst's 50 s
    assert b.take("h", 0, 10.0) == 0.0
    wide = HostBytes(rate=100.0, burst=500.0, most_wait=10.0)  # the burst is the bound
    for _ in range(100):
        wait = wide.take("h", 1000, 0.0)
    assert wait == pytest.approx(5.0)


def test_a_take_past_refuse_past_is_said_and_not_charged():
    """aio.Server's connections a host opens (CONNECT_RATE): one that would wait past
    CONNECT_MOST_WAIT is closed, and costs its host no more wait."""
    b = HostBytes(rate=10.0, burst=20.0)
    for _ in range(20):
        assert b.take("h", 1, 0.0, refuse_past=1.0) == 0.0
    waits = [b.take("h", 1, 0.0, refuse_past=1.0) for _ in range(10)]
    assert waits == pytest.approx([0.1 * i for i in range(1, 11)])  # charged: within 1 s
    refused = [b.take("h", 1, 0.0, refuse_past=1.0) for _ in range(100)]
    assert all(w > 1.0 for w in refused)
    assert refused == pytest.approx([1.1] * 100)  # not charged: the wait does not grow
    assert b.take("h", 0, 1.0) == 0.0  # paid off as if they never came (charged: 11 s)
