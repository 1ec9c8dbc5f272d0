"""Jobs' own metrics and tool calls: report.py datagrams, stdout lines, run_tool in a child cgroup."""

from __future__ import annotations

import os
import socket
import sys

from agentd import report
from agentd.control.reports import ReportInbox, parse_line, report_socket_path
from tests.control.control_helpers import PY, spec, wait_for

JOB_CODE = r"""
import sys, time
from agentd import report
report.metric(loss=0.5, step=3)
report.counter(tokens=100)
report.counter(tokens=20)
with report.tool_call("search"):
    time.sleep(0.05)
rc = report.run_tool([sys.executable, "-c",
    "b = bytearray(80 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nx = 0\nfor i in range(2000000): x += i"],
    name="pytest")
print("AGENTD_METRIC samples=56 loss=0.25 junk=abc", flush=True)
print("AGENTD_TOOL start grep", flush=True)
print("AGENTD_TOOL end grep 1", flush=True)
print("rc", rc, flush=True)
time.sleep(30)
"""


def test_metrics_and_tool_calls_from_a_job(manager):
    m, rec = manager
    job = m.submit(spec([PY, "-c", JOB_CODE], kind="agent", counters=["samples"]))

    def done():
        m.tick()
        return len(m.get(job.id).tool_calls) >= 3 and "samples" in m.get(job.id).metrics

    wait_for(done, 20, "the job's reports")
    info = m.get(job.id)
    assert info.metrics == {"loss": 0.25, "step": 3.0, "tokens": 120.0, "samples": 56.0}
    kinds = {a.name: a.counter for a in m.app_metrics() if a.job_id == job.id}
    assert kinds == {"loss": False, "step": False, "tokens": True, "samples": True}
    calls = {c.name: c for c in info.tool_calls}
    assert set(calls) == {"search", "pytest", "grep"}
    assert calls["search"].ended_s >= calls["search"].started_s and calls["search"].exit_code == 0
    assert calls["pytest"].exit_code == 0
    assert calls["pytest"].mem_peak_bytes >= 80 << 20, "the tool's own cgroup saw its peak memory"
    assert calls["pytest"].cpu_s > 0.05
    assert calls["grep"].exit_code == 1
    cgroup_dirs = m.probes()[job.id][0].paths.values()
    for d in cgroup_dirs:  # the tool's child cgroup is gone again
        assert [e for e in os.listdir(d) if e.startswith("tool-")] == []
    tool_events = [e for e in rec.events if e.kind == "tool_call" and e.job_id == job.id]
    assert [e.data["phase"] for e in tool_events].count("end") == 3
    assert b"rc 0" in m.read_log(job.id)[0]


def test_report_is_a_noop_outside_agentd(monkeypatch):
    monkeypatch.delenv("AGENTD_REPORT", raising=False)
    monkeypatch.delenv("AGENTD_JOB_ID", raising=False)
    assert not report.enabled()
    assert report.metric(x=1) is False
    with report.tool_call("t"):
        pass
    assert report.run_tool([sys.executable, "-c", "raise SystemExit(4)"]) == 4


def test_report_never_blocks_or_fails_when_daemon_is_gone(monkeypatch, tmp_path):
    monkeypatch.setenv("AGENTD_REPORT", str(tmp_path / "gone.sock"))
    monkeypatch.setenv("AGENTD_JOB_ID", "n.1")
    assert report.metric(x=1) is False
    inbox = ReportInbox(tmp_path / "full.sock")
    try:
        monkeypatch.setenv("AGENTD_REPORT", str(tmp_path / "full.sock"))
        sent = sum(report.metric(x=i, pad="y" * 10) for i in range(20000))  # far past the queue size
        assert 0 < sent < 20000
        got = inbox.drain()
        assert got and got[0]["job"] == "n.1" and got[0]["values"] == {"x": 0.0}
    finally:
        inbox.close()
    assert report.counter(tokens=1) is False  # socket gone again


def test_parse_line():
    assert parse_line("AGENTD_METRIC a=1 b=2.5 c=x d") == {"t": "metric", "values": {"a": 1.0, "b": 2.5}, "counters": []}
    assert parse_line("AGENTD_TOOL start pytest")["phase"] == "start"
    assert parse_line("AGENTD_TOOL end pytest 2")["exit_code"] == 2
    assert parse_line("AGENTD_METRIC") is None and parse_line("hello") is None


def test_long_state_dir_gets_a_short_socket(tmp_path):
    long = tmp_path / ("x" * 120)
    assert len(str(report_socket_path(long))) <= 100


def test_garbage_datagrams_are_ignored(tmp_path):
    inbox = ReportInbox(tmp_path / "r.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        for data in (b"\xff\x00", b"[1,2]", b'{"t": "metric"}', b'{"job": "a.1", "t": "line", "line": "nope"}'):
            s.sendto(data, str(tmp_path / "r.sock"))
        assert inbox.drain() == []
    finally:
        s.close()
        inbox.close()


def test_logs_rotate_and_read_log_offsets(manager, monkeypatch):
    m, _ = manager
    monkeypatch.setattr("agentd.control.manager.LOG_MAX_BYTES", 4096)
    job = m.submit(spec([PY, "-c", "import sys,time\nfor i in range(1000):\n print(f'line {i:05d}', flush=True)\n"
                                   " if i % 100 == 0: time.sleep(0.02)\nprint('err', file=sys.stderr)"]))
    wait_for(lambda: (m.tick(), m.get(job.id).state == "succeeded")[1], 10, "the job to finish")
    data, nxt, size, eof = m.read_log(job.id, offset=-20)
    assert data.endswith(b"line 00999\n") and nxt == size and eof
    assert size <= 4096 + 65536  # soft cap: one pipe read may pass it
    assert os.path.exists(m.state_dir / "jobs" / job.id.split(".")[1] / "stdout.log.1")
    head, nxt, _, eof = m.read_log(job.id, offset=0, max_bytes=11)
    assert len(head) == 11 and nxt == 11 and not eof
    assert m.read_log(job.id, "stderr", offset=0)[0] == b"err\n"


def test_a_process_cannot_report_for_another_job(manager, monkeypatch):
    m, _ = manager
    job = m.submit(spec())
    monkeypatch.setenv("AGENTD_REPORT", str(m.report_path))
    monkeypatch.setenv("AGENTD_JOB_ID", job.id)
    assert report.metric(forged=1)  # sent by the test process, which is not in the job
    honest = m.submit(spec([PY, "-c", "from agentd import report\nreport.metric(honest=1)\nimport time\ntime.sleep(30)"]))
    wait_for(lambda: (m.tick(), "honest" in m.get(honest.id).metrics)[1], 10, "the honest report")
    assert "forged" not in m.get(job.id).metrics


def test_a_report_naming_another_nodes_id_counts_for_the_senders_job(manager):
    """A job restored from a CRIU image keeps AGENTD_JOB_ID from the node it was dumped on."""
    m, _ = manager
    code = ("import os, time\nos.environ['AGENTD_JOB_ID'] = 'elsewhere.7'\nfrom agentd import report\n"
            "while True:\n report.metric(moved=1)\n time.sleep(0.05)")
    job = m.submit(spec([PY, "-c", code]))
    wait_for(lambda: (m.tick(), "moved" in m.get(job.id).metrics)[1], 10, "the report under the old id")
