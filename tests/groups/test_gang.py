"""Gang jobs with real daemons and real processes: agentctl submits the ranks of
examples/ring_trainer.py to several agentd on loopback (each its own node), the leader (rank 0's
daemon) starts them all at once, and group control acts on every rank."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.groups.gang_helpers import FAST, RING, Cluster, kernel_frozen
from tests.waiting import wait_for


def expected_allreduce(world: int, step_index: int, dim: int) -> list[float]:
    """What the ring sums at a step: each rank's whole-number gradient (examples/ring_trainer.py)."""
    return [float(sum(((r + 1) * (step_index + 1) + i) % 13 - 6 for r in range(world))) for i in range(dim)]


def _submit(c: Cluster, *args: str) -> str:
    out = c.ctl("submit", *args)
    assert out.returncode == 0, out.stderr
    gid = out.stdout.strip().splitlines()[0]
    assert gid.startswith(f"{c.daemons[0].node}.run-"), out.stdout
    return gid


def _state(c: Cluster, gid: str) -> str:
    row = c.group(gid)
    return row["state"] if row else ""


def _ring(tmp: Path, steps: int, *extra: str) -> list[str]:
    return ["--", sys.executable, str(RING), *FAST, "--steps", str(steps), "--out", str(tmp / "final-{rank}.json"), *extra]


def _check_allreduce(tmp: Path, world: int, steps: int) -> None:
    finals = [json.loads((tmp / f"final-{r}.json").read_text()) for r in range(world)]
    assert {f["weights_sha"] for f in finals} and len({f["weights_sha"] for f in finals}) == 1
    assert all(f["step"] == steps and f["last_allreduce"] == expected_allreduce(world, steps - 1, 37) for f in finals)


@pytest.mark.parametrize("nodes", [2, 4])
def test_gang_starts_together_and_allreduces(make_cluster, tmp_path, nodes):
    names = [f"g{i}" for i in range(nodes)]
    c = make_cluster(names)
    gid = _submit(c, "--nodes", ",".join(names), "--gpus-per-rank", "1", "--name", "ring", *_ring(tmp_path, 12))
    wait_for(lambda: _state(c, gid) == "succeeded", 180, f"group {gid} to succeed ({c.group(gid)})")
    row = c.group(gid)
    assert row["ranks"] == row["world_size"] == nodes and row["nodes"] == names
    ranks = sorted(row["rank_jobs"], key=lambda r: r["rank"])
    assert [r["node"] for r in ranks] == names and all(len(r["gpus"]) == 1 for r in ranks)
    _check_allreduce(tmp_path, nodes, 12)


def _ranks(c: Cluster, gid: str) -> list[dict]:
    row = c.group(gid)
    return sorted(row["rank_jobs"], key=lambda r: r["rank"]) if row else []


def test_busy_node_holds_the_whole_group_queued_with_the_reason(make_cluster, tmp_path):
    c = make_cluster(["h0", "h1"], gpus=1)
    blocker = c.ctl_json("submit", "--node", "h1", "--gpus", "1", "--", "sleep", "600")["id"]
    gid = _submit(c, "--nodes", "h0,h1", "--gpus-per-rank", "1", *_ring(tmp_path, 6))

    def held() -> bool:
        r = c.group(gid)
        return bool(r) and r["state"] == "queued" and "waiting for node h1" in r["reason"]
    wait_for(held, 60, f"group {gid} to be held with node h1's reason ({c.group(gid)})")
    assert "needs 1 GPUs, 0 free" in c.group(gid)["reason"]
    ranks = _ranks(c, gid)
    # never half a group: rank 0 fits on h0 but neither starts nor keeps h0's GPU between rounds
    assert [r["state"] for r in ranks] == ["queued", "queued"] and all(not r["pid"] for r in ranks)
    assert all(f"gang {gid}: waiting for node h1" in r["reason"] for r in ranks), ranks
    assert c.ctl("cancel", blocker, "--grace", "0").returncode == 0
    wait_for(lambda: _state(c, gid) == "succeeded", 120, f"group {gid} to start and succeed once h1 is free")
    _check_allreduce(tmp_path, 2, 6)


def test_two_groups_wanting_the_same_gpus_in_opposite_order_both_run(make_cluster, tmp_path):
    """Each group's leader is a different node, and each needs both nodes' only GPU: the classic
    half-and-half deadlock if a node held its GPU for a group that has not started."""
    c = make_cluster(["d0", "d1"], gpus=1)
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    gx = _submit(c, "--nodes", "d0,d1", "--gpus-per-rank", "1", *_ring(tmp_path / "x", 8))
    cy = Cluster.__new__(Cluster)  # the same daemons, nodes listed the other way round
    cy.tmp, cy.daemons, cy.file = tmp_path, list(reversed(c.daemons)), c.file
    out = cy.ctl("submit", "--nodes", "d1,d0", "--gpus-per-rank", "1", *_ring(tmp_path / "y", 8))
    assert out.returncode == 0, out.stderr
    gy = out.stdout.split()[0]
    assert gy.startswith("d1.run-")
    wait_for(lambda: _state(c, gx) == "succeeded" and _state(c, gy) == "succeeded", 180,
             f"both groups to run to the end ({c.group(gx)}, {c.group(gy)})")
    _check_allreduce(tmp_path / "x", 2, 8)
    _check_allreduce(tmp_path / "y", 2, 8)


def test_group_pause_freezes_every_rank_and_reports_the_skew(make_cluster, tmp_path):
    c = make_cluster(["p0", "p1", "p2"])
    gid = _submit(c, "--nodes", "p0,p1,p2", *_ring(tmp_path, 100000))
    wait_for(lambda: _state(c, gid) == "running" and all(r["pid"] for r in _ranks(c, gid)), 60, "the ranks to run")
    paused = c.ctl_json("pause", gid)
    assert paused["state"] == "paused" and len(paused["done_wall_s"]) == 3, paused
    assert 0 <= paused["skew_s"] < 5.0  # measured and reported; the number itself is in the report
    print(f"group pause skew over 3 ranks: {paused['skew_s'] * 1000:.1f} ms")
    for r in _ranks(c, gid):
        assert r["state"] == "paused" and kernel_frozen(r["pid"]), r
    human = c.ctl("pause", gid)  # already paused: a no-op that still answers for the group
    assert human.returncode == 0 and gid in human.stdout
    resumed = c.ctl_json("resume", gid)
    assert resumed["state"] == "running"
    assert all(not kernel_frozen(r["pid"]) for r in _ranks(c, gid))
    cancelled = c.ctl_json("cancel", gid, "--grace", "1")
    assert cancelled["action"] == "cancel"
    wait_for(lambda: _state(c, gid) == "cancelled", 60, f"group {gid} to end cancelled")


def test_a_failed_rank_cancels_the_others_and_fails_the_group_naming_it(make_cluster, tmp_path):
    """The ranks sleep: nothing but the group's policy can end the others (a ring would notice
    the lost peer itself)."""
    c = make_cluster(["f0", "f1", "f2"])
    gid = _submit(c, "--nodes", "f0,f1,f2", "--", "sleep", "600")
    wait_for(lambda: _state(c, gid) == "running" and all(r["pid"] for r in _ranks(c, gid)), 60, "the ranks to run")
    victim = _ranks(c, gid)[1]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_for(lambda: _state(c, gid) == "failed" and all(r["state"] in ("failed", "cancelled") for r in _ranks(c, gid)),
             60, f"group {gid} to fail and its other ranks to end ({c.group(gid)})")
    row = c.group(gid)
    assert row["reason"].startswith(f"rank 1 ({victim['id']}) failed"), row["reason"]
    states = {r["rank"]: r["state"] for r in _ranks(c, gid)}
    assert states[1] == "failed" and states[0] == states[2] == "cancelled", states
    others = [r for r in _ranks(c, gid) if r["rank"] != 1]
    assert all(f"group {gid} failed: rank 1 ({victim['id']})" in r["reason"] for r in others), others
    shown = c.ctl("show", gid)
    assert shown.returncode == 0 and "failed" in shown.stdout and victim["id"] in shown.stdout
