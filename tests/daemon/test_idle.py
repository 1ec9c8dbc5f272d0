"""An idle daemon sleeps: no thread of it polls in a loop (a radar with no group once spun a core)."""

from __future__ import annotations

import time

import psutil

from agentd.transport.fanout import LinkPool


def test_an_empty_link_pool_waits_out_its_timeout():
    pool = LinkPool()
    try:
        t0 = time.monotonic()
        for _ in range(5):
            assert pool.poll(0.05) == []
        assert time.monotonic() - t0 >= 0.25, "poll() over no links returned at once (a busy loop)"
    finally:
        pool.close()


def test_an_idle_agentd_uses_a_sliver_of_a_core(agentd):
    proc = psutil.Process(agentd.pid)
    time.sleep(0.5)  # past start-up
    before = proc.cpu_times()
    time.sleep(2.0)
    after = proc.cpu_times()
    used = (after.user + after.system) - (before.user + before.system)
    # Idle it uses ~1 % of a core (bench/agentd_overhead.py); a spinning thread uses 100 %.
    # The bound is loose on purpose: a loaded CI host must not make this fail.
    assert used < 0.6, f"an idle agentd used {used:.2f} s of CPU in 2 s: some thread spins"

