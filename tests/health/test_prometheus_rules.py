"""packaging/prometheus/alerts.yml's health group fires on the series agentd exports
(`promtool test rules`), the bit tests on the throttle bitmask included."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[2] / "packaging" / "prometheus" / "alerts.yml"

CASES = '''
rule_files: [alerts.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # gpu 0: a process, idle; gpu 1: a process, busy; gpu 2: free and idle while a job queues
      - series: 'fleetdeck_gpu_processes{node="n1",gpu="0",uuid="u0",simulated="false"}'
        values: '1x20'
      - series: 'fleetdeck_gpu_utilization_ratio{node="n1",gpu="0",uuid="u0",simulated="false"}'
        values: '0x20'
      - series: 'fleetdeck_gpu_processes{node="n1",gpu="1",uuid="u1",simulated="false"}'
        values: '1x20'
      - series: 'fleetdeck_gpu_utilization_ratio{node="n1",gpu="1",uuid="u1",simulated="false"}'
        values: '0.9x20'
      - series: 'fleetdeck_gpu_processes{node="n1",gpu="2",uuid="u2",simulated="false"}'
        values: '0x20'
      - series: 'fleetdeck_gpu_utilization_ratio{node="n1",gpu="2",uuid="u2",simulated="false"}'
        values: '0x20'
      - series: 'fleetdeck_job_state{node="n1",job_id="n1.3",name="wait",state="queued",backend="local"}'
        values: '1x20'
      # throttle reasons: gpu 0 hardware thermal (64) + power cap (4); gpu 1 power cap only;
      # gpu 2 "idle" (1) + applications clocks (2): neither is a slowdown
      - series: 'fleetdeck_gpu_throttle_reasons{node="n1",gpu="0",uuid="u0",simulated="false"}'
        values: '68x20'
      - series: 'fleetdeck_gpu_throttle_reasons{node="n1",gpu="1",uuid="u1",simulated="false"}'
        values: '4x20'
      - series: 'fleetdeck_gpu_throttle_reasons{node="n1",gpu="2",uuid="u2",simulated="false"}'
        values: '3x20'
    alert_rule_test:
      - eval_time: 9m
        alertname: FleetdeckGpuIdleAllocated
        exp_alerts: []
      - eval_time: 11m
        alertname: FleetdeckGpuIdleAllocated
        exp_alerts:
          - exp_labels: {severity: warning, node: n1, gpu: "0", uuid: u0, simulated: "false"}
            exp_annotations:
              summary: "GPU 0 on n1 is held by a process but idle for 10 minutes"
      - eval_time: 6m
        alertname: FleetdeckGpuIdleWhileJobsQueue
        exp_alerts:
          - exp_labels: {severity: info, node: n1, gpu: "2", uuid: u2, simulated: "false"}
            exp_annotations:
              summary: "GPU 2 on n1 is free and idle while jobs queue there"
      - eval_time: 2m
        alertname: FleetdeckGpuThrottled
        exp_alerts:
          - exp_labels: {severity: warning, node: n1, gpu: "0", uuid: u0, simulated: "false"}
            exp_annotations:
              summary: "GPU 0 on n1 is slowed by heat or hardware protection (see fleetdeck_gpu_throttle_reasons)"
'''


def test_health_rules_fire_on_exported_series(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        msg = "PROMTOOL MISSING: apt-get install prometheus (or `make system-deps`) to test the alerting rules"
        print(f"\n{'!' * 70}\n{msg}\n{'!' * 70}", file=sys.stderr)
        pytest.skip(msg)
    (tmp_path / "alerts.yml").write_text(RULES.read_text())
    (tmp_path / "test.yml").write_text(CASES)
    proc = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
