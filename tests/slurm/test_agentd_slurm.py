"""A Slurm job seen and controlled end to end: agentd --slurm on, driven by agentctl."""

import json
import os
import subprocess
import sys
import time

from tests.agentd_proc import REPO, start_agentd


def agentctl(node, *args):
    r = subprocess.run([sys.executable, "-m", "agentd.cli", "--node", node.ctl, "--timeout", "20", *args],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    return r


def proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_slurm_job_is_listed_and_suspended_through_agentctl(slurm_cluster, tmp_path):
    node = start_agentd(tmp_path, node=slurm_cluster.node, simulate_gpus=0, extra=["--slurm", "on"], env=slurm_cluster.env)
    sid = slurm_cluster.sbatch("-J", "e2e", script="sleep 300")
    try:
        slurm_cluster.wait_state(sid, "RUNNING")
        job_id = f"{slurm_cluster.node}.slurm-{sid}"
        deadline = time.monotonic() + 20
        while True:
            jobs = {j["id"]: j for j in json.loads(agentctl(node, "--json", "jobs").stdout)}
            if job_id in jobs and jobs[job_id]["pids"]:
                break
            assert time.monotonic() < deadline, f"{job_id} not listed with pids: {jobs}"
            time.sleep(0.5)
        job = jobs[job_id]
        assert job["backend"] == "slurm" and job["state"] == "running" and job["name"] == "e2e"
        r = agentctl(node, "pause", job_id)
        assert r.returncode == 0, r.stderr
        assert slurm_cluster.state(sid) == "SUSPENDED"
        deadline = time.monotonic() + 10
        while not all(proc_state(p) in ("T", None) for p in job["pids"]):
            assert time.monotonic() < deadline, "Slurm job processes did not stop after suspend"
            time.sleep(0.2)
        r = agentctl(node, "--json", "show", job_id)
        assert json.loads(r.stdout)["state"] == "paused"
        assert agentctl(node, "resume", job_id).returncode == 0
        assert slurm_cluster.wait_state(sid, "RUNNING") == "RUNNING"
        assert agentctl(node, "cancel", job_id).returncode == 0
        slurm_cluster.wait_state(sid, "CANCELLED", "GONE")
    finally:
        slurm_cluster.cancel_all()
        node.stop(cancel_jobs=False)
