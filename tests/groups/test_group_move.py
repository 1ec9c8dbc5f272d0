"""Moving a whole group (``agentctl migrate GROUP --nodes``) with real daemons and real ranks:
every rank checkpoints, moves and resumes from its checkpoint on the new node set, the new
leader starts them together, there are never two copies of a rank, and the run ends with the
same all-reduce as a run that never moved."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import psutil

from tests.groups.gang_helpers import RING
from tests.groups.test_gang import _check_allreduce, _ring, _state, _submit
from tests.waiting import wait_for

STEPS = 1500


def _rank_processes(tmp: Path) -> int:
    """ring_trainer processes of this test (their --out names the test's directory)."""
    n = 0
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if str(RING) in cmd and any(str(tmp) in a for a in cmd) and p.info["status"] != psutil.STATUS_ZOMBIE:
            n += 1
    return n


def test_a_group_moves_to_new_nodes_and_resumes_from_its_checkpoints(make_cluster, tmp_path):
    c = make_cluster(["g0", "g1", "g2", "g3"], gpus=1)
    gid = _submit(c, "--nodes", "g0,g1", "--gpus-per-rank", "1", "--name", "ring", "--checkpoint-signal", "SIGUSR1",
                  *_ring(tmp_path, STEPS, "--checkpoint-every", "1000"))
    wait_for(lambda: _state(c, gid) == "running", 60, f"group {gid} to run")
    most = [0]
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            most[0] = max(most[0], _rank_processes(tmp_path))
            watching.wait(0.01)

    t = threading.Thread(target=watch)
    t.start()
    try:
        out = c.ctl("--json", "migrate", gid, "--nodes", "g2,g3", timeout=180)
    finally:
        watching.set()
        t.join()
    assert out.returncode == 0, out.stderr
    moved = json.loads(out.stdout)
    assert moved["moved"] == moved["ranks"] == 2 and moved["errors"] == []
    assert sorted((p["rank"], p["node"]) for p in moved["placements"]) == [(0, "g2"), (1, "g3")]
    assert most[0] <= 2, f"{most[0]} rank processes at once: a rank ran twice"
    row = c.group(gid)
    assert row is not None and row["nodes"] == ["g2", "g3"], row
    ranks = sorted(row["rank_jobs"], key=lambda r: r["rank"])
    assert [r["node"] for r in ranks] == ["g2", "g3"]
    assert all(r["resumed_from"] and r["resumed_from"].startswith(("g0.", "g1.")) for r in ranks), ranks
    wait_for(lambda: _state(c, gid) == "succeeded", 180, f"group {gid} to finish on its new nodes ({c.group(gid)})")
    # Resumed, not restarted: each new rank says where it picked up (the stop step all agreed on).
    for r in ranks:
        log = c.ctl("logs", r["id"]).stdout
        assert "resumed from step" in log, log[-500:]
    _check_allreduce(tmp_path, 2, STEPS)
    # The group id still finds it; the old nodes show their ranks as moved on.
    shown = c.ctl_json("show", gid)
    assert [j["node"] for j in sorted(shown["rank_jobs"], key=lambda j: j["rank"])] == ["g2", "g3"]


def test_a_move_that_names_the_wrong_number_of_nodes_is_refused_and_nothing_stops(make_cluster, tmp_path):
    c = make_cluster(["g0", "g1", "g2"], gpus=1)
    gid = _submit(c, "--nodes", "g0,g1", "--gpus-per-rank", "1", "--checkpoint-signal", "SIGUSR1",
                  *_ring(tmp_path, 100_000))
    wait_for(lambda: _state(c, gid) == "running", 60, f"group {gid} to run")
    out = c.ctl("migrate", gid, "--nodes", "g2")
    assert out.returncode == 1 and "runs on 2 node(s)" in out.stderr, out.stderr
    assert _state(c, gid) == "running"
    out = c.ctl("migrate", gid, "--to", "g2")
    assert out.returncode == 2 and "--nodes" in out.stderr
    c.ctl("cancel", gid)
