"""examples/ring_trainer.py: a real 4-rank ring on loopback (plain subprocesses, torchrun's env)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.control.control_helpers import wait_for
from tests.examples.ring_helpers import RING, last_step, start_ring

FAST = ["--work-units", "20", "--dim", "37"]


def expected_allreduce(world: int, step_index: int, dim: int) -> list[float]:
    """What the ring must sum: each rank's whole-number gradient of that step (examples/ring_trainer.py)."""
    return [float(sum(((r + 1) * (step_index + 1) + i) % 13 - 6 for r in range(world))) for i in range(dim)]


@pytest.fixture
def rings():
    started = []
    yield started
    for ring in started:
        ring.kill()


def test_help_runs():
    out = subprocess.run([sys.executable, str(RING), "--help"], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0 and "--slow-factor" in out.stdout


def test_missing_env_is_a_one_line_error():
    out = subprocess.run([sys.executable, str(RING)], capture_output=True, text=True, timeout=30, check=False,
                         env={"PATH": os.environ["PATH"], "WORLD_SIZE": "2", "RANK": "1"})
    assert out.returncode != 0 and "MASTER_PORT is not set" in out.stderr and "Traceback" not in out.stderr


def test_four_ranks_agree_on_the_allreduce(tmp_path, rings):
    ring = start_ring(4, [*FAST, "--steps", "12", "--out", "final-{rank}.json"], tmp_path / "logs")
    rings.append(ring)
    assert ring.wait_all(120) == [0, 0, 0, 0], [ring.err(r) for r in range(4)]
    finals = [json.loads((tmp_path / "logs" / f"final-{r}.json").read_text()) for r in range(4)]
    outs = [ring.out(r) for r in range(4)]
    assert all("done" in o and "step=12" in o for o in outs)
    digests = {o.split("weights=")[1].split()[0] for o in outs}
    assert len(digests) == 1, outs
    assert all(f["last_allreduce"] == expected_allreduce(4, 11, 37) for f in finals)
    assert all("AGENTD_METRIC step=12 step_compute_s=" in o for o in outs)


def test_a_killed_rank_is_named_by_every_other_rank(tmp_path, rings):
    ring = start_ring(4, [*FAST, "--steps", "1000000", "--peer-timeout", "120"], tmp_path / "logs")
    rings.append(ring)
    wait_for(lambda: all(last_step(ring.out(r)) >= 3 for r in range(4)), 120, "every rank to pass step 3")
    os.kill(ring.procs[2].pid, signal.SIGKILL)
    ring.procs[2].wait()
    codes = ring.wait_all(60)  # EOF, not the 120 s peer timeout: well inside the deadline
    for r in (0, 1, 3):
        assert codes[r] == 3, (r, ring.err(r))
        assert "lost peer rank 2" in ring.err(r) and "Traceback" not in ring.err(r), ring.err(r)


def test_a_hung_rank_is_named_after_the_peer_timeout(tmp_path, rings):
    ring = start_ring(4, [*FAST, "--steps", "1000000", "--hang-rank", "1", "--hang-at-step", "4",
                          "--hang-mode", "sleep", "--peer-timeout", "3"], tmp_path / "logs")
    rings.append(ring)
    wait_for(lambda: "hanging at step 4" in ring.out(1), 120, "rank 1 to hang")
    for r in (0, 2, 3):  # the waiting ranks heartbeat each other, so only rank 1's silence counts
        assert ring.procs[r].wait(timeout=90) == 3, ring.err(r)
        assert "lost peer rank 1" in ring.err(r), ring.err(r)
    assert ring.procs[1].poll() is None  # it hangs: the test's cleanup kills it


def test_resume_continues_at_the_saved_step(tmp_path, rings):
    args = ["--work-units", "40", "--dim", "16", "--steps", "300", "--checkpoint-every", "50"]
    straight = start_ring(3, args, tmp_path / "straight")
    rings.append(straight)
    assert straight.wait_all(180) == [0, 0, 0]
    want = straight.out(0).split("weights=")[1].split()[0]

    ckpt = tmp_path / "ckpt"
    first = start_ring(3, [*args, "--checkpoint-dir", str(ckpt)], tmp_path / "first")
    rings.append(first)
    wait_for(lambda: last_step(first.out(1)) >= 10, 120, "rank 1 to pass step 10")
    os.kill(first.procs[1].pid, signal.SIGUSR1)  # one rank asked: every rank stops after the same step
    assert first.wait_all(120) == [0, 0, 0], [first.err(r) for r in range(3)]
    stopped = {first.out(r).split("checkpoint at step ")[1].split(",")[0] for r in range(3)}
    assert len(stopped) == 1, stopped
    saved = int(stopped.pop())
    assert 10 <= saved < 300 and not list(ckpt.glob("*.tmp"))

    second = start_ring(3, [*args, "--checkpoint-dir", str(ckpt)], tmp_path / "second")
    rings.append(second)
    assert second.wait_all(180) == [0, 0, 0], [second.err(r) for r in range(3)]
    for r in range(3):
        out = second.out(r)
        assert f"resumed from step {saved}" in out
        first_step = next(int(p.split("=")[1]) for line in out.splitlines() if line.startswith("AGENTD_METRIC")
                          for p in line.split() if p.startswith("step="))
        assert first_step == saved + 1
        assert f"weights={want}" in out  # bit-identical to the run that was never stopped


def test_a_rank_that_never_registers_is_named_after_the_rendezvous_timeout(tmp_path, rings):
    ring = start_ring(1, [*FAST, "--rendezvous-timeout", "2"], tmp_path / "logs",
                      env={"WORLD_SIZE": "3"})  # rank 0 of 3, ranks 1 and 2 never come
    rings.append(ring)
    assert ring.wait_all(60) == [1]
    assert "ranks [1, 2] never registered" in ring.err(0) and "Traceback" not in ring.err(0)
