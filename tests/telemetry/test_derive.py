"""derive() on real HostReader samples and on synthetic counter resets."""

from __future__ import annotations

import time

import msgspec

from agentd.metrics.derive import derive
from agentd.metrics.samples import CgroupSample, CpuTimes, DiskCounters, NetCounters
from agentd.telemetry.collector import NodeCollector


def _burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


def test_real_samples_200ms_apart():
    c = NodeCollector("n", simulate_gpus=2)
    older = c.sample()
    _burn(0.2)
    newer = c.sample()
    d = derive(newer, older)
    assert 0.18 < d.interval_s < 5.0
    # this process spun one core for the whole interval
    assert 100.0 / len(d.cpu_per_core_pct) * 0.5 < d.cpu_pct <= 100.0
    assert all(0.0 <= p <= 100.0 for p in d.cpu_per_core_pct)
    assert d.mem_total_bytes > 0 and 0 < d.mem_used_pct < 100
    assert d.net_rx_bytes_per_s >= 0 and d.disk_write_bytes_per_s >= 0
    assert 0.0 <= d.cpu_pressure_pct <= 100.0
    assert len(d.gpus) == 2 and all(g.nvlink_tx_bytes_per_s is not None and g.nvlink_tx_bytes_per_s >= 0 for g in d.gpus)
    c.close()


def test_counter_reset_gives_zero_not_negative():
    c = NodeCollector("n", simulate_gpus=1)
    older = c.sample({"j": (None, [])})
    _burn(0.05)
    newer = c.sample({"j": (None, [])})
    h = newer.host
    reset_host = msgspec.structs.replace(
        h,
        cpu_total=CpuTimes(user_s=1.0, idle_s=1.0),
        cpu_per_core=[CpuTimes(user_s=1.0) for _ in h.cpu_per_core],
        net=[NetCounters(name=n.name, rx_bytes=0, tx_bytes=0) for n in h.net],
        disks=[DiskCounters(name=d.name) for d in h.disks],
        swap_in_bytes=0, swap_out_bytes=0,
    )
    reset_job = CgroupSample(job_id="j", cpu_usage_us=0, io_read_bytes=0)
    older_job = CgroupSample(job_id="j", cpu_usage_us=10**12, io_read_bytes=10**12, cpu_periods_total=10, cpu_throttled_total=5)
    older = msgspec.structs.replace(older, jobs=[older_job])
    newer = msgspec.structs.replace(newer, host=reset_host, jobs=[reset_job])
    d = derive(newer, older)
    values = [d.cpu_pct, d.net_rx_bytes_per_s, d.net_tx_bytes_per_s, d.disk_read_bytes_per_s,
              d.swap_in_bytes_per_s, d.jobs[0].cpu_pct, d.jobs[0].io_read_bytes_per_s, d.jobs[0].cpu_throttled_pct]
    values += d.cpu_per_core_pct + [v for pair in d.net_per_if.values() for v in pair]
    assert all(v == 0.0 for v in values), values
    c.close()


def test_boot_id_change_means_zero_rates():
    a = NodeCollector("n", simulate_gpus=1)
    b = NodeCollector("n", simulate_gpus=1)  # a restarted daemon: new boot_id
    older = a.sample()
    _burn(0.1)
    newer = b.sample()
    assert newer.boot_id != older.boot_id
    d = derive(newer, older)
    assert d.interval_s == 0.0 and d.cpu_pct == 0.0 and d.net_rx_bytes_per_s == 0.0
    assert all(g.nvlink_tx_bytes_per_s is None for g in d.gpus)
    assert d.mem_total_bytes == newer.host.mem_total_bytes  # instantaneous values still shown
    a.close(), b.close()


def test_busy_process_cpu_pct_derives_from_one_scan_sample():
    import subprocess
    import sys
    import time as _time

    from agentd.metrics import CpuTimes, HostSample, NodeSample, derive
    from agentd.telemetry.processes import ProcessScanner

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        scanner = ProcessScanner(top_n=10)
        scanner.scan()
        _time.sleep(1.0)
        procs = scanner.scan()
        sample = NodeSample(node="n", mono_s=1.0, wall_s=1.0, host=HostSample(cpu_total=CpuTimes()), procs=procs)
        derived = {p.pid: p for p in derive(sample, None).procs}
        assert busy.pid in derived, "the busiest process is missing from the scan"
        assert derived[busy.pid].cpu_pct > 40, derived[busy.pid]
    finally:
        busy.kill()
        busy.wait()
