"""A real Prometheus server scrapes a real agentd: jobs are found by `job_id`, and Prometheus's
own `job` label (the scrape job) stays what the scrape config says, with no `exported_job`."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from agentd.protocol import JobSpec
from agentd.protocol.messages import Submit
from tests.agentd_proc import free_port, start_agentd

pytestmark = pytest.mark.timeout(180)


def _prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        msg = "PROMETHEUS MISSING: apt-get install prometheus (or `make system-deps`) to run the real-server check"
        print(f"\n{'!' * 70}\n{msg}\n{'!' * 70}", file=sys.stderr)
        pytest.skip(msg)
    return path


def _query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def _wait_for(port: int, promql: str, what: str, prom: subprocess.Popen, log: Path, timeout_s: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        assert prom.poll() is None, f"prometheus exited with {prom.returncode}: {log.read_text()[-3000:]}"
        try:
            result = _query(port, promql)
            if result:
                return result
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet
        assert time.monotonic() < deadline, f"{what}: Prometheus returned nothing for {promql} in {timeout_s} s"
        time.sleep(0.5)


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus on loopback scraping the given /metrics port every second; stop it by pid."""
    binary = _prometheus_binary()
    procs: list[subprocess.Popen] = []

    def start(target_port: int) -> tuple[int, subprocess.Popen, Path]:
        port = free_port()
        conf = tmp_path / "prometheus.yml"
        conf.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: fleetdeck
    scrape_interval: 1s
    scrape_timeout: 900ms
    static_configs:
      - targets: ["127.0.0.1:{target_port}"]
""")
        log = tmp_path / "prometheus.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([binary, f"--config.file={conf}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                     f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                    stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
        procs.append(proc)
        return port, proc, log

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_prometheus_finds_a_job_by_job_id_and_keeps_its_own_job_label(tmp_path, prometheus):
    metrics_port = free_port()
    node = start_agentd(tmp_path, node="promreal", simulate_gpus=1, interval=0.5,
                        extra=["--metrics-listen", f"127.0.0.1:{metrics_port}"])
    try:
        with node.client(timeout_s=10) as c:
            burn = c.call(Submit(spec=JobSpec(argv=[sys.executable, "-c", "import time; time.sleep(120)"], name="sleeper"))).job
            bad = c.call(Submit(spec=JobSpec(argv=[sys.executable, "-c", "import sys; sys.exit(3)"], name="doomed"))).job
        port, prom, log = prometheus(metrics_port)
        series = _wait_for(port, f'fleetdeck_job_state{{job_id="{burn.id}",state="running"}} == 1',
                           "the running job by job_id", prom, log)
        labels = series[0]["metric"]
        assert labels["job"] == "fleetdeck", labels  # Prometheus's scrape job, untouched
        assert "exported_job" not in labels, labels
        assert labels["name"] == "sleeper" and labels["node"] == "promreal", labels
        # Every job series carries job_id; nothing arrived renamed.
        assert _query(port, '{__name__=~"fleetdeck_.+", exported_job!=""}') == []
        # The job that failed at once is still there as failed (retention), and counted.
        failed = _wait_for(port, f'fleetdeck_job_state{{job_id="{bad.id}",state="failed"}} == 1',
                           "the failed job's state", prom, log)
        assert failed[0]["metric"]["name"] == "doomed"
        ends = _wait_for(port, 'fleetdeck_job_ends_total{result="failed"} >= 1', "the failed-end counter", prom, log)
        assert ends[0]["metric"]["node"] == "promreal"
        gpu = _wait_for(port, 'fleetdeck_gpu_utilization_ratio{simulated="true"}', "the simulated GPU", prom, log)
        assert len(gpu) == 1
    finally:
        node.stop()
