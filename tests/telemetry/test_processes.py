"""The periodic process scan: fixture /proc, and the real one."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from agentd.telemetry.processes import ProcessScanner


def test_fixture_scan(data_dir):
    procs = {p.pid: p for p in ProcessScanner(str(data_dir / "proc")).scan({4242: 123})}
    tck = os.sysconf("SC_CLK_TCK")
    p = procs[4242]
    assert p.name == "my (odd) proc"  # a name with parentheses in it
    assert p.cpu_time_s == (1000 + 250) / tck
    assert p.rss_bytes == 1000 * os.sysconf("SC_PAGE_SIZE")
    assert p.create_time_s == round(1700000000 + 5000 / tck, 2)
    assert p.gpu_mem_bytes == 123 and procs[1].gpu_mem_bytes == 0
    assert p.user


def test_real_scan_ranks_busy_process_first():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        scanner = ProcessScanner(top_n=5)
        scanner.scan()
        time.sleep(0.5)
        procs = scanner.scan()
        assert len(procs) <= 10
        assert busy.pid in [p.pid for p in procs[:5]]  # sorted by CPU since the last scan
        assert all(p.create_time_s > 0 and p.name for p in procs)
    finally:
        busy.kill()
        busy.wait(timeout=10)
