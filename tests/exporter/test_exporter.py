"""agentd's Prometheus exporter: real HTTP on loopback, real host readings, promtool's lint."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentd.exporter import MetricsExporter, render
from agentd.metrics import derive
from agentd.metrics.samples import AppMetric, CgroupSample, GpuProcess, GpuSample, NodeSample, Pressure
from agentd.protocol.jobs import JobInfo, JobSpec
from agentd.telemetry.host import HostReader

pytestmark = pytest.mark.timeout(120)


def _sample(reader: HostReader, step: int) -> NodeSample:
    """A real host reading plus a GPU and a job (the GPU stands in for hardware this host lacks)."""
    gpu = GpuSample(
        index=0, uuid="GPU-0f0e", sm_util_pct=87.0, mem_util_pct=40.0, mem_used_bytes=30 << 30, mem_total_bytes=80 << 30,
        power_mw=312_500, power_limit_mw=400_000, energy_mj=1_000_000 + 312 * step, temp_c=66.0, sm_clock_mhz=1980,
        mem_clock_mhz=2619, pcie_tx_bytes_per_s=1.5e9, pcie_rx_bytes_per_s=2e8, nvlink_tx_bytes=10 * step,
        nvlink_rx_bytes=20 * step, ecc_corrected_total=3, ecc_uncorrected_total=0, xid_total=0,
        processes=[GpuProcess(pid=4242, used_bytes=29 << 30)],
    )
    job = CgroupSample(
        job_id="n1.3", cpu_usage_us=5_000_000 + 900_000 * step, mem_current_bytes=2 << 30, mem_peak_bytes=3 << 30,
        mem_limit_bytes=8 << 30, io_read_bytes=4096 * step, pids_current=4, gpu_mem_bytes={0: 29 << 30},
        pressure={"cpu": Pressure(some_total_us=1000 * step)},
    )
    app = [AppMetric(job_id="n1.3", name="tokens", value=1000.0 * step, counter=True),
           AppMetric(job_id="n1.3", name="loss", value=2.5 - step / 1000, counter=False)]
    return NodeSample(node="n1", mono_s=float(step), wall_s=1.7e9 + step, host=reader.read(), gpus=[gpu],
                      jobs=[job], app=app, boot_id="b1")


JOBS = [
    JobInfo(id="n1.3", node="n1", name="train-3", state="running", spec=JobSpec(argv=["train"]), priority=2,
            gpus=[0], started_s=1.7e9),
    JobInfo(id="n1.slurm-7", node="n1", name="sweep", state="queued", spec=JobSpec(argv=["sweep.sh"]), backend="slurm"),
]


@pytest.fixture
def exporter():
    exp = MetricsExporter("n1", "127.0.0.1:0")
    exp.start()
    yield exp
    exp.stop()


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(fams: dict, family: str, sample_name: str | None = None, **labels: str) -> float:
    for s in fams[family].samples:
        if (sample_name is None or s.name == sample_name) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no {family} sample with {labels}")


def _scrape(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


def test_before_any_sample_only_says_so(exporter):
    status, text = _scrape(exporter.url)
    assert status == 200
    fams = _families(text)
    assert _value(fams, "fleetdeck_exporter_has_sample", node="n1") == 0.0
    assert "fleetdeck_gpu_power_watts" not in text


def test_values_follow_prometheus_units(exporter):
    reader = HostReader()
    older, newer = _sample(reader, 1), _sample(reader, 2)
    exporter.update(newer, derive(newer, older), JOBS)
    status, text = _scrape(exporter.url)
    assert status == 200
    fams = _families(text)
    gpu = {"node": "n1", "gpu": "0", "uuid": "GPU-0f0e", "simulated": "false"}
    assert _value(fams, "fleetdeck_gpu_power_watts", **gpu) == pytest.approx(312.5)
    assert _value(fams, "fleetdeck_gpu_utilization_ratio", **gpu) == pytest.approx(0.87)
    assert _value(fams, "fleetdeck_gpu_memory_used_bytes", **gpu) == float(30 << 30)
    assert _value(fams, "fleetdeck_gpu_sm_clock_hertz", **gpu) == pytest.approx(1.98e9)
    assert _value(fams, "fleetdeck_gpu_energy_joules", "fleetdeck_gpu_energy_joules_total", **gpu) == pytest.approx(1000.624)
    assert _value(fams, "fleetdeck_gpu_ecc_errors", type="corrected", **gpu) == 3
    job = {"node": "n1", "job_id": "n1.3", "name": "train-3"}
    assert _value(fams, "fleetdeck_job_cpu_seconds", **job) == pytest.approx(6.8)
    assert _value(fams, "fleetdeck_job_cpu_usage_cores", **job) == pytest.approx(0.9)  # 0.9 s of CPU per 1 s
    assert _value(fams, "fleetdeck_job_app_rate_per_second", metric="tokens", **job) == pytest.approx(1000.0)
    assert _value(fams, "fleetdeck_job_app", "fleetdeck_job_app_total", metric="tokens", **job) == 2000.0
    assert _value(fams, "fleetdeck_job_app_value", metric="loss", **job) == pytest.approx(2.498)
    assert _value(fams, "fleetdeck_job_gpu_memory_bytes", gpu="0", **job) == float(29 << 30)
    assert _value(fams, "fleetdeck_job_state", state="running", backend="local", **job) == 1.0
    assert _value(fams, "fleetdeck_job_state", state="paused", backend="local", **job) == 0.0
    assert _value(fams, "fleetdeck_job_state", state="queued", backend="slurm", job_id="n1.slurm-7") == 1.0
    assert _value(fams, "fleetdeck_job_priority", **job) == 2.0
    # node values come from the real /proc reading, in base units
    host = newer.host
    assert _value(fams, "fleetdeck_node_memory_total_bytes", node="n1") == float(host.mem_total_bytes)
    assert _value(fams, "fleetdeck_node_cpu_seconds", mode="user", node="n1") == pytest.approx(host.cpu_total.user_s)
    assert 0.0 <= _value(fams, "fleetdeck_node_cpu_usage_ratio", node="n1") <= 1.0
    for f in fams.values():
        for sample in f.samples:  # Prometheus owns `job`: ours would arrive as `exported_job`
            assert "job" not in sample.labels, (f.name, sample.labels)
        if f.name.endswith("_ratio"):  # a ratio is a share, 0 to 1; counts of cores say so in their name
            assert all(0.0 <= sample.value <= 1.0 for sample in f.samples), f.name
        if f.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in f.samples), f.name
        assert f.name.startswith("fleetdeck_")


def test_promtool_accepts_the_output(exporter):
    promtool = shutil.which("promtool")
    if promtool is None:
        msg = "PROMTOOL MISSING: apt-get install prometheus (or `make system-deps`) to lint /metrics"
        print(f"\n{'!' * 70}\n{msg}\n{'!' * 70}", file=sys.stderr)
        pytest.skip(msg)
    reader = HostReader()
    older, newer = _sample(reader, 1), _sample(reader, 2)
    exporter.update(newer, derive(newer, older), JOBS)
    _, text = _scrape(exporter.url)
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr  # not even a lint warning


def test_scrapes_parse_while_the_daemon_updates(exporter):
    reader = HostReader()
    samples = [_sample(reader, i) for i in range(1, 6)]
    deriveds = [derive(samples[i], samples[i - 1]) for i in range(1, 5)]
    exporter.update(samples[1], deriveds[0], JOBS)
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def scraper() -> None:
        try:
            for _ in range(200):
                status, text = _scrape(exporter.url)
                fams = list(text_string_to_metric_families(text))
                results.append((status, len(fams)))
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test thread
            errors.append(exc)

    t = threading.Thread(target=scraper, name="scraper")
    t.start()
    i = 0
    deadline = time.monotonic() + 90
    while t.is_alive() and time.monotonic() < deadline:
        k = i % 4
        jobs = JOBS if k % 2 == 0 else JOBS[:1]
        exporter.update(samples[k + 1], deriveds[k], jobs)
        i += 1
    t.join(timeout=10)
    assert not t.is_alive(), "scraper thread still running"
    assert not errors, errors
    assert len(results) == 200 and all(status == 200 for status, _ in results)
    assert i > 200  # updates really interleaved with the scrapes
    assert len({n for _, n in results}) == 1  # every scrape saw a complete snapshot


def test_loopback_only_unless_allowed():
    with pytest.raises(ValueError, match="not a loopback address") as err:
        MetricsExporter("n1", "0.0.0.0:9810")
    assert "allow_remote" in str(err.value)
    with pytest.raises(ValueError, match="HOST:PORT"):
        MetricsExporter("n1", "9810x")
    MetricsExporter("n1", "0.0.0.0:9810", allow_remote=True)  # allowed, not started
    MetricsExporter("n1", "[::1]:0")
    MetricsExporter("n1", "localhost:0")


def test_stop_closes_the_port_and_thread():
    exp = MetricsExporter("n1", "127.0.0.1:0")
    exp.start()
    url = exp.url
    assert _scrape(url)[0] == 200
    exp.stop()
    assert not any(t.name == "agentd-metrics" for t in threading.enumerate())
    with pytest.raises(urllib.error.URLError):
        _scrape(url)
    exp.stop()  # idempotent


def test_render_matches_http(exporter):
    reader = HostReader()
    s = _sample(reader, 1)
    exporter.update(s, derive(s, None), [])
    assert b"fleetdeck_gpu_power_watts" in render(exporter)
    assert msgspec.json.encode(s)  # the sample itself stays a plain struct


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ended(state: str, n: int = 9) -> JobInfo:
    return JobInfo(id=f"n1.{n}", node="n1", name=f"job-{n}", state=state, spec=JobSpec(argv=["x"]),
                   started_s=1.7e9, ended_s=1.7e9 + 5)


def test_ended_job_state_stays_for_the_retention_window_and_ends_are_counted():
    clock = _Clock()
    exp = MetricsExporter("n1", "127.0.0.1:0", ended_retention_s=600, clock=clock)
    reader = HostReader()
    sample = _sample(reader, 1)
    exp.update(sample, derive(sample, None), JOBS)
    fams = _families(render(exp).decode())
    for result in ("succeeded", "failed", "cancelled", "migrated"):  # present at 0: increase() sees the first end
        assert _value(fams, "fleetdeck_job_ends", "fleetdeck_job_ends_total", result=result) == 0.0
    exp.job_changed(_ended("running"))  # not an end
    exp.job_changed(_ended("failed"))
    exp.job_changed(_ended("failed"))  # the same end published twice counts once
    exp.job_changed(_ended("succeeded", n=10))
    clock.now += 599
    fams = _families(render(exp).decode())
    failed = {"node": "n1", "job_id": "n1.9", "name": "job-9"}
    assert _value(fams, "fleetdeck_job_state", state="failed", **failed) == 1.0
    assert _value(fams, "fleetdeck_job_state", state="running", **failed) == 0.0
    assert _value(fams, "fleetdeck_job_ends", "fleetdeck_job_ends_total", result="failed") == 1.0
    assert _value(fams, "fleetdeck_job_ends", "fleetdeck_job_ends_total", result="succeeded") == 1.0
    clock.now += 2  # past the window: the state series goes, the counter stays
    fams = _families(render(exp).decode())
    assert not [s for s in fams["fleetdeck_job_state"].samples if s.labels["job_id"] in ("n1.9", "n1.10")]
    assert _value(fams, "fleetdeck_job_ends", "fleetdeck_job_ends_total", result="failed") == 1.0


def test_job_metric_names_are_bounded_per_job(caplog):
    from agentd.protocol.limits import MAX_METRICS_PER_JOB

    exp = MetricsExporter("n1", "127.0.0.1:0")
    reader = HostReader()
    base = _sample(reader, 1)
    app = [AppMetric(job_id="n1.3", name=f"random_{i}", value=float(i), counter=False) for i in range(MAX_METRICS_PER_JOB + 36)]
    sample = msgspec.structs.replace(base, app=app)
    exp.update(sample, derive(sample, None), JOBS, names_refused=7)
    with caplog.at_level("WARNING", logger="agentd.exporter"):
        text = render(exp).decode()
        render(exp)
    fams = _families(text)
    names = {s.labels["metric"] for s in fams["fleetdeck_job_app_value"].samples if s.labels["job_id"] == "n1.3"}
    assert len(names) == MAX_METRICS_PER_JOB and "random_0" in names
    refused = _value(fams, "fleetdeck_job_metric_names_refused", "fleetdeck_job_metric_names_refused_total", node="n1")
    assert refused == 7 + 36  # the manager's refusals plus the names this scrape left out
    warnings = [r for r in caplog.records if "n1.3" in r.getMessage()]
    assert len(warnings) == 1 and str(MAX_METRICS_PER_JOB) in warnings[0].getMessage()


def test_promtool_alert_rules_check_and_fire_on_a_failed_job(tmp_path):
    """packaging/prometheus/alerts.yml passes `promtool check rules`, and its failed-job alerts fire
    on the series agentd exports (`promtool test rules` with the exporter's label names)."""
    from pathlib import Path

    promtool = shutil.which("promtool")
    if promtool is None:
        msg = "PROMTOOL MISSING: apt-get install prometheus (or `make system-deps`) to check the alerting rules"
        print(f"\n{'!' * 70}\n{msg}\n{'!' * 70}", file=sys.stderr)
        pytest.skip(msg)
    rules = Path(__file__).resolve().parents[2] / "packaging" / "prometheus" / "alerts.yml"
    proc = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
    (tmp_path / "alerts.yml").write_text(rules.read_text())
    (tmp_path / "test.yml").write_text('''
rule_files: [alerts.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'fleetdeck_job_state{node="n1",job_id="n1.9",name="train",state="failed",backend="local"}'
        values: '0 0 1 1 1'
      - series: 'fleetdeck_job_ends_total{node="n1",result="failed"}'
        values: '0 0 1 1 1'
    alert_rule_test:
      - eval_time: 1m
        alertname: FleetdeckJobFailed
        exp_alerts: []
      - eval_time: 3m
        alertname: FleetdeckJobFailed
        exp_alerts:
          - exp_labels: {severity: warning, node: n1, job_id: n1.9, name: train}
            exp_annotations:
              summary: "Job n1.9 (train) failed on n1"
              description: "See `agentctl show n1.9` and `agentctl logs n1.9 --stderr`."
      - eval_time: 3m
        alertname: FleetdeckJobsFailing
        exp_alerts:
          - exp_labels: {severity: warning, node: n1}
            exp_annotations:
              summary: "1 job(s) failed on n1 in the last 15 minutes"
''')
    proc = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ended_jobs_shown_are_bounded():
    from agentd.exporter import MAX_ENDED_SHOWN

    exp = MetricsExporter("n1", "127.0.0.1:0", clock=_Clock())
    for n in range(MAX_ENDED_SHOWN + 50):
        exp.job_changed(_ended("succeeded", n=n))
    shown = exp.ended_jobs()
    assert len(shown) == MAX_ENDED_SHOWN and shown[-1].id == f"n1.{MAX_ENDED_SHOWN + 49}" and shown[0].id == "n1.50"
    assert exp.ends()["succeeded"] == MAX_ENDED_SHOWN + 50
