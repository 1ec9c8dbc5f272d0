"""Simulated GPUs for demos, tests and GPU-less development: plausible, time-varying, marked.

Every value is clearly simulated (``GpuInfo.simulated``, backend and status ``"simulated"``).
Idle GPUs hum near zero; GPUs the daemon marks busy (:meth:`SimulatedGpuBackend.set_load`)
run a training-like wave, and their memory appears under the job's pids, so the app's views
of "which job holds which GPU" work without hardware. Power follows utilisation, temperature
follows power with a thermal lag, energy and NVLink counters integrate over time.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Callable

from agentd.metrics.samples import GpuInfo, GpuLink, GpuProcess, GpuSample

__all__ = ["SimulatedGpuBackend"]

SIM_GPU_NAME = "Simulated H100 80GB"
SIM_MEM_TOTAL_BYTES = 80 * 1024**3
SIM_IDLE_MEM_BYTES = 512 * 1024**2
SIM_POWER_LIMIT_MW = 700_000
SIM_IDLE_POWER_MW = 70_000
SIM_AMBIENT_C = 32.0
SIM_MAX_TEMP_C = 78.0
#: Thermal time constant: a GPU reaches ~63% of its new temperature after this long.
SIM_THERMAL_TAU_S = 20.0
SIM_SM_CLOCK_MAX_MHZ = 1980
SIM_SM_CLOCK_IDLE_MHZ = 345
SIM_MEM_CLOCK_MHZ = 2619
SIM_PCIE_MAX_BYTES_PER_S = 24e9
SIM_NVLINK_MAX_BYTES_PER_S = 150e9
SIM_NVLINK_LANES = 18
#: A busy job's share of GPU memory (its model, optimiser state and activations).
SIM_BUSY_MEM_FRACTION = 0.72
THROTTLE_SW_POWER_CAP = 0x4


class SimulatedGpuBackend:
    """``n`` simulated GPUs whose values depend on ``clock()`` (seconds) and ``seed``."""

    backend = "simulated"
    status = "simulated"

    def __init__(self, n: int, seed: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.n = n
        self._clock = clock
        self._rng = random.Random(seed)
        self._t0 = clock()
        self._phase = [self._rng.uniform(0, 2 * math.pi) for _ in range(n)]
        self._period_s = [self._rng.uniform(20.0, 60.0) for _ in range(n)]
        self._uuids = [f"GPU-{uuid.UUID(int=self._rng.getrandbits(128), version=4)}" for _ in range(n)]
        self._busy = [False] * n
        self._pids: list[list[int]] = [[] for _ in range(n)]
        self._temp = [SIM_AMBIENT_C + 3.0] * n
        self._energy_mj = [0.0] * n
        self._nvlink = [[0.0, 0.0] for _ in range(n)]
        self._last_t = self._t0

    def set_load(self, index: int, busy: bool, pids: list[int]) -> None:
        """Mark GPU ``index`` as used by a running job (``busy``) whose processes are ``pids``.

        A paused job passes ``busy=False`` with its pids: its memory stays held, its SMs idle.
        """
        if not 0 <= index < self.n:
            raise IndexError(f"simulated GPU {index} does not exist; this node has GPUs 0..{self.n - 1}")
        self._busy[index] = busy
        self._pids[index] = list(pids)

    def gpus(self) -> list[GpuInfo]:
        return [
            GpuInfo(
                index=i, name=SIM_GPU_NAME, uuid=self._uuids[i], pci_bus_id=f"00000000:{0x18 + i:02X}:00.0",
                mem_total_bytes=SIM_MEM_TOTAL_BYTES, power_limit_mw=SIM_POWER_LIMIT_MW,
                driver_version="simulated", simulated=True,
            )
            for i in range(self.n)
        ]

    def links(self) -> list[GpuLink]:
        """All pairs joined by NVLink, as on an NVSwitch board."""
        return [GpuLink(a=a, b=b, kind="nvlink", links=SIM_NVLINK_LANES) for a in range(self.n) for b in range(a + 1, self.n)]

    def _util(self, i: int, t: float) -> float:
        wave = math.sin(2 * math.pi * t / self._period_s[i] + self._phase[i])
        if self._busy[i]:
            # Training steps: high, with a slow wave and step-to-step jitter.
            return max(0.0, min(100.0, 88.0 + 8.0 * wave + self._rng.uniform(-3.0, 3.0)))
        return max(0.0, 1.5 + 1.5 * wave + self._rng.uniform(0.0, 1.0))

    def sample(self) -> list[GpuSample]:
        t = self._clock()
        dt = max(0.0, t - self._last_t)
        self._last_t = t
        rel = t - self._t0
        out = []
        for i in range(self.n):
            util = self._util(i, rel)
            power_mw = SIM_IDLE_POWER_MW + (SIM_POWER_LIMIT_MW - SIM_IDLE_POWER_MW) * util / 100.0 * 0.92
            self._energy_mj[i] += power_mw * dt  # mW * s = mJ
            target = SIM_AMBIENT_C + (SIM_MAX_TEMP_C - SIM_AMBIENT_C) * power_mw / SIM_POWER_LIMIT_MW
            alpha = 1.0 - math.exp(-dt / SIM_THERMAL_TAU_S) if dt > 0 else 0.0
            self._temp[i] += (target - self._temp[i]) * alpha
            pids = self._pids[i]
            job_mem = int(SIM_MEM_TOTAL_BYTES * SIM_BUSY_MEM_FRACTION) if pids else 0
            nv_rate = SIM_NVLINK_MAX_BYTES_PER_S * util / 100.0 * 0.3 if self.n > 1 else 0.0
            self._nvlink[i][0] += nv_rate * dt
            self._nvlink[i][1] += nv_rate * dt * 0.97
            processes = [
                GpuProcess(pid=pid, used_bytes=job_mem // len(pids), sm_pct=util / len(pids)) for pid in pids
            ]
            sm_clock = SIM_SM_CLOCK_IDLE_MHZ + int((SIM_SM_CLOCK_MAX_MHZ - SIM_SM_CLOCK_IDLE_MHZ) * min(1.0, util / 60.0))
            throttled = power_mw > 0.9 * SIM_POWER_LIMIT_MW
            out.append(GpuSample(
                index=i, uuid=self._uuids[i],
                sm_util_pct=round(util, 1), mem_util_pct=round(util * 0.45, 1),
                mem_used_bytes=SIM_IDLE_MEM_BYTES + job_mem, mem_total_bytes=SIM_MEM_TOTAL_BYTES,
                power_mw=int(power_mw), power_limit_mw=SIM_POWER_LIMIT_MW, energy_mj=int(self._energy_mj[i]),
                temp_c=round(self._temp[i], 1),
                sm_clock_mhz=sm_clock, mem_clock_mhz=SIM_MEM_CLOCK_MHZ,
                pcie_tx_bytes_per_s=SIM_PCIE_MAX_BYTES_PER_S * util / 100.0 * 0.1,
                pcie_rx_bytes_per_s=SIM_PCIE_MAX_BYTES_PER_S * util / 100.0 * 0.2,
                nvlink_tx_bytes=int(self._nvlink[i][0]) if self.n > 1 else None,
                nvlink_rx_bytes=int(self._nvlink[i][1]) if self.n > 1 else None,
                throttle_reasons=THROTTLE_SW_POWER_CAP if throttled else 0,
                ecc_corrected_total=0, ecc_uncorrected_total=0, xid_total=0,
                processes=processes,
            ))
        return out

    def close(self) -> None:
        pass
