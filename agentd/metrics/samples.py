"""Sample structs: raw counters exactly as read, with a monotonic and a wall timestamp.

Nothing here is a rate. Counters (``*_total``, ``*_us``, ``*_bytes`` on net/disk) only grow
until a reset (reboot, daemon restart, cgroup re-creation); :func:`agentd.metrics.derive`
turns a pair of samples into rates and percentages and copes with resets.

Units are in the field names: ``_bytes``, ``_us`` (microseconds), ``_s`` (seconds),
``_mw`` (milliwatts), ``_mj`` (millijoules), ``_c`` (degrees Celsius), ``_mhz``, ``_pct``.
"""

from __future__ import annotations

import msgspec


class Struct(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base for every telemetry struct: immutable, keyword-only, compact on the wire.

    Subclasses repeat ``frozen=True``: msgspec inherits it, but a type checker reads each
    class's own keywords (a dataclass transform) and would call the subclass mutable.
    """


class CpuTimes(Struct, frozen=True):
    """Cumulative CPU time in seconds, as in /proc/stat."""

    user_s: float = 0.0
    nice_s: float = 0.0
    system_s: float = 0.0
    idle_s: float = 0.0
    iowait_s: float = 0.0
    irq_s: float = 0.0
    softirq_s: float = 0.0
    steal_s: float = 0.0


class NetCounters(Struct, frozen=True):
    """Cumulative counters of one network interface."""

    name: str
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    rx_errors: int = 0
    tx_errors: int = 0
    rx_drops: int = 0
    tx_drops: int = 0


class DiskCounters(Struct, frozen=True):
    """Cumulative counters of one block device."""

    name: str
    read_bytes: int = 0
    write_bytes: int = 0
    reads: int = 0
    writes: int = 0
    busy_ms: int = 0


class Pressure(Struct, frozen=True):
    """Pressure stall information of one resource (/proc/pressure/* or a cgroup's *.pressure).

    ``*_total_us`` are cumulative stall times; ``*_avg10_pct`` are the kernel's own 10 s averages.
    ``full`` is absent for the CPU on older kernels.
    """

    some_total_us: int = 0
    full_total_us: int = 0
    some_avg10_pct: float = 0.0
    full_avg10_pct: float = 0.0


class HostSample(Struct, frozen=True):
    """One reading of the host: CPU, memory, swap, network, disks, pressure, temperatures."""

    cpu_total: CpuTimes
    cpu_per_core: list[CpuTimes] = []
    load_1: float = 0.0
    load_5: float = 0.0
    load_15: float = 0.0
    mem_total_bytes: int = 0
    mem_available_bytes: int = 0
    mem_used_bytes: int = 0
    swap_total_bytes: int = 0
    swap_used_bytes: int = 0
    swap_in_bytes: int = 0
    swap_out_bytes: int = 0
    net: list[NetCounters] = []
    disks: list[DiskCounters] = []
    pressure: dict[str, Pressure] = {}
    temps_c: dict[str, float] = {}
    procs_total: int = 0


class GpuProcess(Struct, frozen=True):
    """A process holding memory on a GPU (NVML's running compute/graphics processes)."""

    pid: int
    used_bytes: int = 0
    sm_pct: float | None = None


class GpuSample(Struct, frozen=True):
    """One reading of one GPU. ``None`` means the driver does not offer that value."""

    index: int
    uuid: str = ""
    sm_util_pct: float | None = None
    mem_util_pct: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    power_mw: int | None = None
    power_limit_mw: int | None = None
    energy_mj: int | None = None
    temp_c: float | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    # NVML reports PCIe throughput as a rate (KB/s over a 20 ms window), not a counter.
    pcie_tx_bytes_per_s: float | None = None
    pcie_rx_bytes_per_s: float | None = None
    nvlink_tx_bytes: int | None = None
    nvlink_rx_bytes: int | None = None
    throttle_reasons: int = 0
    ecc_corrected_total: int | None = None
    ecc_uncorrected_total: int | None = None
    xid_total: int | None = None
    processes: list[GpuProcess] = []


class CgroupSample(Struct, frozen=True):
    """One reading of a job's cgroup (v1 or v2), raw counters only."""

    job_id: str
    cpu_usage_us: int = 0
    cpu_user_us: int = 0
    cpu_system_us: int = 0
    cpu_periods_total: int = 0
    cpu_throttled_total: int = 0
    cpu_throttled_us: int = 0
    mem_current_bytes: int = 0
    mem_peak_bytes: int = 0
    mem_limit_bytes: int | None = None
    oom_kills_total: int = 0
    io_read_bytes: int = 0
    io_write_bytes: int = 0
    pids_current: int = 0
    pressure: dict[str, Pressure] = {}
    frozen: bool = False
    # GPU memory held by the job's pids (from NVML's process list), keyed by GPU index.
    gpu_mem_bytes: dict[int, int] = {}
    gpu_sm_pct: dict[int, float] = {}


class AppMetric(Struct, frozen=True):
    """A job's own metric as reported by the job (tokens, samples, loss...).

    ``counter`` values only grow (rates are derived); gauges are shown as they are.
    """

    job_id: str
    name: str
    value: float
    counter: bool = False


class ProcSample(Struct, frozen=True):
    """One process from the periodic full process scan (for "busiest processes" views)."""

    pid: int
    name: str
    user: str = ""
    cpu_time_s: float = 0.0  # user + system, cumulative
    rss_bytes: int = 0
    create_time_s: float = 0.0
    gpu_mem_bytes: int = 0
    # The same process's CPU time at the previous scan and the time between the scans, so a
    # process's CPU% derives from this one sample even though scans are seconds apart.
    cpu_time_prev_s: float | None = None
    scan_interval_s: float = 0.0


class NodeSample(Struct, frozen=True):
    """Everything a node measured in one tick. The unit of the stream and of recordings."""

    node: str
    mono_s: float
    wall_s: float
    host: HostSample
    gpus: list[GpuSample] = []
    jobs: list[CgroupSample] = []
    app: list[AppMetric] = []
    # The full process scan runs less often than the tick; empty on ticks without one.
    procs: list[ProcSample] = []
    # Set by the daemon at start; a new value tells derive() that counters were reset.
    boot_id: str = ""


class GpuLink(Struct, frozen=True):
    """A connection between two GPUs of one node, as NVML's topology reports it."""

    a: int
    b: int
    kind: str  # "nvlink", "pcie-switch", "pcie-bridge", "pcie-host", "system"
    links: int = 0  # NVLink lane count, 0 for PCIe


class GpuInfo(Struct, frozen=True):
    """Static facts of one GPU."""

    index: int
    name: str
    uuid: str
    pci_bus_id: str = ""
    mem_total_bytes: int = 0
    power_limit_mw: int | None = None
    driver_version: str = ""
    simulated: bool = False


class NodeInventory(Struct, frozen=True):
    """Static facts of a node. ``gpu_status`` explains missing GPUs in words."""

    node: str
    hostname: str
    cpu_model: str = ""
    cpu_count: int = 0
    mem_total_bytes: int = 0
    swap_total_bytes: int = 0
    kernel: str = ""
    boot_time_s: float = 0.0
    gpu_backend: str = "none"  # "nvml", "simulated" or "none"
    gpu_status: str = ""  # "ok", "simulated", "no NVIDIA driver (NVML error: ...)"
    gpus: list[GpuInfo] = []
    gpu_links: list[GpuLink] = []
    cgroup_mode: str = ""  # "v2", "v1", "hybrid" or "none"
    agentd_version: str = ""
    labels: dict[str, str] = {}


class DerivedGpu(Struct, frozen=True):
    """Rates and values of one GPU between two samples."""

    index: int
    uuid: str = ""
    sm_util_pct: float | None = None
    mem_util_pct: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    mem_used_pct: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    temp_c: float | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    pcie_tx_bytes_per_s: float | None = None
    pcie_rx_bytes_per_s: float | None = None
    nvlink_tx_bytes_per_s: float | None = None
    nvlink_rx_bytes_per_s: float | None = None
    throttle_reasons: int = 0
    ecc_uncorrected_total: int | None = None
    xid_total: int | None = None
    processes: list[GpuProcess] = []


class DerivedCgroup(Struct, frozen=True):
    """Rates and values of one job between two samples."""

    job_id: str
    cpu_pct: float = 0.0  # 100 = one full core
    cpu_throttled_pct: float = 0.0
    mem_current_bytes: int = 0
    mem_peak_bytes: int = 0
    mem_limit_bytes: int | None = None
    oom_kills_total: int = 0
    io_read_bytes_per_s: float = 0.0
    io_write_bytes_per_s: float = 0.0
    pids_current: int = 0
    cpu_pressure_pct: float = 0.0
    mem_pressure_pct: float = 0.0
    io_pressure_pct: float = 0.0
    frozen: bool = False
    gpu_mem_bytes: dict[int, int] = {}
    gpu_sm_pct: dict[int, float] = {}
    # Application metrics: counters as per-second rates (name + "_per_s"), gauges as they are.
    app: dict[str, float] = {}


class DerivedProc(Struct, frozen=True):
    pid: int
    name: str
    user: str = ""
    cpu_pct: float = 0.0
    rss_bytes: int = 0
    gpu_mem_bytes: int = 0


class DerivedNode(Struct, frozen=True):
    """What a person sees for a node at one moment: every rate and percentage."""

    node: str
    wall_s: float
    interval_s: float
    cpu_pct: float
    cpu_per_core_pct: list[float] = []
    iowait_pct: float = 0.0
    load_1: float = 0.0
    mem_total_bytes: int = 0
    mem_used_bytes: int = 0
    mem_used_pct: float = 0.0
    swap_used_bytes: int = 0
    swap_in_bytes_per_s: float = 0.0
    swap_out_bytes_per_s: float = 0.0
    net_rx_bytes_per_s: float = 0.0
    net_tx_bytes_per_s: float = 0.0
    disk_read_bytes_per_s: float = 0.0
    disk_write_bytes_per_s: float = 0.0
    net_per_if: dict[str, tuple[float, float]] = {}  # name -> (rx, tx) bytes/s
    disk_per_dev: dict[str, tuple[float, float]] = {}  # name -> (read, write) bytes/s
    cpu_pressure_pct: float = 0.0
    mem_pressure_pct: float = 0.0
    io_pressure_pct: float = 0.0
    temps_c: dict[str, float] = {}
    procs_total: int = 0
    gpus: list[DerivedGpu] = []
    jobs: list[DerivedCgroup] = []
    procs: list[DerivedProc] = []
