"""Cgroup reader: a job's CPU, throttling, memory, OOM kills, IO, pids, pressure and freeze state.

Reads cgroup v2 (one unified directory) and v1 (one directory per controller hierarchy), as
described by a :class:`~agentd.telemetry.cgroup_paths.CgroupRef`, into a
:class:`CgroupSample`; the files themselves are parsed by :mod:`agentd.kernel.cgroupfs`. A
file the kernel does not offer (an older kernel, a controller not enabled for the subtree)
leaves its field at the default; this is normal, for example ``memory.current`` on a v2
hierarchy whose memory controller is bound to v1, so it is not logged.
"""

from __future__ import annotations

import logging
import os

from agentd.kernel import cgroupfs
from agentd.kernel.files import read_int, read_keyed, read_text
from agentd.metrics.samples import CgroupSample, Pressure
from agentd.telemetry.cgroup_paths import CgroupRef
from agentd.telemetry.host import pressure_sample

log = logging.getLogger(__name__)

#: cpuacct.stat counts in USER_HZ, which Linux fixes at 100 for user space.
USER_HZ = 100
#: v1 memory.limit_in_bytes reports "no limit" as a huge page-rounded number.
V1_UNLIMITED_THRESHOLD = 1 << 62
#: Where to look for a job's pids first on v1 (all hierarchies hold the same processes).
PIDS_HIERARCHY_ORDER = ("pids", "cpuacct", "memory", "cpu", "freezer", "blkio")

__all__ = ["CgroupReader"]


def _pressure(directory: str) -> dict[str, Pressure]:
    return {res: pressure_sample(v) for res, v in cgroupfs.read_pressure(directory).items()}


class CgroupReader:
    """Reads :class:`CgroupSample` for jobs from their cgroup directories (v1 or v2)."""

    def read(self, job_id: str, ref: CgroupRef) -> CgroupSample | None:
        """One reading of the job's cgroup.

        Returns None (logged at debug level) when none of the ref's directories exists any
        more, for example after the job ended and its cgroup was removed.
        """
        if not any(os.path.isdir(p) for p in ref.paths.values()):
            log.debug("cgroup of job %r is gone (%s); no cgroup sample", job_id, ref.paths)
            return None
        if ref.version == 2:
            unified = ref.paths.get("unified")
            if not unified:
                log.warning("job %r: v2 cgroup ref has no 'unified' path (%s); no cgroup sample", job_id, ref.paths)
                return None
            return self._read_v2(job_id, unified)
        return self._read_v1(job_id, ref.paths)

    def pids(self, ref: CgroupRef) -> set[int]:
        """Every pid in the job's cgroup (its ``cgroup.procs``); empty when it is gone.

        A job's processes are in its cgroup of every hierarchy, so one hierarchy suffices.
        """
        order = ["unified", *PIDS_HIERARCHY_ORDER] if ref.version == 2 else [*PIDS_HIERARCHY_ORDER, "unified"]
        for key in order + [k for k in ref.paths if k not in order]:
            d = ref.paths.get(key)
            got = cgroupfs.procs(d) if d else None
            if got is not None:
                return set(got)
        return set()

    def _read_v2(self, job_id: str, d: str) -> CgroupSample:
        cpu = read_keyed(os.path.join(d, "cpu.stat"))
        events = read_keyed(os.path.join(d, "memory.events"))
        rbytes, wbytes = cgroupfs.parse_io_stat(read_text(os.path.join(d, "io.stat")) or "")
        current = read_int(os.path.join(d, "memory.current")) or 0
        pids = read_int(os.path.join(d, "pids.current"))
        if pids is None:
            pids = cgroupfs.count_procs(d) or 0
        return CgroupSample(
            job_id=job_id,
            cpu_usage_us=cpu.get("usage_usec", 0),
            cpu_user_us=cpu.get("user_usec", 0),
            cpu_system_us=cpu.get("system_usec", 0),
            cpu_periods_total=cpu.get("nr_periods", 0),
            cpu_throttled_total=cpu.get("nr_throttled", 0),
            cpu_throttled_us=cpu.get("throttled_usec", 0),
            mem_current_bytes=current,
            mem_peak_bytes=read_int(os.path.join(d, "memory.peak")) or current,
            mem_limit_bytes=read_int(os.path.join(d, "memory.max")),
            oom_kills_total=events.get("oom_kill", 0),
            io_read_bytes=rbytes,
            io_write_bytes=wbytes,
            pids_current=pids,
            pressure=_pressure(d),
            frozen=bool(cgroupfs.v2_frozen(d)),
        )

    def _read_v1(self, job_id: str, paths: dict[str, str]) -> CgroupSample:
        # Only the hierarchies the ref names are read: a missing key must never turn into a
        # path relative to the working directory.
        usage_ns = user_ns = sys_ns = 0
        cpuacct = paths.get("cpuacct") or paths.get("cpu")
        if cpuacct:
            usage_ns = read_int(os.path.join(cpuacct, "cpuacct.usage")) or 0
            u = read_int(os.path.join(cpuacct, "cpuacct.usage_user"))
            sy = read_int(os.path.join(cpuacct, "cpuacct.usage_sys"))
            if u is None or sy is None:
                # Older kernels: only cpuacct.stat, in USER_HZ ticks.
                stat = read_keyed(os.path.join(cpuacct, "cpuacct.stat"))
                u = stat.get("user", 0) * 1_000_000_000 // USER_HZ
                sy = stat.get("system", 0) * 1_000_000_000 // USER_HZ
            user_ns, sys_ns = u, sy
        cpu_dir = paths.get("cpu")
        cpu_stat = read_keyed(os.path.join(cpu_dir, "cpu.stat")) if cpu_dir else {}

        current = peak = 0
        limit: int | None = None
        oom: dict[str, int] = {}
        mem = paths.get("memory")
        if mem:
            current = read_int(os.path.join(mem, "memory.usage_in_bytes")) or 0
            peak = read_int(os.path.join(mem, "memory.max_usage_in_bytes")) or current
            limit = read_int(os.path.join(mem, "memory.limit_in_bytes"))
            if limit is not None and limit >= V1_UNLIMITED_THRESHOLD:
                limit = None
            oom = read_keyed(os.path.join(mem, "memory.oom_control"))

        rbytes = wbytes = 0
        blkio = paths.get("blkio")
        if blkio:
            text = read_text(os.path.join(blkio, "blkio.throttle.io_service_bytes_recursive"))
            if text is None:
                text = read_text(os.path.join(blkio, "blkio.throttle.io_service_bytes")) or ""
            rbytes, wbytes = cgroupfs.parse_blkio_bytes(text)

        pids = read_int(os.path.join(paths["pids"], "pids.current")) if "pids" in paths else None
        if pids is None:
            for d in paths.values():
                pids = cgroupfs.count_procs(d)
                if pids is not None:
                    break

        frozen = "freezer" in paths and cgroupfs.v1_freezer_state(paths["freezer"]) == cgroupfs.V1_FROZEN
        pressure: dict[str, Pressure] = {}
        unified = paths.get("unified")
        if unified:
            # Hybrid hosts: the v2 tree still offers freeze state and pressure per cgroup.
            pressure = _pressure(unified)
            frozen = frozen or bool(cgroupfs.v2_frozen(unified))

        return CgroupSample(
            job_id=job_id,
            cpu_usage_us=usage_ns // 1000,
            cpu_user_us=user_ns // 1000,
            cpu_system_us=sys_ns // 1000,
            cpu_periods_total=cpu_stat.get("nr_periods", 0),
            cpu_throttled_total=cpu_stat.get("nr_throttled", 0),
            cpu_throttled_us=cpu_stat.get("throttled_time", 0) // 1000,  # v1 reports ns
            mem_current_bytes=current,
            mem_peak_bytes=peak,
            mem_limit_bytes=limit,
            oom_kills_total=oom.get("oom_kill", 0),
            io_read_bytes=rbytes,
            io_write_bytes=wbytes,
            pids_current=pids or 0,
            pressure=pressure,
            frozen=frozen,
        )

