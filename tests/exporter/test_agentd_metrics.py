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
