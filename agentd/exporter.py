"""Prometheus ``/metrics`` for agentd: the latest node sample, formatted per scrape.

A scrape never measures anything: :meth:`MetricsExporter.update` stores the daemon's newest
:class:`NodeSample`, its :class:`DerivedNode` (from the one ``derive()``) and the job list, and
the custom collector formats that snapshot. Names follow Prometheus conventions:

* base units in the name: ``_bytes``, ``_seconds``, ``_watts``, ``_joules``, ``_hertz``,
  ``_celsius``; every ``_ratio`` is from 0 to 1; a job's CPU use counts cores
  (``job_cpu_usage_cores``: 2.0 means two full cores);
* raw cumulative counters end in ``_total`` (rate them in PromQL: ``rate(x_total[1m])``);
* labels: ``node`` everywhere; ``gpu`` (index), ``uuid`` and ``simulated`` ("true" for the
  simulated GPUs of demos and tests) on GPU metrics; ``job_id`` (the cluster-unique id) and
  ``name`` on job metrics; ``metric`` names a job's own metric. Not ``job``: Prometheus
  itself sets ``job`` (the scrape job) on every series and would rename ours ``exported_job``.

Ended jobs: :meth:`MetricsExporter.job_changed` sees every job update; a job that ended keeps
its ``job_state`` series (its end state at 1) for ``ended_retention_s`` (10 minutes by default;
the latest ``MAX_ENDED_SHOWN`` of them at most), so a rule such as ``fleetdeck_job_state{state="failed"} == 1`` fires for it, and
``fleetdeck_job_ends_total{result}`` counts the ends this daemon saw (every result present from
the start at 0, so ``increase()`` sees the first failure).

A job's own metric names are bounded: the job manager keeps at most ``MAX_METRICS_PER_JOB``
per job and counts the rest; the exporter applies the same bound to what it formats and adds
its own refusals to ``fleetdeck_job_metric_names_refused_total``.

docs/install.md lists every metric, docs/metrics.md the ``AGENTD_METRIC`` line format;
packaging/grafana/fleetdeck-dashboard.json charts them and packaging/prometheus/alerts.yml
alerts on them.

/metrics has no authentication, so it listens on loopback unless ``allow_remote=True``.
"""

from __future__ import annotations

import collections
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector, CollectorRegistry

from agentd.metrics.samples import CgroupSample, DerivedNode, DiskCounters, GpuSample, NodeSample
from agentd.protocol.jobs import TERMINAL_STATES, JobInfo, JobState
from agentd.protocol.limits import MAX_METRICS_PER_JOB
from agentd.transport.auth import is_loopback_host

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9810"
PREFIX = "fleetdeck"
JOB_STATES: tuple[str, ...] = JobState.__args__  # type: ignore[attr-defined]
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
END_RESULTS: tuple[str, ...] = tuple(sorted(TERMINAL_STATES))
DEFAULT_ENDED_RETENTION_S = 600.0  # an ended job's state series stays this long (alerts see it)
MAX_ENDED_SHOWN = 1000  # ended jobs kept in job_state at most (the oldest go first): bounded series
MAX_COUNTED_ENDS = 50_000  # job ids remembered as counted, so a repeated update never counts twice


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9810`` for IPv6) as (host, port); raises ValueError saying why."""
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics_listen {listen!r} is not HOST:PORT; use for example {DEFAULT_LISTEN!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class _Snapshot:
    __slots__ = ("sample", "derived", "jobs", "names_refused")

    def __init__(self, sample: NodeSample, derived: DerivedNode, jobs: list[JobInfo], names_refused: int) -> None:
        self.sample, self.derived, self.jobs, self.names_refused = sample, derived, jobs, names_refused


class SnapshotCollector(Collector):
    """Formats the exporter's latest snapshot; nothing is measured at scrape time."""

    def __init__(self, exporter: MetricsExporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        snap = self.exporter._latest  # one read: update() swaps the whole snapshot
        node = self.exporter.node
        up = GaugeMetricFamily(f"{PREFIX}_exporter_has_sample", "1 once agentd has taken a sample to export", labels=["node"])
        up.add_metric([node], 0.0 if snap is None else 1.0)
        yield up
        ends = _c("job_ends", "Jobs that ended since agentd started, by result "
                  "(succeeded, failed, cancelled, migrated)", ["node", "result"])
        for result, n in self.exporter.ends().items():
            ends.add_metric([node, result], float(n))
        yield ends
        if snap is None:
            return
        yield from _node_metrics(node, snap.sample, snap.derived)
        yield from _gpu_metrics(node, snap.sample, snap.derived, self.exporter.simulated_gpus)
        ended = self.exporter.ended_jobs()
        yield from _job_metrics(node, snap.sample, snap.derived, snap.jobs, ended, self.exporter)
        refused = _c("job_metric_names_refused", f"Job-reported metric values dropped because the job already had "
                     f"{MAX_METRICS_PER_JOB} metric names (or the name was too long)", ["node"])
        refused.add_metric([node], float(snap.names_refused + self.exporter.names_dropped))
        yield refused


def _g(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def _c(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    # CounterMetricFamily appends "_total" to the exposed sample name.
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def _node_metrics(node: str, s: NodeSample, d: DerivedNode) -> Iterator[Metric]:
    h = s.host
    n = [node]
    ts = _g("node_sample_timestamp_seconds", "Wall-clock time of the sample these values come from", ["node"])
    ts.add_metric(n, s.wall_s)
    yield ts
    cpu = _c("node_cpu_seconds", "CPU time spent in each mode, all cores", ["node", "mode"])
    for mode in CPU_MODES:
        cpu.add_metric([node, mode], getattr(h.cpu_total, f"{mode}_s"))
    yield cpu
    usage = _g("node_cpu_usage_ratio", "Busy share of all CPUs over the last interval (0-1)", ["node"])
    usage.add_metric(n, d.cpu_pct / 100.0)
    yield usage
    core = _g("node_cpu_core_usage_ratio", "Busy share of each core over the last interval (0-1)", ["node", "core"])
    for i, pct in enumerate(d.cpu_per_core_pct):
        core.add_metric([node, str(i)], pct / 100.0)
    yield core
    iowait = _g("node_cpu_iowait_ratio", "Share of CPU time waiting for IO over the last interval (0-1)", ["node"])
    iowait.add_metric(n, d.iowait_pct / 100.0)
    yield iowait
    for minutes, value in (("1", h.load_1), ("5", h.load_5), ("15", h.load_15)):
        load = _g(f"node_load{minutes}", f"{minutes}-minute load average", ["node"])
        load.add_metric(n, value)
        yield load
    for name, doc, value in (
        ("node_memory_total_bytes", "Physical memory", h.mem_total_bytes),
        ("node_memory_used_bytes", "Memory in use (total minus available)", h.mem_used_bytes),
        ("node_memory_available_bytes", "Memory available for new work", h.mem_available_bytes),
        ("node_swap_total_bytes", "Swap space", h.swap_total_bytes),
        ("node_swap_used_bytes", "Swap in use", h.swap_used_bytes),
        ("node_processes", "Processes on the node", h.procs_total),
    ):
        g = _g(name, doc, ["node"])
        g.add_metric(n, float(value))
        yield g
    for name, doc, value in (("node_swap_in_bytes", "Bytes swapped in", h.swap_in_bytes),
                             ("node_swap_out_bytes", "Bytes swapped out", h.swap_out_bytes)):
        c = _c(name, doc, ["node"])
        c.add_metric(n, float(value))
        yield c
    net = {
        "receive_bytes": ("Bytes received", "rx_bytes"), "transmit_bytes": ("Bytes sent", "tx_bytes"),
        "receive_packets": ("Packets received", "rx_packets"), "transmit_packets": ("Packets sent", "tx_packets"),
        "receive_errors": ("Receive errors", "rx_errors"), "transmit_errors": ("Send errors", "tx_errors"),
        "receive_drop": ("Received packets dropped", "rx_drops"), "transmit_drop": ("Sent packets dropped", "tx_drops"),
    }
    for suffix, (doc, attr) in net.items():
        c = _c(f"node_network_{suffix}", f"{doc}, per interface", ["node", "interface"])
        for iface in s.host.net:
            c.add_metric([node, iface.name], float(getattr(iface, attr)))
        yield c
    disk: dict[str, tuple[str, Callable[[DiskCounters], float]]] = {
        "disk_read_bytes": ("Bytes read", lambda x: x.read_bytes),
        "disk_written_bytes": ("Bytes written", lambda x: x.write_bytes),
        "disk_reads_completed": ("Reads completed", lambda x: x.reads),
        "disk_writes_completed": ("Writes completed", lambda x: x.writes),
        "disk_io_time_seconds": ("Time the device was busy", lambda x: x.busy_ms / 1000.0),
    }
    for suffix, (doc, get) in disk.items():
        c = _c(f"node_{suffix}", f"{doc}, per block device", ["node", "device"])
        for dev in h.disks:
            c.add_metric([node, dev.name], float(get(dev)))
        yield c
    psi = _c("node_pressure_stalled_seconds", "Time some (or all: scope=full) tasks stalled on a resource "
             "(pressure stall information)", ["node", "resource", "scope"])
    for resource, p in sorted(h.pressure.items()):
        psi.add_metric([node, resource, "some"], p.some_total_us / 1e6)
        if resource != "cpu" or p.full_total_us:
            psi.add_metric([node, resource, "full"], p.full_total_us / 1e6)
    yield psi
    temp = _g("node_temperature_celsius", "Temperature of each sensor", ["node", "sensor"])
    for sensor, value in sorted(h.temps_c.items()):
        temp.add_metric([node, sensor], value)
    yield temp


def _gpu_metrics(node: str, s: NodeSample, d: DerivedNode, simulated: bool) -> Iterator[Metric]:
    labels = ["node", "gpu", "uuid", "simulated"]
    sim = "true" if simulated else "false"
    gauges: dict[str, tuple[str, Callable[[GpuSample], float | None]]] = {
        "gpu_utilization_ratio": ("Share of time a kernel ran on the GPU (SM utilisation, 0-1)", lambda g: _pct(g.sm_util_pct)),
        "gpu_memory_utilization_ratio": ("Share of time GPU memory was read or written (0-1)", lambda g: _pct(g.mem_util_pct)),
        "gpu_memory_used_bytes": ("GPU memory in use", lambda g: g.mem_used_bytes),
        "gpu_memory_total_bytes": ("GPU memory", lambda g: g.mem_total_bytes),
        "gpu_power_watts": ("Power draw", lambda g: None if g.power_mw is None else g.power_mw / 1000.0),
        "gpu_power_limit_watts": ("Enforced power limit", lambda g: None if g.power_limit_mw is None else g.power_limit_mw / 1000.0),
        "gpu_temperature_celsius": ("GPU core temperature", lambda g: g.temp_c),
        "gpu_sm_clock_hertz": ("SM clock", lambda g: None if g.sm_clock_mhz is None else g.sm_clock_mhz * 1e6),
        "gpu_memory_clock_hertz": ("Memory clock", lambda g: None if g.mem_clock_mhz is None else g.mem_clock_mhz * 1e6),
        "gpu_pcie_transmit_bytes_per_second": ("PCIe send throughput as NVML reports it (a 20 ms window)", lambda g: g.pcie_tx_bytes_per_s),
        "gpu_pcie_receive_bytes_per_second": ("PCIe receive throughput as NVML reports it (a 20 ms window)", lambda g: g.pcie_rx_bytes_per_s),
        "gpu_throttle_reasons": ("NVML clocks-throttle reason bitmask (0: not throttled)", lambda g: g.throttle_reasons),
        "gpu_processes": ("Processes holding memory on the GPU", lambda g: len(g.processes)),
    }
    counters: dict[str, tuple[str, Callable[[GpuSample], float | None]]] = {
        "gpu_energy_joules": ("Energy used since the driver loaded", lambda g: None if g.energy_mj is None else g.energy_mj / 1000.0),
        "gpu_nvlink_transmit_bytes": ("Bytes sent over NVLink", lambda g: g.nvlink_tx_bytes),
        "gpu_nvlink_receive_bytes": ("Bytes received over NVLink", lambda g: g.nvlink_rx_bytes),
        "gpu_xid_errors": ("Xid errors the driver reported", lambda g: g.xid_total),
    }
    for family, table in ((_g, gauges), (_c, counters)):
        for name, (doc, get) in table.items():
            fam = family(name, doc, labels)
            for g in s.gpus:
                v = get(g)
                if v is not None:
                    fam.add_metric([node, str(g.index), g.uuid, sim], float(v))
            yield fam
    ecc = _c("gpu_ecc_errors", "ECC errors (type: corrected or uncorrected)", [*labels, "type"])
    for g in s.gpus:
        for kind, v in (("corrected", g.ecc_corrected_total), ("uncorrected", g.ecc_uncorrected_total)):
            if v is not None:
                ecc.add_metric([node, str(g.index), g.uuid, sim, kind], float(v))
    yield ecc


def _pct(v: float | None) -> float | None:
    return None if v is None else v / 100.0


def _job_metrics(node: str, s: NodeSample, d: DerivedNode, jobs: list[JobInfo], ended: list[JobInfo],
                 exporter: MetricsExporter) -> Iterator[Metric]:
    by_id = {j.id: j for j in jobs}
    names = {j.id: j.name for j in jobs}
    labels = ["node", "job_id", "name"]

    state = _g("job_state", "1 for the job's current state, 0 for the others; an ended job stays "
               "(its end state at 1) for the exporter's retention window", [*labels, "state", "backend"])
    prio = _g("job_priority", "Job priority (-10..10, higher is more important)", labels)
    started = _g("job_start_time_seconds", "Wall-clock time the job started", labels)
    gpus = _g("job_gpus", "GPUs assigned to the job", labels)
    for j in by_id.values():
        lv = [node, j.id, j.name]
        for st in JOB_STATES:
            state.add_metric([*lv, st, j.backend], 1.0 if j.state == st else 0.0)
        prio.add_metric(lv, float(j.priority))
        gpus.add_metric(lv, float(len(j.gpus)))
        if j.started_s is not None:
            started.add_metric(lv, j.started_s)
    for j in ended:
        if j.id not in by_id:  # the live list wins: a job id is one series set, never two
            for st in JOB_STATES:
                state.add_metric([node, j.id, j.name, st, j.backend], 1.0 if j.state == st else 0.0)
    yield from (state, prio, started, gpus)

    raw = {c.job_id: c for c in s.jobs}
    derived = {c.job_id: c for c in d.jobs}
    counters: dict[str, tuple[str, Callable[[CgroupSample], float]]] = {
        "job_cpu_seconds": ("CPU time used by the job's cgroup", lambda c: c.cpu_usage_us / 1e6),
        "job_cpu_throttled_seconds": ("Time the job's cgroup was throttled by its CPU limit", lambda c: c.cpu_throttled_us / 1e6),
        "job_oom_kills": ("Processes of the job killed for lack of memory", lambda c: c.oom_kills_total),
        "job_io_read_bytes": ("Bytes the job read from block devices", lambda c: c.io_read_bytes),
        "job_io_written_bytes": ("Bytes the job wrote to block devices", lambda c: c.io_write_bytes),
    }
    gauges: dict[str, tuple[str, Callable[[CgroupSample], float | None]]] = {
        "job_memory_bytes": ("Memory charged to the job's cgroup", lambda c: c.mem_current_bytes),
        "job_memory_peak_bytes": ("Most memory the job's cgroup has used", lambda c: c.mem_peak_bytes),
        "job_memory_limit_bytes": ("Memory limit of the job's cgroup", lambda c: c.mem_limit_bytes),
        "job_pids": ("Processes and threads in the job's cgroup", lambda c: c.pids_current),
        "job_frozen": ("1 while the job's cgroup is frozen (paused)", lambda c: 1 if c.frozen else 0),
    }
    for name, (doc, get) in counters.items():
        fam = _c(name, doc, labels)
        for jid, c in raw.items():
            fam.add_metric([node, jid, names.get(jid, "")], float(get(c)))
        yield fam
    for name, (doc, read) in gauges.items():
        gauge = _g(name, doc, labels)
        for jid, c in raw.items():
            v = read(c)
            if v is not None:
                gauge.add_metric([node, jid, names.get(jid, "")], float(v))
        yield gauge
    usage = _g("job_cpu_usage_cores", "CPU used by the job over the last interval, in cores (1 = one full core)", labels)
    gmem = _g("job_gpu_memory_bytes", "GPU memory held by the job's processes, per GPU", [*labels, "gpu"])
    rate = _g("job_app_rate_per_second", "A job's own counter (tokens, samples, steps...) per second over the last interval",
              [*labels, "metric"])
    for jid, dc in derived.items():
        lv = [node, jid, names.get(jid, "")]
        usage.add_metric(lv, dc.cpu_pct / 100.0)
        for gpu, used in sorted(dc.gpu_mem_bytes.items()):
            gmem.add_metric([*lv, str(gpu)], float(used))
        for key, value in sorted(dc.app.items()):
            if key.endswith("_per_s") and exporter.admit_name(jid, key[: -len("_per_s")]):
                rate.add_metric([*lv, key[: -len("_per_s")]], value)
    yield from (usage, gmem, rate)
    app_total = _c("job_app", "A job's own counters (tokens, samples, steps...) as reported by the job", [*labels, "metric"])
    app_value = _g("job_app_value", "A job's own gauges (loss, queue length...) as reported by the job", [*labels, "metric"])
    seen: set[tuple[str, str]] = set()
    for m in s.app:
        if (m.job_id, m.name) in seen or not exporter.admit_name(m.job_id, m.name):
            continue
        seen.add((m.job_id, m.name))
        (app_total if m.counter else app_value).add_metric([node, m.job_id, names.get(m.job_id, ""), m.name], m.value)
    yield from (app_total, app_value)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsExporter:
    """Serves ``/metrics`` for one node from the latest :meth:`update`.

    ``listen`` is ``HOST:PORT`` (port 0 picks a free one; see :attr:`address`). A listen
    address off loopback raises ValueError unless ``allow_remote`` is True: the endpoint has
    no authentication.
    """

    def __init__(self, node: str, listen: str = DEFAULT_LISTEN, *, allow_remote: bool = False,
                 simulated_gpus: bool = False, ended_retention_s: float = DEFAULT_ENDED_RETENTION_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        host, port = parse_listen(listen)
        if not is_loopback_host(host) and not allow_remote:
            raise ValueError(
                f"metrics_listen {listen!r} is not a loopback address, and /metrics has no authentication; "
                "listen on 127.0.0.1 and let a local Prometheus (or an SSH tunnel) scrape it, "
                "or allow it explicitly (allow_remote=True, metrics_allow_remote = true)"
            )
        self.node = node
        self.host, self.port = host, port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(self))
        self.simulated_gpus = simulated_gpus
        self.ended_retention_s = float(ended_retention_s)
        self._clock = clock
        self._latest: _Snapshot | None = None
        self._lock = threading.Lock()  # job_changed (loop thread) against scrapes (HTTP threads)
        self._ended: dict[str, tuple[JobInfo, float]] = {}
        self._ends: dict[str, int] = dict.fromkeys(END_RESULTS, 0)
        self._counted: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._names: dict[str, set[str]] = {}  # job id -> metric names formatted so far (bounded per job)
        self._names_logged: set[str] = set()
        self.names_dropped = 0  # names left out of a scrape, counted once per scrape
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def update(self, sample: NodeSample, derived: DerivedNode, jobs: list[JobInfo], names_refused: int = 0) -> None:
        """Hold the newest sample, its derived values and the job list (unfinished jobs) for the
        next scrape. ``names_refused``: metric values the job manager dropped so far for being
        over the per-job name limit."""
        self._latest = _Snapshot(sample, derived, list(jobs), names_refused)
        live = {j.id for j in jobs} | {m.job_id for m in sample.app}
        with self._lock:
            for jid in [k for k in self._names if k not in live]:
                del self._names[jid]
                self._names_logged.discard(jid)

    def job_changed(self, job: JobInfo) -> None:
        """Note a job update (every one the daemon publishes). A job that reached an end state
        is counted once in ``fleetdeck_job_ends_total`` and keeps its state series for the
        retention window."""
        if job.state not in TERMINAL_STATES:
            return
        with self._lock:
            self._ended.pop(job.id, None)  # re-inserted last: the dict stays in order of ending
            self._ended[job.id] = (job, self._clock())
            while len(self._ended) > MAX_ENDED_SHOWN:
                del self._ended[next(iter(self._ended))]
            if job.id not in self._counted:
                self._counted[job.id] = None
                while len(self._counted) > MAX_COUNTED_ENDS:
                    self._counted.popitem(last=False)
                self._ends[job.state] = self._ends.get(job.state, 0) + 1

    def ended_jobs(self) -> list[JobInfo]:
        """Jobs that ended within the retention window, oldest first; older ones are forgotten."""
        cutoff = self._clock() - self.ended_retention_s
        with self._lock:
            for jid in [k for k, (_, t) in self._ended.items() if t < cutoff]:
                del self._ended[jid]
            return [j for j, _ in self._ended.values()]

    def ends(self) -> dict[str, int]:
        """Jobs ended since start, by result (every result present)."""
        with self._lock:
            return dict(self._ends)

    def admit_name(self, job_id: str, name: str) -> bool:
        """May the exporter format metric ``name`` of ``job_id``? At most MAX_METRICS_PER_JOB names
        per job, first come first served, so a job printing random names cannot create
        unbounded series; the rest are counted and logged once per job."""
        with self._lock:
            names = self._names.setdefault(job_id, set())
            if name in names:
                return True
            if len(names) < MAX_METRICS_PER_JOB:
                names.add(name)
                return True
            self.names_dropped += 1
            first = job_id not in self._names_logged
            self._names_logged.add(job_id)
        if first:
            log.warning("job %s reports more than %d metric names; /metrics leaves out %r and any further new names",
                        job_id, MAX_METRICS_PER_JOB, name)
        return False

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound; the port is known once started."""
        if self._server is not None:
            return self.host, self._server.server_address[1]
        return self.host, self.port

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/metrics"

    def start(self) -> None:
        """Listen and serve from a daemon thread. Raises OSError (address in use...) with the
        address named."""
        if self._server is not None:
            return
        handler = MetricsHandler.factory(self.registry)
        server_cls = _Server6 if ":" in self.host else _Server
        try:
            self._server = server_cls((self.host, self.port), handler)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve /metrics on {self.host}:{self.port}: {exc.strerror}; "
                          "pick another metrics_listen port") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="agentd-metrics", daemon=True)
        self._thread.start()
        log.info("Prometheus metrics on %s", self.url)

    def stop(self) -> None:
        """Stop serving and close the socket; waits for the server thread."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> MetricsExporter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def render(exporter: MetricsExporter) -> bytes:
    """The text exposition of the exporter's latest snapshot (what /metrics answers)."""
    from prometheus_client.exposition import generate_latest

    return generate_latest(exporter.registry)

