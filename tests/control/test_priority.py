"""Priority: cgroup CPU weights make two CPU-bound jobs on one core share it unequally."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from agentd.control import procs
from agentd.control.cgroups import priority_weight
from tests.control.control_helpers import SPIN, spec, wait_for

TASKSET = shutil.which("taskset")
MEASURE_S = 5.0


def _share(m, hi_id: str, lo_id: str) -> tuple[float, float]:
    hi, lo = m.get(hi_id).pid, m.get(lo_id).pid
    wait_for(lambda: procs.cpu_time_s(hi) and procs.cpu_time_s(lo), 10, "both jobs to run")
    time.sleep(0.3)  # let the weights settle
    h0, l0 = procs.cpu_time_s(hi), procs.cpu_time_s(lo)
    time.sleep(MEASURE_S)
    return procs.cpu_time_s(hi) - h0, procs.cpu_time_s(lo) - l0


@pytest.mark.skipif(TASKSET is None, reason="needs taskset (util-linux)")
@pytest.mark.parametrize("root", ["/sys/fs/cgroup", None])
def test_plus5_vs_minus5_on_one_core_gets_3_to_1(make_manager, tmp_path, root):
    """+5 vs -5 pinned to one core: >= 3:1 (the weights give ~9:1). Without cgroups: autogroup nice."""
    m, _ = make_manager(cgroup_root=Path(root) if root else tmp_path / "no-cgroups")
    pinned = [TASKSET, "-c", "0", *SPIN]
    a = m.submit(spec(pinned, name="low"))
    b = m.submit(spec(pinned, name="high"))
    m.set_priority(a.id, -5, actor="bob")
    m.set_priority(b.id, 5, actor="bob")
    assert m.get(b.id).priority == 5
    hi_s, lo_s = _share(m, b.id, a.id)
    print(f"\n{m.get(a.id).control}: +5 got {hi_s:.2f} s CPU, -5 got {lo_s:.2f} s ({hi_s / max(lo_s, 1e-3):.1f}:1)")
    assert hi_s > 0.5, "the high-priority job barely ran; is core 0 saturated by something else?"
    assert hi_s >= 3 * lo_s


def test_weight_mapping_is_monotonic_and_bounded():
    weights = [priority_weight(p, 1024, 2, 262144) for p in range(-10, 11)]
    assert weights == sorted(weights) and weights[10] == 1024
    assert priority_weight(5, 1024, 2, 262144) / priority_weight(-5, 1024, 2, 262144) > 9
    assert priority_weight(10, 500, 10, 1000) == 1000


def test_priority_writes_cgroup_weight_and_nice(manager):
    m, _ = manager
    job = m.submit(spec())
    m.set_priority(job.id, 4)
    cpu_dir = Path(m.probes()[job.id][0].paths["cpu"])
    assert int((cpu_dir / "cpu.shares").read_text()) == priority_weight(4, 1024, 2, 262144)
    assert int(Path(f"/proc/{job.pid}/stat").read_text().rsplit(")", 1)[1].split()[16]) == -4


def test_v2_without_cpu_controller_falls_back_to_autogroup_nice(make_manager):
    """On the unified mount here no controller is delegated: the job's autogroup gets the nice."""
    m, _ = make_manager(cgroup_root=Path("/sys/fs/cgroup/unified"))
    job = m.submit(spec(priority=3))
    assert job.control == "cgroup-v2"
    wait_for(lambda: Path(f"/proc/{job.pid}/autogroup").read_text().split("nice")[-1].strip() == "-3", 5,
             "the autogroup nice")
    m.set_priority(job.id, -4)
    assert Path(f"/proc/{job.pid}/autogroup").read_text().split("nice")[-1].strip() == "4"
