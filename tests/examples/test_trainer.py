"""examples/trainer.py: reports metrics under agentd, checkpoints on signal, resumes bit-identically."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from agentd.control.manager import JobManager
from agentd.protocol import JobSpec
from tests.control.control_helpers import cleanup_manager, node_name, wait_for

TRAINER = Path(__file__).resolve().parents[2] / "examples" / "trainer.py"
ARGS = ["--steps", "300", "--step-time", "0.002", "--dim", "16"]


def test_help_runs():
    out = subprocess.run([sys.executable, str(TRAINER), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--checkpoint-mb" in out.stdout


def test_checkpoint_and_resume_match_an_uninterrupted_run(tmp_path):
    subprocess.run([sys.executable, str(TRAINER), *ARGS, "--out", str(tmp_path / "straight.npy")],
                   check=True, timeout=60, capture_output=True, env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    ckpt = tmp_path / "ckpt"
    env = {"PATH": "/usr/bin:/bin", "AGENTD_CHECKPOINT_DIR": str(ckpt), "AGENTD_CHECKPOINT_SIGNAL": "SIGUSR2"}
    p = subprocess.Popen([sys.executable, str(TRAINER), *ARGS, "--checkpoint-mb", "2"], env=env,
                         stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert p.stdout.readline().startswith("step 100")
        p.send_signal(signal.SIGUSR2)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
    assert p.returncode == 0 and "checkpoint at step" in out
    saved = ckpt / "trainer-checkpoint.npz"
    assert saved.stat().st_size >= 2 << 20
    assert not list(ckpt.glob("*.tmp"))
    resumed = subprocess.run([sys.executable, str(TRAINER), *ARGS, "--out", str(tmp_path / "resumed.npy")],
                             env={**env, "AGENTD_RESUME": "1"}, check=True, timeout=60, capture_output=True,
                             text=True, cwd=tmp_path)
    assert "resumed from step" in resumed.stdout and "done step=300" in resumed.stdout
    assert np.array_equal(np.load(tmp_path / "straight.npy"), np.load(tmp_path / "resumed.npy"))


def test_trainer_under_agentd_reports_metrics(tmp_path):
    m = JobManager(node_name(), tmp_path / "state", 0, on_event=lambda e: None, on_job=lambda j: None)
    m.start()
    try:
        job = m.submit(JobSpec(argv=[sys.executable, str(TRAINER), "--steps", "100000", "--step-time", "0.01"],
                               counters=["samples"]))

        def has_metrics():
            m.tick()
            return {"step", "loss", "samples"} <= m.get(job.id).metrics.keys()

        wait_for(has_metrics, 20, "trainer metrics")
        s0 = m.get(job.id).metrics["samples"]
        time.sleep(0.3)
        wait_for(lambda: (m.tick(), m.get(job.id).metrics["samples"] > s0)[1], 10, "samples to grow")
        counters = {a.name for a in m.app_metrics() if a.counter}
        assert counters == {"samples"}
    finally:
        cleanup_manager(m)
