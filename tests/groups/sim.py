"""Synthetic per-rank series of a synchronous group, for the radar's unit tests."""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field

from agentd.groups.radar import RankPoint, RankSeries


@dataclass
class SyncGroup:
    """A synchronous group stepping together: every step all ranks compute, then wait for the slowest.

    ``slow`` scales a rank's compute (and its CPU per step: extra work); ``host_slow`` scales only
    its wall time (same CPU work on a contended host); ``gpu_clock`` sets a rank's SM clock.
    """

    world: int
    compute_s: float = 0.5
    comm_s: float = 0.02
    noise: float = 0.03
    seed: int = 0
    slow: dict[int, float] = field(default_factory=dict)
    host_slow: dict[int, float] = field(default_factory=dict)
    gpu_clock: dict[int, float] | None = None
    points: list[list[RankPoint]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.points = [[] for _ in range(self.world)]
        self.t = 0.0
        self.step = 0
        self.cpu = [0.0] * self.world

    def _compute(self, r: int) -> float:
        c = self.compute_s * self.slow.get(r, 1.0) * max(0.8, self.rng.gauss(1.0, self.noise))
        if self.rng.random() < 0.01:  # the odd hiccup (GC, page cache) on a healthy rank
            c *= 1.5
        return c

    def run_until(self, t_end: float) -> None:
        while self.t < t_end:
            work = [self._compute(r) for r in range(self.world)]
            wall = [w * self.host_slow.get(r, 1.0) for r, w in enumerate(work)]
            step_s = max(wall) + self.comm_s
            self.t += step_s
            self.step += 1
            for r in range(self.world):
                self.cpu[r] += work[r] * 0.98 + 0.002
                gpu = {}
                if self.gpu_clock is not None:
                    gpu = {"gpu_util_pct": 100.0 * wall[r] / step_s, "gpu_sm_clock_mhz": self.gpu_clock.get(r, 1800.0)}
                self.points[r].append(RankPoint(t_s=self.t, step=self.step, step_compute_s=wall[r],
                                                step_wait_s=step_s - wall[r], cpu_s=self.cpu[r], **gpu))

    def stall(self, t_end: float, spinning: set[int], every_s: float = 1.0) -> None:
        """No step progress until ``t_end``; ``spinning`` ranks burn a core, the rest sleep in recv.
        As on a live node, each sample repeats the rank's last report (step, compute, wait)."""
        while self.t < t_end:
            self.t += every_s
            for r in range(self.world):
                self.cpu[r] += every_s if r in spinning else 0.001
                last = self.points[r][-1]
                self.points[r].append(RankPoint(t_s=self.t, step=last.step, step_compute_s=last.step_compute_s,
                                                step_wait_s=last.step_wait_s, cpu_s=self.cpu[r]))

    def series(self, since_s: float | None = None) -> list[RankSeries]:
        """The group's series, trimmed to points after ``since_s`` (what a live radar keeps)."""
        out = []
        for r, pts in enumerate(self.points):
            lo = 0 if since_s is None else bisect.bisect_left([p.t_s for p in pts], since_s)
            out.append(RankSeries(rank=r, node=f"n{r // 4}", points=pts[lo:]))
        return out
