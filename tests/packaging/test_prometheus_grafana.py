"""The Prometheus scrape config and the Grafana dashboard use the exporter's real metric names."""

from __future__ import annotations

import json
import re
import subprocess

from prometheus_client.parser import text_string_to_metric_families

from agentd.exporter import MetricsExporter, render
from agentd.metrics import derive
from agentd.telemetry.host import HostReader
from tests.exporter.test_exporter import JOBS, _sample
from tests.packaging.conftest import ROOT, require_tool

DASHBOARD = ROOT / "packaging" / "grafana" / "fleetdeck-dashboard.json"


def _exposed_names() -> set[str]:
    reader = HostReader()
    older, newer = _sample(reader, 1), _sample(reader, 2)
    exp = MetricsExporter("n1", "127.0.0.1:0")
    exp.update(newer, derive(newer, older), JOBS)
    return {s.name for f in text_string_to_metric_families(render(exp).decode()) for s in f.samples} | {
        f.name for f in text_string_to_metric_families(render(exp).decode())
    }


def test_prometheus_config_checks():
    tool = require_tool("promtool", "prometheus")
    proc = subprocess.run([tool, "check", "config", str(ROOT / "packaging" / "prometheus" / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_queries_name_real_metrics():
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs.append(dash["templating"]["list"][0]["query"]["query"])
    used = {m for e in exprs for m in re.findall(r"fleetdeck_[a-z0-9_]+", e)}
    exposed = _exposed_names()
    assert used and used <= exposed, f"unknown metrics in the dashboard: {sorted(used - exposed)}"
    titles = " | ".join(p["title"].lower() for p in dash["panels"])
    for needed in ("gpu utilisation", "gpu memory", "gpu power", "job throughput"):
        assert needed in titles, needed
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_install_doc_lists_every_metric():
    doc = (ROOT / "docs" / "install.md").read_text()
    reader = HostReader()
    sample = _sample(reader, 1)
    exp = MetricsExporter("n1", "127.0.0.1:0")
    exp.update(sample, derive(sample, None), JOBS)
    families = list(text_string_to_metric_families(render(exp).decode()))
    names = [f.name + ("_total" if f.type == "counter" else "") for f in families]
    missing = [n for n in names if f"| `{n}` |" not in doc]
    assert len(names) > 50 and not missing, f"docs/install.md does not list: {missing}"
    rows = {line.split(" | ")[0].strip("| `"): line.split(" | ")[2] for line in doc.splitlines() if line.startswith("| `fleetdeck_")}
    for f, name in zip(families, names):
        labels = sorted({k for s in f.samples for k in s.labels} - {"node"})
        if labels:  # the labels column says what a query can select on (job_id, simulated...)
            assert rows[name] == ", ".join(labels), f"docs/install.md: {name} has labels {labels}, the doc says {rows[name]}"
