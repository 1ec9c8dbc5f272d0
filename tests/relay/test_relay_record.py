"""Recording through a relay: one file holds the whole cluster (nodes behind the relay from
their summaries, a followed node in full), and replay and recording info list every node."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agentd.store.recording import RecordingReader
from tests.agentd_proc import REPO
from tests.relay.relay_helpers import relay, sim_fleet, wait_nodes


def _agentctl(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentd.cli", *args], capture_output=True, text=True, check=False,
                          timeout=timeout, cwd=REPO)


def test_record_the_whole_cluster_through_a_relay(tmp_path: Path) -> None:
    out_file = tmp_path / "cluster.db"
    with sim_fleet(tmp_path, 3, extra=["--alert-rate", "1"]) as cluster, relay(tmp_path, cluster) as r:
        wait_nodes(r, 4)
        rec = _agentctl("--node", r.ctl, "record", str(out_file), "--duration", "6", "--follow", "sim-0002",
                        "--timeout", "20")
        assert rec.returncode == 0, rec.stderr
        # --follow at a node that is no relay is refused naming the option.
        bad = _agentctl("--node", wait_nodes(r, 4)[-1].endpoint, "record", str(tmp_path / "x.db"), "--duration", "2",
                        "--follow", "sim-0002", "--timeout", "20")
        assert bad.returncode == 2 and "--follow" in bad.stderr and "no relay" in bad.stderr, bad.stderr

    info = _agentctl("recording", "info", str(out_file), "--json")
    assert info.returncode == 0, info.stderr
    listed = json.dumps(json.loads(info.stdout))
    for node in ("sim-0001", "sim-0002", "sim-0003", r.node):
        assert node in listed, f"{node} missing from recording info: {listed[:500]}"

    with RecordingReader(out_file) as reader:
        span = reader.time_range()
        assert span is not None
        state = reader.state_at(span[1])
        # A node behind the relay, from its summaries: derived numbers, GPUs, jobs, labelled so.
        s1 = state["sim-0001"]
        assert s1.inventory is not None and s1.inventory.labels["recorded_from"].startswith("relay summary via ")
        d1 = s1.derived()
        assert d1 is not None and d1.cpu_pct is not None and 0 < d1.cpu_pct <= 100 and len(d1.gpus) == 4
        # The followed node in full: its own inventory (not a summary's), its own samples.
        s2 = state["sim-0002"]
        assert s2.inventory is not None and "recorded_from" not in s2.inventory.labels
        assert s2.inventory.cpu_model == "simulated CPU"
        assert len(reader.samples("sim-0002", span[0], span[1])) >= 3

    rep = _agentctl("replay", str(out_file), "--json")
    assert rep.returncode == 0, rep.stderr
    rows = [json.loads(line) for line in rep.stdout.splitlines()]
    sampled = {row["node"] for row in rows if row["type"] == "sample"}
    assert {"sim-0001", "sim-0002", "sim-0003"} <= sampled
    alerts = [row for row in rows if row["type"] == "event" and row["kind"] == "alert"]
    assert {row["node"] for row in alerts} >= {"sim-0001", "sim-0003"}, "the summaries' alerts are recorded as events"
