"""The live radar's parts without sockets: a GroupWatcher fed node samples, evidence capture on a
real process, the nodes label and the radar config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentd.groups.evidence import capture, kernel_stacks
from agentd.groups.radar import RadarConfig
from agentd.groups.radar_service import parse_nodes_label, radar_config
from agentd.groups.watch import GroupWatcher, Member, rank_point
from agentd.metrics.samples import (
    AppMetric,
    CgroupSample,
    CpuTimes,
    GpuSample,
    HostSample,
    NodeInventory,
    NodeSample,
)
from agentd.protocol.link import LinkSnapshot
from agentd.protocol.messages import HelloReply, SnapshotReply

CFG = RadarConfig(sustain_s=12.0, slices=4, min_hang_s=8.0)
MEMBERS = [Member(rank=r, node="a" if r < 2 else "b", endpoint="tcp://x:1" if r < 2 else "tcp://x:2",
                  job_id=f"{'a' if r < 2 else 'b'}.{r + 1}", gpus=(r % 2,)) for r in range(4)]


def sample(node: str, t: float, steps: dict[str, int], cpu: dict[str, float], gpu_util: float = 90.0) -> NodeSample:
    return NodeSample(node=node, mono_s=t, wall_s=t, host=HostSample(cpu_total=CpuTimes()),
                      gpus=[GpuSample(index=i, sm_util_pct=gpu_util, sm_clock_mhz=1400, power_mw=200_000) for i in (0, 1)],
                      jobs=[CgroupSample(job_id=j, cpu_usage_us=int(c * 1e6)) for j, c in cpu.items()],
                      app=[AppMetric(job_id=j, name="step", value=float(s)) for j, s in steps.items()])


def feed(w: GroupWatcher, t: float, steps: dict[int, int], cpu: dict[int, float], gpu_util: float = 90.0) -> None:
    for node in ("a", "b"):
        ms = [m for m in MEMBERS if m.node == node]
        w.observe(sample(node, t, {m.job_id: steps[m.rank] for m in ms}, {m.job_id: cpu[m.rank] for m in ms},
                         gpu_util), t)


def test_rank_point_reads_the_ranks_cgroup_metrics_and_gpus_and_skips_gpus_that_do_not_measure_it():
    s = sample("a", 5.0, {"a.1": 7}, {"a.1": 2.5}, gpu_util=80.0)
    p = rank_point(s, MEMBERS[0], 5.0)
    assert p is not None and p.step == 7 and p.cpu_s == 2.5 and p.gpu_util_pct == 80.0 and p.gpu_power_w == 200.0
    q = rank_point(s, MEMBERS[0], 5.0, gpus_measure_job=False)
    assert q is not None and q.gpu_util_pct is None and q.gpu_throttle_reasons is None
    assert rank_point(s, MEMBERS[2], 5.0) is None  # not on this node's sample


def test_a_hang_is_announced_once_two_checks_agree_and_first_oks_are_no_news():
    w = GroupWatcher("a.run-1", MEMBERS, CFG, clock=lambda: 0.0, wall=lambda: 1000.0)
    t, step = 0.0, 0
    cpu = dict.fromkeys(range(4), 0.0)
    changes = []
    while t < 20.0:  # all ranks step every 0.1 s
        step += 5
        cpu = {r: c + 0.25 for r, c in cpu.items()}
        feed(w, t, dict.fromkeys(range(4), step), cpu)
        changes += w.check(t)
        t += 0.5
    assert changes == [] and {h.status for h in w.health()} == {"ok"}
    first_said = announced = None
    while t < 40.0:  # rank 3 spins on the CPU; the others block (no CPU); the GPUs idle
        cpu[3] += 0.5
        feed(w, t, dict.fromkeys(range(4), step), cpu, gpu_util=0.0)
        if first_said is None and [v.status for v in w.verdicts(t)][3] == "hung":
            first_said = t
        new = w.check(t)
        if announced is None and new:
            announced = t
        changes += new
        t += 0.5
    hung = [h for h in changes if h.status == "hung"]
    assert [h.rank for h in hung] == [3], changes
    assert first_said is not None and announced is not None and announced > first_said  # two checks agreed
    assert [h.status for h in w.health()] == ["waiting", "waiting", "waiting", "hung"]


def test_a_straggler_is_announced_only_once_its_call_has_held_for_the_hold_time():
    w = GroupWatcher("a.run-1", MEMBERS, CFG, clock=lambda: 0.0, wall=lambda: 1000.0)
    t, step = 0.0, 0
    cpu = dict.fromkeys(range(4), 0.0)

    def run(until: float, busier: float) -> tuple[list[float], list]:
        """Every 0.5 s all ranks make 5 steps; rank 3 burns ``busier`` x the others' CPU (the
        others wait on it). Returns when the pure radar called rank 3 a straggler, and what was announced."""
        nonlocal t, step
        said, changes = [], []
        while t < until:
            step += 5
            cpu.update({r: c + (0.25 * busier if r == 3 else 0.25) for r, c in cpu.items()})
            feed(w, t, dict.fromkeys(range(4), step), cpu)
            if w.verdicts(t)[3].status == "straggler":
                said.append(t)
            changes += [(t, h) for h in w.check(t)]
            t += 0.5
        return said, changes

    assert run(20.0, 1.0) == ([], [])
    # 10 s of a busier rank 3: the window's rule calls it for a few seconds, under the hold: no news
    said, changes = run(30.0, 1.4)
    said2, changes2 = run(45.0, 1.0)
    said += said2
    assert said and max(said) - min(said) < CFG.straggler_hold_s, said
    assert changes + changes2 == [] and w.health()[3].status == "ok"
    # rank 3 stays busier: announced once the call has held for the hold time, not before
    said, changes = run(80.0, 1.4)
    assert [(h.rank, h.status) for _, h in changes] == [(3, "straggler")], changes
    announced_at = changes[0][0]
    assert CFG.straggler_hold_s <= announced_at - min(said) <= CFG.straggler_hold_s + 1.0, (said[:3], announced_at)
    assert w.health()[3].status == "straggler" and w.health()[3].evidence["busy_ratio"] > 1.09


def test_the_watcher_leaves_simulated_gpus_out():
    w = GroupWatcher("a.run-1", MEMBERS, CFG)
    inv = NodeInventory(node="a", hostname="a", gpu_backend="simulated")
    w.feed(LinkSnapshot(endpoint="tcp://x:1", node="a", reply=SnapshotReply(seq=1, inventory=inv),
                        hello=HelloReply(node="a", agentd_version="t", pub_endpoint="tcp://x:9", server_time_s=0.0)))
    w.observe(sample("a", 1.0, {"a.1": 1}, {"a.1": 1.0}), 1.0)
    assert w._points[0][-1].gpu_util_pct is None


def test_evidence_of_a_real_process_has_its_threads_kernel_stacks_and_metrics(tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        threads = kernel_stacks(proc.pid)
        assert threads and threads[0]["tid"] == str(proc.pid) and threads[0]["state"] in "SR"
        path, summary = capture("a.1", [proc.pid, 999_999_999], [0], [sample("a", 1.0, {"a.1": 3}, {"a.1": 0.5})],
                                tmp_path / "jobs" / "1", reason="test", py_spy="/nonexistent/py-spy")
    finally:
        proc.kill()
        proc.wait()
    doc = json.loads(path.read_text())
    assert path.parent == tmp_path / "jobs" / "1" and path.name.startswith("evidence-")
    assert doc["stack_source"] == "kernel" and [p["pid"] for p in doc["processes"]] == [proc.pid]
    assert doc["processes"][0]["threads"][0]["kernel_stack"]
    assert doc["gpus"][0]["sm_clock_mhz"] == 1400 and doc["metrics"][0]["app"] == {"step": 3.0}
    assert summary["processes"] == 1 and summary["stack_source"] == "kernel"


def test_nodes_label_and_radar_config():
    assert parse_nodes_label("a=tcp://h:1, b=tcp://h:2,bad,=x") == {"a": "tcp://h:1", "b": "tcp://h:2"}
    assert radar_config({"sustain_s": 12.0, "slices": 4}).slices == 4
    with pytest.raises(ValueError, match=r"\[agentd.radar\].*slices"):
        radar_config({"slices": 2.5})
    with pytest.raises(ValueError, match="sustain"):
        radar_config({"sustain": 3})
