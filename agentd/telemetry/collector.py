"""NodeCollector: the one object the daemon asks for a node's inventory and samples.

It owns the host reader, the GPU backend (NVML, simulated or none), the cgroup reader and the
periodic process scan, and isolates them: a backend that fails is logged (once per kind of
failure) and its part of the sample is left empty, never the whole sample.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
import zlib
from collections.abc import Callable, Collection, Mapping
from types import ModuleType
from typing import TypeVar

import msgspec

import agentd
from agentd.kernel.cgroupfs import DEFAULT_CGROUP_ROOT, detect_cgroup_mode
from agentd.kernel.procfs import DEFAULT_PROC_ROOT
from agentd.metrics.samples import (
    AppMetric,
    CgroupSample,
    CpuTimes,
    GpuInfo,
    GpuLink,
    GpuSample,
    HostSample,
    NodeInventory,
    NodeSample,
    ProcSample,
)
from agentd.telemetry.cgroup import CgroupReader
from agentd.telemetry.cgroup_paths import CgroupRef
from agentd.telemetry.gpu import GpuBackend, NoGpuBackend
from agentd.telemetry.gpu_nvml import NvmlBackend
from agentd.telemetry.gpu_sim import SimulatedGpuBackend
from agentd.telemetry.host import DEFAULT_SYS_ROOT, HostReader, host_identity
from agentd.telemetry.processes import DEFAULT_SCAN_EVERY_S, ProcessScanner

log = logging.getLogger(__name__)

__all__ = ["NodeCollector", "JobRefs"]

T = TypeVar("T")

#: job id -> (its cgroup, or None where it has none; the pids the daemon knows for it)
JobRefs = Mapping[str, tuple[CgroupRef | None, Collection[int]]]


class NodeCollector:
    """Gathers :class:`NodeInventory` once and a :class:`NodeSample` per tick.

    ``simulate_gpus`` > 0 replaces real GPUs by that many simulated ones; otherwise NVML is
    used through ``nvml`` (a module handle; the real ``pynvml`` when None). ``mono`` and
    ``wall`` are the clocks stamped on samples (seconds).
    """

    def __init__(
        self,
        node: str,
        *,
        simulate_gpus: int = 0,
        proc_root: str = DEFAULT_PROC_ROOT,
        sys_root: str = DEFAULT_SYS_ROOT,
        cgroup_root: str = DEFAULT_CGROUP_ROOT,
        nvml: ModuleType | None = None,
        proc_scan_every_s: float = DEFAULT_SCAN_EVERY_S,
        mono: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.proc_root = proc_root
        self.cgroup_root = cgroup_root
        self.proc_scan_every_s = proc_scan_every_s
        self._mono = mono
        self._wall = wall
        #: New for every collector: a restarted daemon's counters are never paired with old ones.
        self.boot_id = uuid.uuid4().hex
        self._host = HostReader(proc_root, sys_root)
        self._cgroups = CgroupReader()
        self._procs = ProcessScanner(proc_root)
        self._last_scan: float | None = None
        self._failed: set[str] = set()
        self._gpu: GpuBackend
        if simulate_gpus > 0:
            # Seeded from the node name: each demo node looks different, and the same each run.
            self._gpu = SimulatedGpuBackend(simulate_gpus, seed=zlib.crc32(node.encode()), clock=mono)
        else:
            try:
                self._gpu = NvmlBackend(nvml)
            except Exception as exc:  # hardware is optional, never fatal
                log.exception("GPU backend failed to start; continuing without GPUs")
                self._gpu = NoGpuBackend(f"no NVIDIA driver (NVML error: {exc})")

    @property
    def simulated_gpus(self) -> SimulatedGpuBackend | None:
        """The simulated backend (so the daemon can ``set_load``), or None with real GPUs."""
        return self._gpu if isinstance(self._gpu, SimulatedGpuBackend) else None

    def _guard(self, what: str, fn: Callable[[], T], default: T) -> T:
        """Run one backend; log its first failure of a kind, return ``default`` on error."""
        try:
            value = fn()
        except Exception as exc:  # one backend never takes down the others
            key = f"{what}:{type(exc).__name__}"
            if key not in self._failed:
                self._failed.add(key)
                log.exception("node %r: reading %s failed; that part of the sample stays empty", self.node, what)
            else:
                log.debug("node %r: reading %s failed again: %s", self.node, what, exc)
            return default
        return value

    def inventory(self) -> NodeInventory:
        """Static facts of the node, its GPUs and how they connect."""
        ident: dict[str, object] = self._guard("host identity", lambda: host_identity(self.proc_root), {})
        gpus: list[GpuInfo] = self._guard("GPU inventory", self._gpu.gpus, [])
        links: list[GpuLink] = self._guard("GPU topology", self._gpu.links, [])
        mode = self._guard(
            "cgroup mode",
            lambda: detect_cgroup_mode(self.cgroup_root, self.proc_root),
            "none",
        )
        return NodeInventory(
            node=self.node,
            hostname=str(ident.get("hostname", "")),
            cpu_model=str(ident.get("cpu_model", "")),
            cpu_count=int(ident.get("cpu_count", 0)),  # type: ignore[call-overload]
            mem_total_bytes=int(ident.get("mem_total_bytes", 0)),  # type: ignore[call-overload]
            swap_total_bytes=int(ident.get("swap_total_bytes", 0)),  # type: ignore[call-overload]
            kernel=str(ident.get("kernel", "")),
            boot_time_s=float(ident.get("boot_time_s", 0.0)),  # type: ignore[arg-type]
            gpu_backend=self._gpu.backend,
            gpu_status=self._gpu.status,
            gpus=gpus,
            gpu_links=links,
            cgroup_mode=str(mode),
            agentd_version=getattr(agentd, "__version__", ""),
        )

    def sample(self, jobs: JobRefs | None = None, app: list[AppMetric] | None = None) -> NodeSample:
        """One tick: host, GPUs, every job's cgroup, app metrics, and every few seconds the processes.

        ``jobs`` maps job id to (cgroup ref or None, the job's known pids). A job's GPU
        memory and SM share come from matching NVML's process list to its pids (those given
        plus those in its cgroup).
        """
        jobs = jobs or {}
        # The process scan reads a file per process (hundreds: ~10 ms, several times that on
        # a loaded host) and so is read *before* the stamp: between the stamp and the publish
        # there are only the fast per-tick reads, so host, GPU and job counters reach clients
        # as fresh on scan ticks as on others. Process rows carry their own scan interval
        # (derive() never pairs them with the stamp); they are read a few ms before it.
        reading = None
        scan_mono = self._mono()
        if self._last_scan is None or scan_mono - self._last_scan >= self.proc_scan_every_s:
            self._last_scan = scan_mono
            reading = self._guard("processes", self._procs.read, None)
        mono = self._mono()
        wall = self._wall()
        host = self._guard("host", self._host.read, HostSample(cpu_total=CpuTimes()))
        gpus: list[GpuSample] = self._guard("GPUs", self._gpu.sample, [])
        gpu_by_pid: dict[int, list[tuple[int, int, float | None]]] = {}
        for g in gpus:
            for p in g.processes:
                gpu_by_pid.setdefault(p.pid, []).append((g.index, p.used_bytes, p.sm_pct))

        job_samples = [self._job(job_id, ref, pids, gpu_by_pid) for job_id, (ref, pids) in jobs.items()]

        procs: list[ProcSample] = []
        if reading is not None:
            mem_by_pid = {pid: sum(u for _, u, _ in v) for pid, v in gpu_by_pid.items()}
            procs = self._guard("processes", lambda: self._procs.rank(reading, mem_by_pid), [])

        return NodeSample(
            node=self.node, mono_s=mono, wall_s=wall, host=host, gpus=gpus, jobs=job_samples,
            app=list(app or []), procs=procs, boot_id=self.boot_id,
        )

    def _job(
        self,
        job_id: str,
        ref: CgroupRef | None,
        pids: Collection[int],
        gpu_by_pid: Mapping[int, list[tuple[int, int, float | None]]],
    ) -> CgroupSample:
        cg: CgroupSample | None = None
        if ref is not None:
            cg = self._guard(f"cgroup of job {job_id!r}", lambda: self._cgroups.read(job_id, ref), None)
        all_pids = set(pids)
        if gpu_by_pid and ref is not None:
            all_pids |= self._guard(f"pids of job {job_id!r}", lambda: self._cgroups.pids(ref), set())
        if cg is None:
            alive = sum(1 for p in pids if os.path.exists(os.path.join(self.proc_root, str(p))))
            cg = CgroupSample(job_id=job_id, pids_current=alive)
        mem: dict[int, int] = {}
        sm: dict[int, float] = {}
        for pid in all_pids:
            for index, used, sm_pct in gpu_by_pid.get(pid, ()):
                mem[index] = mem.get(index, 0) + used
                if sm_pct is not None:
                    sm[index] = sm.get(index, 0.0) + sm_pct
        if mem or sm:
            # Structs are frozen: rebuild with the GPU share filled in.
            cg = msgspec.structs.replace(cg, gpu_mem_bytes=mem, gpu_sm_pct=sm)
        return cg

    def close(self) -> None:
        """Release the GPU library (idempotent)."""
        self._guard("GPU close", self._gpu.close, None)
