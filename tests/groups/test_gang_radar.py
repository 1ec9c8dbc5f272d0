"""The gang path and the radar together: a group submitted with `agentctl submit --nodes` (no
hand-made labels) is watched by its leader, and `agentctl health GROUP` names the slow rank."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.groups.gang_helpers import RING, Cluster
from tests.groups.test_radar_live import RADAR_TOML
from tests.waiting import wait_for

pytestmark = [pytest.mark.procs, pytest.mark.slow]


def test_health_of_a_gang_names_its_slow_rank(tmp_path: Path) -> None:
    cfg = tmp_path / "agentd.toml"
    cfg.write_text(RADAR_TOML)
    c = Cluster(tmp_path, ["ra", "rb"], gpus=2, extra=["--config", str(cfg)])
    gid = ""
    try:
        out = c.ctl("submit", "--nodes", "ra,rb", "--ranks-per-node", "2", "--gpus-per-rank", "1", "--name", "ring",
                    "--", sys.executable, str(RING), "--steps", "100000", "--compute-ms", "40",
                    "--slow-rank", "2", "--slow-factor", "1.3")
        assert out.returncode == 0, out.stderr
        gid = out.stdout.strip().splitlines()[0]

        def verdicts() -> dict[int, str]:
            done = c.ctl("--json", "health", gid)
            if done.returncode != 0:
                return {}
            return {int(r["rank"]): str(r["status"]) for r in json.loads(done.stdout)}

        seen = wait_for(lambda: (v := verdicts()).get(2) == "straggler" and v, timeout_s=150,
                        what=f"agentctl health {gid} naming rank 2", poll_s=2.0)
        assert all(status in ("ok", "waiting") for rank, status in seen.items() if rank != 2), seen
    finally:
        if gid:
            c.ctl("cancel", gid)
        c.close()
