"""The one place where rates and percentages are computed from pairs of raw samples.

Live views, ``agentctl watch``, Prometheus and replay all call :func:`derive`, so a value
shown live and the same value replayed from a recording are computed by the same code.

Counter resets (a reboot, a restarted daemon, a re-created cgroup, an NVML counter wrap) never
yield a negative or huge rate: a counter that went backwards contributes a rate of 0 for that
interval, and samples from a different ``boot_id`` are not paired at all.
"""

from __future__ import annotations

from agentd.metrics.samples import (
    AppMetric,
    CgroupSample,
    CpuTimes,
    DerivedCgroup,
    DerivedGpu,
    DerivedNode,
    DerivedProc,
    GpuSample,
    NodeSample,
    Pressure,
)

__all__ = ["derive", "derive_cgroup", "derive_gpu", "counter_rate"]


def counter_rate(new: float | None, old: float | None, interval_s: float) -> float | None:
    """Per-second rate of a cumulative counter; 0 after a reset, None when unknown."""
    if new is None or old is None or interval_s <= 0:
        return None
    delta = new - old
    if delta < 0:
        return 0.0
    return delta / interval_s


def _rate0(new: float, old: float, interval_s: float) -> float:
    rate = counter_rate(new, old, interval_s)
    return 0.0 if rate is None else rate


def _busy_pct(new: CpuTimes, old: CpuTimes) -> tuple[float, float]:
    """CPU busy and iowait percentages between two cumulative readings (100 = whole CPU)."""
    fields = ("user_s", "nice_s", "system_s", "idle_s", "iowait_s", "irq_s", "softirq_s", "steal_s")
    deltas = {f: getattr(new, f) - getattr(old, f) for f in fields}
    if any(d < 0 for d in deltas.values()):
        return 0.0, 0.0
    total = sum(deltas.values())
    if total <= 0:
        return 0.0, 0.0
    idle = deltas["idle_s"] + deltas["iowait_s"]
    return 100.0 * (total - idle) / total, 100.0 * deltas["iowait_s"] / total


def _pressure_pct(new: dict[str, Pressure], old: dict[str, Pressure], key: str, interval_s: float) -> float:
    """Share of wall time in which some task stalled on ``key`` (0-100)."""
    n, o = new.get(key), old.get(key)
    if n is None or o is None:
        return 0.0
    rate = counter_rate(n.some_total_us, o.some_total_us, interval_s * 1e6)
    return min(100.0, 100.0 * (rate or 0.0))


def derive_gpu(new: GpuSample, old: GpuSample | None, interval_s: float) -> DerivedGpu:
    """Rates and percentages of one GPU; ``old`` may be None for the first sample."""
    mem_pct = None
    if new.mem_used_bytes is not None and new.mem_total_bytes:
        mem_pct = 100.0 * new.mem_used_bytes / new.mem_total_bytes
    nv_tx = nv_rx = None
    if old is not None:
        nv_tx = counter_rate(new.nvlink_tx_bytes, old.nvlink_tx_bytes, interval_s)
        nv_rx = counter_rate(new.nvlink_rx_bytes, old.nvlink_rx_bytes, interval_s)
    return DerivedGpu(
        index=new.index,
        uuid=new.uuid,
        sm_util_pct=new.sm_util_pct,
        mem_util_pct=new.mem_util_pct,
        mem_used_bytes=new.mem_used_bytes,
        mem_total_bytes=new.mem_total_bytes,
        mem_used_pct=mem_pct,
        power_w=None if new.power_mw is None else new.power_mw / 1000.0,
        power_limit_w=None if new.power_limit_mw is None else new.power_limit_mw / 1000.0,
        temp_c=new.temp_c,
        sm_clock_mhz=new.sm_clock_mhz,
        mem_clock_mhz=new.mem_clock_mhz,
        pcie_tx_bytes_per_s=new.pcie_tx_bytes_per_s,
        pcie_rx_bytes_per_s=new.pcie_rx_bytes_per_s,
        nvlink_tx_bytes_per_s=nv_tx,
        nvlink_rx_bytes_per_s=nv_rx,
        throttle_reasons=new.throttle_reasons,
        ecc_uncorrected_total=new.ecc_uncorrected_total,
        xid_total=new.xid_total,
        processes=new.processes,
    )


def derive_cgroup(
    new: CgroupSample,
    old: CgroupSample | None,
    interval_s: float,
    app_new: list[AppMetric] = (),  # type: ignore[assignment]
    app_old: list[AppMetric] = (),  # type: ignore[assignment]
) -> DerivedCgroup:
    """Rates of one job's cgroup and its application metrics; ``old`` None on first sight."""
    app: dict[str, float] = {}
    old_app = {m.name: m for m in app_old}
    for metric in app_new:
        if metric.counter:
            prev = old_app.get(metric.name)
            if prev is not None:
                app[metric.name + "_per_s"] = _rate0(metric.value, prev.value, interval_s)
            app[metric.name + "_total"] = metric.value
        else:
            app[metric.name] = metric.value
    if old is None:
        old = new  # first sight: every rate is 0, never garbage
    cpu_rate_us = _rate0(new.cpu_usage_us, old.cpu_usage_us, interval_s)
    periods = new.cpu_periods_total - old.cpu_periods_total
    throttled = new.cpu_throttled_total - old.cpu_throttled_total
    throttled_pct = 100.0 * throttled / periods if periods > 0 and throttled >= 0 else 0.0
    return DerivedCgroup(
        job_id=new.job_id,
        cpu_pct=cpu_rate_us / 1e6 * 100.0,
        cpu_throttled_pct=throttled_pct,
        mem_current_bytes=new.mem_current_bytes,
        mem_peak_bytes=new.mem_peak_bytes,
        mem_limit_bytes=new.mem_limit_bytes,
        oom_kills_total=new.oom_kills_total,
        io_read_bytes_per_s=_rate0(new.io_read_bytes, old.io_read_bytes, interval_s),
        io_write_bytes_per_s=_rate0(new.io_write_bytes, old.io_write_bytes, interval_s),
        pids_current=new.pids_current,
        cpu_pressure_pct=_pressure_pct(new.pressure, old.pressure, "cpu", interval_s),
        mem_pressure_pct=_pressure_pct(new.pressure, old.pressure, "memory", interval_s),
        io_pressure_pct=_pressure_pct(new.pressure, old.pressure, "io", interval_s),
        frozen=new.frozen,
        gpu_mem_bytes=new.gpu_mem_bytes,
        gpu_sm_pct=new.gpu_sm_pct,
        app=app,
    )


def derive(newer: NodeSample, older: NodeSample | None) -> DerivedNode:
    """Derive a node's rates and percentages from two consecutive samples.

    ``older`` may be None (first sample) or from another boot of the daemon or host; then
    every rate is 0 and the instantaneous values are still reported.
    """
    if older is not None and (older.boot_id != newer.boot_id or older.node != newer.node):
        older = None
    interval_s = 0.0 if older is None else newer.mono_s - older.mono_s
    if interval_s <= 0:
        older = None
        interval_s = 0.0
    base = older or newer
    h, ho = newer.host, base.host

    cpu_pct, iowait_pct = _busy_pct(h.cpu_total, ho.cpu_total)
    per_core = [
        _busy_pct(n, o)[0] for n, o in zip(h.cpu_per_core, ho.cpu_per_core)
    ] if len(h.cpu_per_core) == len(ho.cpu_per_core) else [0.0] * len(h.cpu_per_core)

    old_net = {n.name: n for n in ho.net}
    net_per_if: dict[str, tuple[float, float]] = {}
    for n in h.net:
        o = old_net.get(n.name, n)
        net_per_if[n.name] = (_rate0(n.rx_bytes, o.rx_bytes, interval_s), _rate0(n.tx_bytes, o.tx_bytes, interval_s))
    old_disk = {d.name: d for d in ho.disks}
    disk_per_dev: dict[str, tuple[float, float]] = {}
    for d in h.disks:
        od = old_disk.get(d.name, d)
        disk_per_dev[d.name] = (
            _rate0(d.read_bytes, od.read_bytes, interval_s),
            _rate0(d.write_bytes, od.write_bytes, interval_s),
        )
    # Loopback traffic is local chatter, not cluster throughput.
    external = [v for k, v in net_per_if.items() if k != "lo"]

    old_gpus = {g.index: g for g in base.gpus} if older is not None else {}
    gpus = [derive_gpu(g, old_gpus.get(g.index), interval_s) for g in newer.gpus]

    old_jobs = {j.job_id: j for j in base.jobs} if older is not None else {}
    app_by_job: dict[str, list[AppMetric]] = {}
    for m in newer.app:
        app_by_job.setdefault(m.job_id, []).append(m)
    old_app_by_job: dict[str, list[AppMetric]] = {}
    if older is not None:
        for m in older.app:
            old_app_by_job.setdefault(m.job_id, []).append(m)
    jobs = [
        derive_cgroup(j, old_jobs.get(j.job_id), interval_s, app_by_job.get(j.job_id, []), old_app_by_job.get(j.job_id, []))
        for j in newer.jobs
    ]

    procs = _derive_procs(newer)
    mem_pct = 100.0 * h.mem_used_bytes / h.mem_total_bytes if h.mem_total_bytes else 0.0
    return DerivedNode(
        node=newer.node,
        wall_s=newer.wall_s,
        interval_s=interval_s,
        cpu_pct=cpu_pct,
        cpu_per_core_pct=per_core,
        iowait_pct=iowait_pct,
        load_1=h.load_1,
        mem_total_bytes=h.mem_total_bytes,
        mem_used_bytes=h.mem_used_bytes,
        mem_used_pct=mem_pct,
        swap_used_bytes=h.swap_used_bytes,
        swap_in_bytes_per_s=_rate0(h.swap_in_bytes, ho.swap_in_bytes, interval_s),
        swap_out_bytes_per_s=_rate0(h.swap_out_bytes, ho.swap_out_bytes, interval_s),
        net_rx_bytes_per_s=sum(v[0] for v in external),
        net_tx_bytes_per_s=sum(v[1] for v in external),
        disk_read_bytes_per_s=sum(v[0] for v in disk_per_dev.values()),
        disk_write_bytes_per_s=sum(v[1] for v in disk_per_dev.values()),
        net_per_if=net_per_if,
        disk_per_dev=disk_per_dev,
        cpu_pressure_pct=_pressure_pct(h.pressure, ho.pressure, "cpu", interval_s),
        mem_pressure_pct=_pressure_pct(h.pressure, ho.pressure, "memory", interval_s),
        io_pressure_pct=_pressure_pct(h.pressure, ho.pressure, "io", interval_s),
        temps_c=h.temps_c,
        procs_total=h.procs_total,
        gpus=gpus,
        jobs=jobs,
        procs=procs,
    )


def _derive_procs(newer: NodeSample) -> list[DerivedProc]:
    """CPU% of scanned processes between the two scans recorded in each ProcSample."""
    out = []
    for p in newer.procs:
        cpu = 0.0
        if p.cpu_time_prev_s is not None:
            cpu = 100.0 * _rate0(p.cpu_time_s, p.cpu_time_prev_s, p.scan_interval_s)
        out.append(DerivedProc(pid=p.pid, name=p.name, user=p.user, cpu_pct=cpu, rss_bytes=p.rss_bytes, gpu_mem_bytes=p.gpu_mem_bytes))
    return out
