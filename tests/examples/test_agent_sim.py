"""examples/agent_sim.py: tokens and tool calls with per-tool CPU and peak memory under agentd."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agentd.control.manager import JobManager
from agentd.protocol import JobSpec
from tests.control.control_helpers import cleanup_manager, node_name, wait_for

AGENT = Path(__file__).resolve().parents[2] / "examples" / "agent_sim.py"


def test_runs_standalone():
    out = subprocess.run([sys.executable, str(AGENT), "--turns", "3", "--think-s", "0.01", "--tool-s", "0.01",
                          "--tool-mem-mb", "4"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "done turns=3" in out.stdout


def test_agent_reports_tokens_and_tool_calls(tmp_path):
    events = []
    m = JobManager(node_name(), tmp_path / "state", 0, on_event=events.append, on_job=lambda j: None)
    m.start()
    try:
        job = m.submit(JobSpec(argv=[sys.executable, str(AGENT), "--turns", "3", "--think-s", "0.05",
                                     "--tool-s", "0.1", "--tool-mem-mb", "48"], kind="agent"))
        wait_for(lambda: (m.tick(), m.get(job.id).state == "succeeded")[1], 30, "the agent to finish")
        info = m.get(job.id)
        assert info.metrics["turn"] == 3 and info.metrics["tokens"] >= 600
        assert len(info.tool_calls) == 3
        child_calls = [c for c in info.tool_calls if c.mem_peak_bytes]
        assert len(child_calls) == 2 and all(c.mem_peak_bytes >= 20 << 20 for c in child_calls)
        assert all(c.ended_s is not None and c.cpu_s is not None for c in info.tool_calls)
        assert sum(e.kind == "tool_call" for e in events) == 6
    finally:
        cleanup_manager(m)
