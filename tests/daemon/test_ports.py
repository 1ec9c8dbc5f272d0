"""Ports for listeners started later (agentd.transport.ports)."""

from __future__ import annotations

from agentd.transport.ports import EPHEMERAL_RANGE_FILE, free_listen_port


def test_listen_ports_are_below_the_ephemeral_range_and_never_handed_out_twice():
    # A test starting 32 daemons picks 64 ports before any binds: no repeats among them.
    low = int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    picked = [free_listen_port() for _ in range(500)]
    assert len(set(picked)) == len(picked)
    assert all(p < low for p in picked)
