"""Realistic synthetic NodeSample streams for the recorder benchmark and tests.

The values follow what a busy GPU node reports: counters that grow at plausible rates (CPU
ticks in 1/100 s, bytes on busy links), GPU gauges that wander, jobs whose cgroup counters
grow. Deterministic for a given seed, so sizes and timings are comparable between runs.
"""

from __future__ import annotations

import random

from agentd.metrics.samples import (
    AppMetric,
    CgroupSample,
    CpuTimes,
    DiskCounters,
    GpuInfo,
    GpuProcess,
    GpuSample,
    HostSample,
    NetCounters,
    NodeInventory,
    NodeSample,
    Pressure,
)

DEFAULT_CORES = 32
GIB = 1024**3
MIB = 1024**2


def synth_inventory(node: str, gpus: int = 8, cores: int = DEFAULT_CORES) -> NodeInventory:
    """Static facts matching :class:`SyntheticNode`."""
    return NodeInventory(
        node=node,
        hostname=node,
        cpu_model="Synthetic CPU",
        cpu_count=cores,
        mem_total_bytes=512 * GIB,
        kernel="6.1.0-synthetic",
        gpu_backend="simulated",
        gpu_status="simulated",
        gpus=[
            GpuInfo(index=i, name="Simulated H100", uuid=f"GPU-{node}-{i}", mem_total_bytes=80 * GIB,
                    power_limit_mw=700_000, simulated=True)
            for i in range(gpus)
        ],
        cgroup_mode="v2",
        agentd_version="synthetic",
    )


class SyntheticNode:
    """Generates consecutive NodeSamples of one node at ``interval_s`` steps."""

    def __init__(self, node: str, *, gpus: int = 8, jobs: int = 8, cores: int = DEFAULT_CORES,
                 start_wall_s: float = 1_700_000_000.0, interval_s: float = 1.0, seed: int = 0,
                 boot_id: str = "boot-1") -> None:
        self.node = node
        self.gpus = gpus
        self.jobs = jobs
        self.cores = cores
        self.interval_s = interval_s
        self.wall_s = start_wall_s
        self.mono_s = 1000.0
        self.boot_id = boot_id
        self._rng = random.Random(f"{node}/{seed}")
        r = self._rng
        # Cumulative counters kept as integers (ticks, bytes) so floats look like /proc's.
        self._ticks = [[r.randrange(10**6, 10**7) for _ in range(8)] for _ in range(cores)]
        self._busy = [r.random() for _ in range(cores)]
        self._net = [r.randrange(10**9, 10**12) for _ in range(4)]
        self._disk = [r.randrange(10**9, 10**11) for _ in range(5)]
        self._psi = [r.randrange(10**6, 10**9) for _ in range(3)]
        self._gpu_util = [r.uniform(20, 100) for _ in range(gpus)]
        self._energy = [r.randrange(10**9, 10**10) for _ in range(gpus)]
        self._nvlink = [[r.randrange(10**10, 10**12), r.randrange(10**10, 10**12)] for _ in range(gpus)]
        self._job_cpu = [r.randrange(10**8, 10**10) for _ in range(jobs)]
        self._job_io = [[r.randrange(10**6, 10**9), r.randrange(10**6, 10**9)] for _ in range(jobs)]
        self._tokens = [float(r.randrange(10**5, 10**7)) for _ in range(jobs)]
        # Gauges that real nodes report move slowly: random walks, not fresh draws each tick.
        self._load = [r.uniform(1, 40) for _ in range(3)]
        self._mem_used = 200 * GIB + r.randrange(GIB)
        self._temps = [float(r.randrange(40, 70)) for _ in range(2)]
        self._gpu_temp = [float(r.randrange(45, 80)) for _ in range(gpus)]
        self._gpu_mem = [60 * GIB + r.randrange(GIB) // MIB * MIB for _ in range(gpus)]
        self._job_mem = [20 * GIB + r.randrange(GIB) // 4096 * 4096 for _ in range(jobs)]
        self._procs = 900 + r.randrange(50)

    def inventory(self) -> NodeInventory:
        return synth_inventory(self.node, self.gpus, self.cores)

    def next(self) -> NodeSample:
        """The next sample; counters advance by one interval."""
        r = self._rng
        self.wall_s += self.interval_s
        self.mono_s += self.interval_s
        hz = int(100 * self.interval_s)
        per_core = []
        for c in range(self.cores):
            self._busy[c] = min(1.0, max(0.0, self._busy[c] + r.uniform(-0.1, 0.1)))
            busy = int(hz * self._busy[c])
            t = self._ticks[c]
            t[0] += busy * 3 // 4
            t[2] += busy - busy * 3 // 4
            t[3] += hz - busy
            if r.random() < 0.05:
                t[4] += 1
            per_core.append(CpuTimes(user_s=t[0] / 100, nice_s=t[1] / 100, system_s=t[2] / 100, idle_s=t[3] / 100,
                                     iowait_s=t[4] / 100, irq_s=t[5] / 100, softirq_s=t[6] / 100, steal_s=t[7] / 100))
        total = [sum(t[i] for t in self._ticks) for i in range(8)]
        cpu_total = CpuTimes(user_s=total[0] / 100, nice_s=total[1] / 100, system_s=total[2] / 100,
                             idle_s=total[3] / 100, iowait_s=total[4] / 100, irq_s=total[5] / 100,
                             softirq_s=total[6] / 100, steal_s=total[7] / 100)
        for i in range(len(self._net)):
            self._net[i] += r.randrange(0, 10**8)
        for i in range(len(self._disk)):
            self._disk[i] += r.randrange(0, 10**7)
        for i in range(len(self._psi)):
            self._psi[i] += r.randrange(0, 10**5)
        self._load = [round(max(0.0, x + r.uniform(-0.3, 0.3)), 2) for x in self._load]
        self._mem_used += r.randrange(-64, 65) * 4096 * 16
        self._temps = [min(95.0, max(30.0, x + r.choice((-1.0, 0.0, 0.0, 0.0, 1.0)))) for x in self._temps]
        self._procs += r.choice((-1, 0, 0, 0, 1))
        host = HostSample(
            cpu_total=cpu_total,
            cpu_per_core=per_core,
            load_1=self._load[0], load_5=self._load[1], load_15=self._load[2],
            mem_total_bytes=512 * GIB,
            mem_available_bytes=512 * GIB - self._mem_used - 10 * GIB,
            mem_used_bytes=self._mem_used,
            net=[NetCounters(name="lo", rx_bytes=self._net[0], tx_bytes=self._net[0]),
                 NetCounters(name="eth0", rx_bytes=self._net[1], tx_bytes=self._net[2], rx_packets=self._net[1] // 1400,
                             tx_packets=self._net[2] // 1400)],
            disks=[DiskCounters(name="nvme0n1", read_bytes=self._disk[0], write_bytes=self._disk[1],
                                reads=self._disk[0] // 4096, writes=self._disk[1] // 4096, busy_ms=self._disk[2] // 1000)],
            pressure={k: Pressure(some_total_us=v, full_total_us=v // 2, some_avg10_pct=round(r.uniform(0, 5), 2))
                      for k, v in zip(("cpu", "memory", "io"), self._psi)},
            temps_c={"Package id 0": self._temps[0], "Package id 1": self._temps[1]},
            procs_total=self._procs,
        )
        gpus = []
        for g in range(self.gpus):
            self._gpu_util[g] = min(100.0, max(0.0, self._gpu_util[g] + r.uniform(-5, 5)))
            self._gpu_temp[g] = min(90.0, max(30.0, self._gpu_temp[g] + r.choice((-1.0, 0.0, 0.0, 1.0))))
            if r.random() < 0.02:  # the caching allocator grows or trims now and then
                self._gpu_mem[g] += r.randrange(-256, 257) * MIB
            power = 100_000 + int(self._gpu_util[g] * 5500) + r.randrange(1000)
            self._energy[g] += int(power * self.interval_s)
            self._nvlink[g][0] += r.randrange(0, 10**9)
            self._nvlink[g][1] += r.randrange(0, 10**9)
            gpus.append(GpuSample(
                index=g, uuid=f"GPU-{self.node}-{g}", sm_util_pct=float(int(self._gpu_util[g])),
                mem_util_pct=float(int(self._gpu_util[g] * 0.6)), mem_used_bytes=self._gpu_mem[g],
                mem_total_bytes=80 * GIB, power_mw=power, power_limit_mw=700_000, energy_mj=self._energy[g],
                temp_c=self._gpu_temp[g], sm_clock_mhz=1980 - r.randrange(3) * 15, mem_clock_mhz=2619,
                pcie_tx_bytes_per_s=float(r.randrange(0, 10**6) * 1024), pcie_rx_bytes_per_s=float(r.randrange(0, 10**6) * 1024),
                nvlink_tx_bytes=self._nvlink[g][0], nvlink_rx_bytes=self._nvlink[g][1],
                ecc_corrected_total=0, ecc_uncorrected_total=0, xid_total=0,
                processes=[GpuProcess(pid=10_000 + g, used_bytes=59 * GIB)],
            ))
        jobs = []
        app = []
        for j in range(self.jobs):
            self._job_cpu[j] += r.randrange(0, 4 * 10**6)
            self._job_io[j][0] += r.randrange(0, 10**7)
            self._job_io[j][1] += r.randrange(0, 10**6)
            self._tokens[j] += float(r.randrange(1000, 50_000))
            self._job_mem[j] += r.randrange(-16, 17) * 4096
            job_id = f"{self.node}.{j + 1}"
            jobs.append(CgroupSample(
                job_id=job_id, cpu_usage_us=self._job_cpu[j], cpu_user_us=self._job_cpu[j] * 9 // 10,
                cpu_system_us=self._job_cpu[j] // 10, mem_current_bytes=self._job_mem[j],
                mem_peak_bytes=22 * GIB, io_read_bytes=self._job_io[j][0], io_write_bytes=self._job_io[j][1],
                pids_current=12, gpu_mem_bytes={j % max(1, self.gpus): 59 * GIB} if self.gpus else {},
            ))
            app.append(AppMetric(job_id=job_id, name="tokens", value=self._tokens[j], counter=True))
            app.append(AppMetric(job_id=job_id, name="loss", value=round(r.uniform(1, 3), 4)))
        return NodeSample(node=self.node, mono_s=self.mono_s, wall_s=self.wall_s, host=host, gpus=gpus, jobs=jobs,
                          app=app, boot_id=self.boot_id)
