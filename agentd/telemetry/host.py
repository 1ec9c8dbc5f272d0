"""Host reader: CPU, memory, swap, network, disks, pressure and temperatures from /proc and /sys.

Every file is read directly (one ``open`` + split each) rather than through psutil: at one
sample a second psutil's generality (object creation, per-call feature probing) costs several
times more CPU than parsing the handful of files we need. :func:`host_identity` reads the
same files, so tests can point both at one fixture tree.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
from pathlib import Path

from agentd.kernel import procfs, psi
from agentd.kernel.files import read_text
from agentd.kernel.procfs import DEFAULT_PROC_ROOT
from agentd.metrics.samples import (
    CpuTimes,
    DiskCounters,
    HostSample,
    NetCounters,
    Pressure,
)

log = logging.getLogger(__name__)

DEFAULT_SYS_ROOT = "/sys"
#: Block devices that are never real disks: loop mounts and RAM disks.
SKIPPED_DISK_PREFIXES = ("loop", "ram")
#: /proc/diskstats counts sectors of 512 bytes whatever the device's own sector size.
DISKSTATS_SECTOR_BYTES = 512

__all__ = ["DEFAULT_PROC_ROOT", "DEFAULT_SYS_ROOT", "HostReader", "host_identity", "parse_pressure", "pressure_sample"]


_read = read_text


def pressure_sample(values: psi.PressureValues) -> Pressure:
    """The wire struct of one parsed PSI file (host or cgroup)."""
    return Pressure(some_total_us=values.some_total_us, full_total_us=values.full_total_us,
                    some_avg10_pct=values.some_avg10_pct, full_avg10_pct=values.full_avg10_pct)


def parse_pressure(text: str) -> Pressure:
    """Parse a PSI file (``some avg10=.. total=..`` / ``full ...``) into a :class:`Pressure`."""
    return pressure_sample(psi.parse_pressure(text))


class HostReader:
    """Reads one :class:`HostSample` from a proc and a sys tree (real or a test fixture)."""

    def __init__(self, proc_root: str = DEFAULT_PROC_ROOT, sys_root: str = DEFAULT_SYS_ROOT) -> None:
        self.proc_root = proc_root
        self.sys_root = sys_root
        self._clk_tck = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._page_size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        # Sensor paths are discovered once: the set of hwmon/thermal files does not change
        # while the host runs, and walking /sys every tick would cost more than reading them.
        self._temp_files: list[tuple[str, str]] | None = None

    def _p(self, name: str) -> str:
        return os.path.join(self.proc_root, name)

    def read(self) -> HostSample:
        """One reading of the host. Missing files leave their fields at defaults (logged once)."""
        total, cores, procs_running = self._cpu()
        mem = self._meminfo()
        swap_in, swap_out = self._vmstat()
        load = self._loadavg()
        return HostSample(
            cpu_total=total,
            cpu_per_core=cores,
            load_1=load[0],
            load_5=load[1],
            load_15=load[2],
            mem_total_bytes=mem.get("MemTotal", 0),
            mem_available_bytes=mem.get("MemAvailable", mem.get("MemFree", 0)),
            mem_used_bytes=max(0, mem.get("MemTotal", 0) - mem.get("MemAvailable", mem.get("MemFree", 0))),
            swap_total_bytes=mem.get("SwapTotal", 0),
            swap_used_bytes=max(0, mem.get("SwapTotal", 0) - mem.get("SwapFree", 0)),
            swap_in_bytes=swap_in,
            swap_out_bytes=swap_out,
            net=self._net(),
            disks=self._disks(),
            pressure=self._pressure(),
            temps_c=self._temps(),
            procs_total=procs_running,
        )

    # -- pieces ---------------------------------------------------------------------------

    def _cpu(self) -> tuple[CpuTimes, list[CpuTimes], int]:
        text = _read(self._p("stat")) or ""
        total = CpuTimes()
        cores: list[CpuTimes] = []
        tck = self._clk_tck
        for line in text.splitlines():
            if line.startswith("cpu"):
                f = line.split()
                v = [int(x) / tck for x in f[1:9]] + [0.0] * (8 - len(f[1:9]))
                # guest time is already included in user/nice; not counted twice.
                t = CpuTimes(
                    user_s=v[0], nice_s=v[1], system_s=v[2], idle_s=v[3],
                    iowait_s=v[4], irq_s=v[5], softirq_s=v[6], steal_s=v[7],
                )
                if f[0] == "cpu":
                    total = t
                else:
                    cores.append(t)
        return total, cores, self._count_procs()

    def _count_procs(self) -> int:
        # /proc/loadavg's 4th field is "running/total" scheduling entities (threads); the
        # number of processes is the number of numeric entries in /proc.
        return len(procfs.list_pids(self.proc_root) or ())

    def _loadavg(self) -> tuple[float, float, float]:
        text = _read(self._p("loadavg"))
        if not text:
            return 0.0, 0.0, 0.0
        f = text.split()
        return float(f[0]), float(f[1]), float(f[2])

    def _meminfo(self) -> dict[str, int]:
        return procfs.read_meminfo(self.proc_root) or {}

    def _vmstat(self) -> tuple[int, int]:
        # /proc/vmstat has ~180 lines and we need two: find them instead of splitting all.
        text = "\n" + (_read(self._p("vmstat")) or "")
        pages = []
        for key in ("\npswpin ", "\npswpout "):
            at = text.find(key)
            if at < 0:
                pages.append(0)
                continue
            start = at + len(key)
            end = text.find("\n", start)
            pages.append(int(text[start:end if end >= 0 else None]))
        # pswpin/pswpout count pages.
        return pages[0] * self._page_size, pages[1] * self._page_size

    def _net(self) -> list[NetCounters]:
        out = []
        for line in (_read(self._p("net/dev")) or "").splitlines()[2:]:
            name, _, rest = line.partition(":")
            f = rest.split()
            if len(f) < 16:
                continue
            out.append(NetCounters(
                name=name.strip(),
                rx_bytes=int(f[0]), rx_packets=int(f[1]), rx_errors=int(f[2]), rx_drops=int(f[3]),
                tx_bytes=int(f[8]), tx_packets=int(f[9]), tx_errors=int(f[10]), tx_drops=int(f[11]),
            ))
        return out

    def _is_whole_disk(self, name: str) -> bool:
        if name.startswith(SKIPPED_DISK_PREFIXES):
            return False
        # A partition has a "partition" file in its /sys/class/block entry; where /sys is
        # not available (fixture without it) fall back to "not in /sys/block means partition".
        sys_block = os.path.join(self.sys_root, "block")
        if os.path.isdir(sys_block):
            return os.path.exists(os.path.join(sys_block, name))
        return True

    def _disks(self) -> list[DiskCounters]:
        out = []
        for line in (_read(self._p("diskstats")) or "").splitlines():
            f = line.split()
            if len(f) < 14 or not self._is_whole_disk(f[2]):
                continue
            out.append(DiskCounters(
                name=f[2],
                reads=int(f[3]),
                read_bytes=int(f[5]) * DISKSTATS_SECTOR_BYTES,
                writes=int(f[7]),
                write_bytes=int(f[9]) * DISKSTATS_SECTOR_BYTES,
                busy_ms=int(f[12]),
            ))
        return out

    def _pressure(self) -> dict[str, Pressure]:
        return {res: pressure_sample(v) for res, v in procfs.read_host_pressure(self.proc_root).items()}

    def _discover_temps(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        hwmon = Path(self.sys_root, "class", "hwmon")
        if hwmon.is_dir():
            for dev in sorted(hwmon.iterdir()):
                chip = (_read(str(dev / "name")) or dev.name).strip()
                for inp in sorted(dev.glob("temp*_input")):
                    label_file = inp.with_name(inp.name.replace("_input", "_label"))
                    label = (_read(str(label_file)) or inp.name.replace("_input", "")).strip()
                    found.append((f"{chip}/{label}", str(inp)))
        thermal = Path(self.sys_root, "class", "thermal")
        if thermal.is_dir():
            for zone in sorted(thermal.glob("thermal_zone*")):
                kind = (_read(str(zone / "type")) or zone.name).strip()
                if (zone / "temp").exists():
                    found.append((f"{kind}/{zone.name}", str(zone / "temp")))
        return found

    def _temps(self) -> dict[str, float]:
        if self._temp_files is None:
            self._temp_files = self._discover_temps()
        out = {}
        for label, path in self._temp_files:
            text = _read(path)
            if text:
                try:
                    out[label] = int(text.strip()) / 1000.0  # millidegrees
                except ValueError:
                    pass
        return out


def host_identity(proc_root: str = DEFAULT_PROC_ROOT) -> dict[str, object]:
    """Static facts of the host for :class:`NodeInventory`.

    Returns a dict with ``hostname``, ``cpu_model``, ``cpu_count``, ``mem_total_bytes``,
    ``swap_total_bytes``, ``kernel`` and ``boot_time_s`` (Unix seconds).
    """
    cpu_model = ""
    cpu_count = 0
    for line in (_read(os.path.join(proc_root, "cpuinfo")) or "").splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key == "processor":
            cpu_count += 1
        elif key in ("model name", "Model", "cpu model") and not cpu_model:
            cpu_model = val.strip()
    mem = procfs.read_meminfo(proc_root) or {}
    boot = procfs.boot_time_s(proc_root) or 0.0
    kernel = (_read(os.path.join(proc_root, "sys/kernel/osrelease")) or platform.release()).strip()
    hostname = (_read(os.path.join(proc_root, "sys/kernel/hostname")) or socket.gethostname()).strip()
    return {
        "hostname": hostname,
        "cpu_model": cpu_model,
        "cpu_count": cpu_count or (os.cpu_count() or 0),
        "mem_total_bytes": mem.get("MemTotal", 0),
        "swap_total_bytes": mem.get("SwapTotal", 0),
        "kernel": kernel,
        "boot_time_s": boot,
    }
