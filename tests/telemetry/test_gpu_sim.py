"""The simulated GPU backend: marked simulated, plausible, time-varying, driven by set_load."""

from __future__ import annotations

import pytest

from agentd.telemetry.gpu_sim import SIM_MEM_TOTAL_BYTES, SimulatedGpuBackend


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_marked_simulated_with_pairwise_nvlink():
    b = SimulatedGpuBackend(4, seed=1, clock=Clock())
    assert (b.backend, b.status) == ("simulated", "simulated")
    infos = b.gpus()
    assert [i.index for i in infos] == [0, 1, 2, 3] and all(i.simulated for i in infos)
    assert len({i.uuid for i in infos}) == 4
    assert [(link.a, link.b) for link in b.links()] == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert all(link.kind == "nvlink" for link in b.links())
    # same seed, same GPUs
    assert [i.uuid for i in SimulatedGpuBackend(4, seed=1, clock=Clock()).gpus()] == [i.uuid for i in infos]


def test_busy_gpu_shows_load_memory_and_heat():
    clock = Clock()
    b = SimulatedGpuBackend(2, seed=7, clock=clock)
    b.set_load(0, True, [111, 222])
    first = b.sample()
    temps = []
    for _ in range(60):
        clock.t += 1.0
        s = b.sample()
        temps.append(s[0].temp_c)
    busy, idle = s
    assert busy.sm_util_pct > 70 and idle.sm_util_pct < 10
    assert busy.power_mw > 3 * idle.power_mw
    assert temps[-1] > temps[0] and busy.temp_c > idle.temp_c  # heats up with a lag
    assert busy.energy_mj > first[0].energy_mj and busy.nvlink_tx_bytes > first[0].nvlink_tx_bytes
    assert {p.pid for p in busy.processes} == {111, 222} and idle.processes == []
    assert busy.mem_used_bytes > SIM_MEM_TOTAL_BYTES // 2 > idle.mem_used_bytes
    assert sum(p.used_bytes for p in busy.processes) < busy.mem_used_bytes <= busy.mem_total_bytes
    # a paused job: SMs idle, memory still held
    b.set_load(0, False, [111, 222])
    clock.t += 1.0
    paused = b.sample()[0]
    assert paused.sm_util_pct < 10 and paused.mem_used_bytes == busy.mem_used_bytes


def test_set_load_unknown_gpu_names_the_range():
    b = SimulatedGpuBackend(2, clock=Clock())
    with pytest.raises(IndexError, match=r"0\.\.1"):
        b.set_load(5, True, [])
