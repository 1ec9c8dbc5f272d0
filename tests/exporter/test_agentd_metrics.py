"""agentd --metrics-listen: /metrics from the running daemon, its jobs included."""

import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from agentd.protocol import JobSpec
from agentd.protocol.messages import Submit
from tests.agentd_proc import free_port, start_agentd


def scrape(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return {s.name: s for f in text_string_to_metric_families(r.read().decode()) for s in f.samples}, r


def test_running_daemon_serves_node_gpu_and_job_metrics(tmp_path):
    port = free_port()
    node = start_agentd(tmp_path, node="prom", simulate_gpus=2, extra=["--metrics-listen", f"127.0.0.1:{port}"])
    try:
        with node.client() as c:
            assert "prometheus" in c.hello().capabilities
            job = c.call(Submit(spec=JobSpec(argv=[sys.executable, "-c", "while True: pass"], name="burn"))).job
        deadline = time.monotonic() + 15
        while True:
            samples, _ = scrape(f"http://127.0.0.1:{port}/metrics")
            text = " ".join(samples)
            if "fleetdeck_gpu_utilization_ratio" in text and "fleetdeck_job_state" in samples:
                break
            assert time.monotonic() < deadline, sorted(samples)[:40]
            time.sleep(0.5)
        gpu = [s for n, s in samples.items() if n == "fleetdeck_gpu_utilization_ratio"]
        assert gpu and 0.0 <= gpu[0].value <= 1.0 and gpu[0].labels["node"] == "prom"
        assert gpu[0].labels["simulated"] == "true"  # --simulate-gpus: a simulated GPU says so
        assert samples["fleetdeck_job_state"].labels["job_id"] == job.id
    finally:
        node.stop()


def test_metrics_listen_on_another_host_is_refused(tmp_path):
    import subprocess

    from tests.agentd_proc import REPO

    r = subprocess.run([sys.executable, "-m", "agentd.daemon", "--state-dir", str(tmp_path / "s"), "--ctl", f"tcp://127.0.0.1:{free_port()}",
                        "--pub", f"tcp://127.0.0.1:{free_port()}", "--metrics-listen", "0.0.0.0:9810"],
                       capture_output=True, text=True, timeout=30, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "--metrics-listen" in r.stderr and "Traceback" not in r.stderr


def test_a_job_printing_many_metric_names_is_bounded_and_counted(tmp_path):
    """A job printing 100 distinct AGENTD_METRIC names gets 64 series, and the refusal is counted
    in fleetdeck_job_metric_names_refused_total (docs/metrics.md documents both)."""
    from pathlib import Path

    from agentd.protocol.limits import MAX_METRIC_NAME_CHARS, MAX_METRICS_PER_JOB

    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    assert f"| {MAX_METRICS_PER_JOB} (`MAX_METRICS_PER_JOB`)" in doc and f"{MAX_METRIC_NAME_CHARS} characters" in doc
    port = free_port()
    node = start_agentd(tmp_path, node="card", simulate_gpus=0, extra=["--metrics-listen", f"127.0.0.1:{port}"])
    code = ("import time\n"
            "for r in range(600):\n"
            "    print('AGENTD_METRIC ' + ' '.join(f'rnd_{r}_{i}={i}' for i in range(10)), flush=True)\n"
            "    time.sleep(0.01)\n"
            "time.sleep(120)\n")
    try:
        with node.client() as c:
            job = c.call(Submit(spec=JobSpec(argv=[sys.executable, "-c", code], name="noisy"))).job
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                fams = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
            names = {s.labels["metric"] for s in fams["fleetdeck_job_app_value"].samples if s.labels["job_id"] == job.id}
            refused = fams["fleetdeck_job_metric_names_refused"].samples[0].value
            if refused > 0 and len(names) == MAX_METRICS_PER_JOB:
                break
            assert time.monotonic() < deadline, (len(names), refused)
            time.sleep(0.5)
        assert "more than 64 metric names" in (node.state_dir / "agentd.log").read_text() + node.stderr()
    finally:
        node.stop()
