"""Health rules in a real agentd: an alert fires and clears on real state, reaches the stream,
the snapshot and `agentctl alerts`; a bad rules file stops agentd with the rule named."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agentd.protocol import JobSpec
from agentd.protocol.messages import Alerts, Cancel, Snapshot, Submit
from tests.agentd_proc import start_agentd
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(120)
SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


def _agentctl(node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentd.cli", "--node", node.ctl, *args],
                          capture_output=True, text=True, timeout=60)


def test_free_idle_gpu_while_a_job_queues_fires_then_clears(tmp_path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("[gpu_idle_while_queued]\nfor_s = 1\n")
    node = start_agentd(tmp_path, node="hl1", simulate_gpus=2, extra=["--health-rules", str(rules)])
    try:
        with node.client(timeout_s=10) as c:
            assert "alerts" in c.hello().capabilities
            holder = c.call(Submit(spec=JobSpec(argv=SLEEP, name="holder", gpus=1))).job
            waiting = c.call(Submit(spec=JobSpec(argv=SLEEP, name="needs-two", gpus=2))).job
            assert waiting.state == "queued"
            wait_for(lambda: c.call(Alerts()).alerts, timeout_s=30, what="an alert")
            [alert] = c.call(Alerts()).alerts
            free = ({0, 1} - set(c.call(Snapshot()).jobs[0].gpus if holder.gpus == [] else holder.gpus)).pop()
            assert (alert.rule, alert.node, alert.subject, alert.severity) == (
                "gpu_idle_while_queued", "hl1", f"gpu {free}", "info")
            assert "1 job(s) queue" in alert.message
            snap = c.call(Snapshot())
            assert [a.key for a in snap.alerts] == [alert.key]
            fired = [e for e in snap.events if e.kind == "alert"]
            assert fired and fired[-1].data["state"] == "firing" and fired[-1].data["rule"] == "gpu_idle_while_queued"

            out = _agentctl(node, "alerts", "--json")
            assert out.returncode == 0, out.stderr
            rows = json.loads(out.stdout)
            assert [(r["rule"], r["subject"]) for r in rows] == [("gpu_idle_while_queued", f"gpu {free}")]
            assert rows[0]["for_s"] >= 0
            text = _agentctl(node, "alerts")
            assert "gpu_idle_while_queued" not in text.stdout and "is free and idle" in text.stdout

            c.call(Cancel(job=waiting.id, grace_s=1.0))  # nothing queues any more: the alert clears
            wait_for(lambda: not c.call(Alerts()).alerts, timeout_s=30, what="the alert to clear")
            events = [e for e in c.call(Snapshot()).events if e.kind == "alert"]
            assert [e.data["state"] for e in events][-2:] == ["firing", "cleared"] and events[-1].ok
            assert _agentctl(node, "alerts").stdout.strip() == "no alerts firing"
    finally:
        node.stop()


def test_a_bad_rules_file_stops_agentd_naming_the_rule(tmp_path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("[gpu_idle_while_queud]\nfor_s = 1\n")
    node = start_agentd(tmp_path, node="hl2", extra=["--health-rules", str(rules)], wait=False)
    assert node.proc.wait(30) != 0
    err = node.stderr()
    assert "unknown rule [gpu_idle_while_queud]" in err and str(rules) in err and "Traceback" not in err
