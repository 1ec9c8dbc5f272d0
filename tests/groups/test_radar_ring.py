"""The radar on a real 4-rank ring (examples/ring_trainer.py) with one rank 1.3x slower: it is named.

The radar is fed as the daemon will feed it: each rank's reported metrics (its ``AGENTD_METRIC``
lines, parsed by the daemon's own parser) and its CPU time, observed on one clock.
"""

from __future__ import annotations

import time

import psutil
import pytest

from agentd.control.reports import parse_line
from agentd.groups.radar import RankPoint, RankSeries, analyse
from tests.examples.ring_helpers import start_ring

pytestmark = pytest.mark.slow
SLOW_RANK = 2


def test_the_radar_names_the_slow_rank_of_a_real_ring(tmp_path):
    ring = start_ring(4, ["--steps", "100000", "--compute-ms", "40", "--slow-rank", str(SLOW_RANK),
                          "--slow-factor", "1.3"], tmp_path / "logs")
    points: list[list[RankPoint]] = [[] for _ in range(4)]
    read_upto = [0] * 4
    procs = [psutil.Process(p.pid) for p in ring.procs]
    verdicts = []
    others_flagged: list[object] = []
    try:
        deadline = time.monotonic() + 240  # generous: the window alone is 30 s, the host is shared
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = time.monotonic()
            for r in range(4):
                assert ring.procs[r].poll() is None, ring.err(r)
                text = ring.out(r)
                cut = text.rfind("\n") + 1
                new, read_upto[r] = text[read_upto[r]:cut], max(read_upto[r], cut)
                cpu = procs[r].cpu_times()
                for line in new.splitlines():
                    msg = parse_line(line)
                    if msg is None or msg.get("t") != "metric":
                        continue
                    v = msg["values"]
                    points[r].append(RankPoint(t_s=now, step=int(v["step"]), step_compute_s=v["step_compute_s"],
                                               step_wait_s=v["step_wait_s"], cpu_s=cpu.user + cpu.system))
            series = [RankSeries(rank=r, node="localhost", points=points[r]) for r in range(4)]
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
