"""agentctl against a real agentd: verbs, global options on either side, exit codes, JSON."""

import json
import os
import subprocess
import sys
import time

from tests.agentd_proc import REPO, free_port


def agentctl(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "agentd.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


def wait_state(node, job_id, state, timeout_s=15):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = agentctl("--node", node.ctl, "--json", "show", job_id)
        if r.returncode == 0 and json.loads(r.stdout)["state"] == state:
            return json.loads(r.stdout)
        time.sleep(0.2)
    raise AssertionError(f"{job_id} did not reach {state}: {r.stdout} {r.stderr}")


def test_nodes_json_either_side_of_the_verb(agentd):
    before = agentctl("--json", "--node", agentd.ctl, "nodes")
    after = agentctl("nodes", "--node", agentd.ctl, "--json")
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    for out in (before, after):
        (row,) = json.loads(out.stdout)
        assert row["name"] == "n1" and row["endpoint"] == agentd.ctl
        assert row["cpu_count"] == os.cpu_count() and row["memory_total_bytes"] > 0
        assert row["gpu_status"] == "simulated" and len(row["gpus"]) == 2


def test_watch_json_prints_one_object_per_tick(agentd):
    r = agentctl("--node", agentd.ctl, "watch", "--json", "--count", "3")
    assert r.returncode == 0, r.stderr
    everything = [json.loads(line) for line in r.stdout.splitlines()]
    assert {d["type"] for d in everything} <= {"sample", "job", "event", "link"}
    lines = [d for d in everything if d["type"] == "sample"]
    assert len(lines) >= 3
    assert all(line["node"] == "n1" and "ts" in line and "cpu_pct" in line for line in lines)
    assert [line["ts"] for line in lines] == sorted(line["ts"] for line in lines)


def test_job_lifecycle_through_the_cli(agentd):
    r = agentctl("--node", agentd.ctl, "submit", "--json", "--name", "spin", "--priority", "-3", "--",
                 sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)")
    assert r.returncode == 0, r.stderr
    sub = json.loads(r.stdout)
    assert sub["node"] == "n1" and sub["id"].startswith("n1.")
    job = wait_state(agentd, sub["id"], "running")
    assert job["priority"] == -3 and job["pid"] and job["pids"]
    # Negative numbers are values, not options; a bare number is a shorthand with one node.
    bare = sub["id"].split(".")[1]
    r = agentctl("priority", bare, "-5", "--node", agentd.ctl, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["priority"] == -5
    assert agentctl("--node", agentd.ctl, "pause", sub["id"]).returncode == 0
    assert wait_state(agentd, sub["id"], "paused")
    # Pausing a paused job is a no-op, not an error.
    assert agentctl("--node", agentd.ctl, "pause", sub["id"]).returncode == 0
    r = agentctl("--node", agentd.ctl, "--json", "jobs")
    listed = {j["id"]: j for j in json.loads(r.stdout)}
    for key in ("id", "name", "node", "state", "priority", "pid", "pids", "gpus", "cgroup", "exit_code", "started", "metrics"):
        assert key in listed[sub["id"]], key
    assert agentctl("--node", agentd.ctl, "resume", sub["id"]).returncode == 0
    assert agentctl("--node", agentd.ctl, "cancel", "--grace", "1", sub["id"]).returncode == 0
    wait_state(agentd, sub["id"], "cancelled")
    # Refused actions exit 1 with a reason.
    r = agentctl("--node", agentd.ctl, "resume", sub["id"])
    assert r.returncode == 1 and r.stderr.startswith("agentctl: ") and "Traceback" not in r.stderr


def test_refusals_and_usage_errors_have_the_documented_exit_codes(agentd, tmp_path):
    r = agentctl("--node", agentd.ctl, "show", "n1.999")
    assert r.returncode == 1 and "n1.999" in r.stderr
    r = agentctl("--node", agentd.ctl, "submit", "--gpus", "9", "--", "true")
    assert r.returncode == 1 and "gpus" in r.stderr.lower()
    r = agentctl("--node", agentd.ctl, "submit", "--", "/no/such/program")
    assert r.returncode == 1 and "/no/such/program" in r.stderr
    r = agentctl("--node", agentd.ctl, "submit", "--memory", "lots", "--", "true")
    assert r.returncode == 2 and "--memory" in r.stderr
    r = agentctl("--node", agentd.ctl, "pause", "not-a-job-id")
    assert r.returncode == 2
    r = agentctl("frobnicate")
    assert r.returncode == 2
    bad = tmp_path / "cluster.toml"
    bad.write_text("[[node]]\nname = 'a'\n")
    r = agentctl("--cluster", str(bad), "nodes")
    assert r.returncode == 2 and "endpoint" in r.stderr and "Traceback" not in r.stderr


def test_unreachable_node_is_exit_2_after_the_timeout():
    start = time.monotonic()
    r = agentctl("--node", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.5", "nodes")
    assert r.returncode == 2
    assert "did not answer within 0.5 s" in r.stderr and "Traceback" not in r.stderr
    assert time.monotonic() - start < 15
    r = agentctl("--node", "not-an-endpoint", "jobs")
    assert r.returncode == 2 and "tcp://HOST:PORT" in r.stderr


def test_cluster_file_finds_the_node_that_owns_a_job(agentd_factory, tmp_path):
    a = agentd_factory("alpha", simulate_gpus=0)
    b = agentd_factory("beta", simulate_gpus=0)
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(f'[[node]]\nname = "alpha"\nendpoint = "{a.ctl}"\n\n[[node]]\nname = "beta"\nendpoint = "{b.ctl}"\n')
    r = agentctl("--node", b.ctl, "submit", "--json", "--", sys.executable, "-c", "import time; time.sleep(60)")
    job_id = json.loads(r.stdout)["id"]
    assert job_id.startswith("beta.")
    r = agentctl("--cluster", str(cluster), "--json", "show", job_id)
    assert r.returncode == 0 and json.loads(r.stdout)["node"] == "beta"
    r = agentctl("--cluster", str(cluster), "--json", "jobs")
    assert job_id in {j["id"] for j in json.loads(r.stdout)}
    r = agentctl("--cluster", str(cluster), "nodes", "--json")
    assert {n["name"] for n in json.loads(r.stdout)} == {"alpha", "beta"}


def test_every_verb_has_help():
    from agentd.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    for verb in sub.choices:
        r = agentctl(verb, "--help")
        assert r.returncode == 0 and "usage: agentctl" in r.stdout, verb


def test_migrate_follows_progress_until_the_job_runs_on_the_target(agentd_factory):
    a = agentd_factory("src", simulate_gpus=0)
    b = agentd_factory("dst", simulate_gpus=0)
    trainer = str(REPO / "examples" / "trainer.py")
    r = agentctl("--node", a.ctl, "submit", "--json", "--name", "t", "--checkpoint-signal", "SIGUSR1", "--counter", "samples",
                 "--", sys.executable, trainer, "--steps", "100000", "--step-time", "0.05")
    job_id = json.loads(r.stdout)["id"]
    wait_state(a, job_id, "running")
    time.sleep(1.0)
    r = agentctl("--node", a.ctl, "migrate", job_id, "--to", b.ctl, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "now runs as dst." in r.stdout
    new_id = r.stdout.strip().rsplit(" ", 1)[1]
    assert wait_state(b, new_id, "running")["resumed_from"] == job_id
    assert json.loads(agentctl("--node", a.ctl, "--json", "show", job_id).stdout)["state"] == "migrated"

    # A job without a checkpoint contract is refused, with the way out named.
    r = agentctl("--node", a.ctl, "submit", "--json", "--", sys.executable, "-c", "import time; time.sleep(60)")
    plain = json.loads(r.stdout)["id"]
    wait_state(a, plain, "running")
    r = agentctl("--node", a.ctl, "migrate", plain, "--to", b.ctl, timeout=120)
    assert r.returncode == 1 and "--restart" in r.stderr, r.stderr
    assert json.loads(agentctl("--node", a.ctl, "--json", "show", plain).stdout)["state"] == "running"
