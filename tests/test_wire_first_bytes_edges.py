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
