"""The radar on a real 4-rank ring (examples/ring_trainer.py) with one rank 1.3x slower: it is named.

The radar is fed as the daemon will feed it: each rank's reported metrics (its ``AGENTD_METRIC``
lines, parsed by the daemon's own parser) and its CPU time, observed on one clock.
"""

from __future__ import annotations

import time

import psutil
import pytest

from agentd.control.reports import parse_line
from agentd.groups.radar import RadarConfig, RankPoint, RankSeries, analyse
from tests.examples.ring_helpers import Ring, start_ring

pytestmark = pytest.mark.slow
SLOW_RANK = 2


class Feed:
    """Observe a running ring as the daemon will: reported metric lines plus each rank's CPU time."""

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.world = len(ring.procs)
        self.points: list[list[RankPoint]] = [[] for _ in range(self.world)]
        self.read_upto = [0] * self.world
        self.procs = [psutil.Process(p.pid) for p in ring.procs]

    def poll(self) -> float:
        """Take in what every rank wrote since the last poll; returns the observation time."""
        now = time.monotonic()
        for r in range(self.world):
            assert self.ring.procs[r].poll() is None, self.ring.err(r)
            text = self.ring.out(r)
            cut = text.rfind("\n") + 1
            new, self.read_upto[r] = text[self.read_upto[r]:cut], max(self.read_upto[r], cut)
            cpu = self.procs[r].cpu_times()
            cpu_s = cpu.user + cpu.system
            got = False
            for line in new.splitlines():
                msg = parse_line(line)
                if msg is None or msg.get("t") != "metric":
                    continue
                v = msg["values"]
                self.points[r].append(RankPoint(t_s=now, step=int(v["step"]), step_compute_s=v["step_compute_s"],
                                                step_wait_s=v["step_wait_s"], cpu_s=cpu_s))
                got = True
            if not got and self.points[r]:  # no report this time: the cgroup sampler still sees CPU time
                self.points[r].append(RankPoint(t_s=now, step=self.points[r][-1].step, cpu_s=cpu_s))
        return now

    def series(self) -> list[RankSeries]:
        return [RankSeries(rank=r, node="localhost", points=self.points[r]) for r in range(self.world)]


def test_the_radar_names_the_slow_rank_of_a_real_ring(tmp_path):
    ring = start_ring(4, ["--steps", "100000", "--compute-ms", "40", "--slow-rank", str(SLOW_RANK),
                          "--slow-factor", "1.3"], tmp_path / "logs")
    feed = Feed(ring)
    verdicts = []
    others_flagged: list[object] = []
    try:
        deadline = time.monotonic() + 240  # generous: the window alone is 30 s, the host is shared
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = feed.poll()
            series = feed.series()
            verdicts = analyse(series, now)
            others_flagged += [v for v in verdicts if v.rank != SLOW_RANK and v.status != "ok"]
            if verdicts[SLOW_RANK].status == "straggler":
                break
    finally:
        ring.kill()
    assert verdicts and verdicts[SLOW_RANK].status == "straggler", verdicts
    assert not others_flagged, others_flagged
    v = verdicts[SLOW_RANK]
    assert v.likely == "extra_work", v  # 1.3x the work per step: its CPU per step shows it
    assert v.evidence["others_wait_s"] > v.evidence["wait_s"]


def test_the_radar_names_a_real_hung_rank_and_the_others_wait(tmp_path):
    """Rank 1 gets stuck computing (spins); the others block in recv: the radar tells them apart."""
    ring = start_ring(4, ["--steps", "100000", "--compute-ms", "20", "--hang-rank", "1", "--hang-at-step", "30",
                          "--hang-mode", "spin", "--peer-timeout", "600"], tmp_path / "logs")
    feed = Feed(ring)
    cfg = RadarConfig(min_hang_s=8.0)  # the rule's floor, shortened for the test; 10x median step still applies
    verdicts = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = feed.poll()
            verdicts = analyse(feed.series(), now, cfg)
            if verdicts[1].status == "hung":
                break
    finally:
        ring.kill()
    assert "hanging at step 30" in ring.out(1)
    assert [v.status for v in verdicts] == ["waiting", "hung", "waiting", "waiting"], verdicts
    assert verdicts[1].evidence["active"] == 1.0 and verdicts[1].evidence["step"] == 29
    assert "rank 1" in verdicts[0].reason
