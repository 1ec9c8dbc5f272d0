"""Hostile jobs and outsiders on the report socket, and hostile text on a terminal."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

from agentd.protocol.limits import MAX_METRICS_PER_JOB
from tests.agentd_proc import REPO
from tests.security.conftest import record, rss_kib, wait_for

PY = sys.executable


def _job(raw, code: str, **spec) -> str:
    reply = raw.call({"cmd": "submit", "spec": {"argv": [PY, "-c", textwrap.dedent(code)], **spec}})
    assert reply["ok"], reply
    return reply["job"]["id"]


def _metrics(raw, job_id: str) -> dict:
    return raw.call({"cmd": "show", "job": job_id})["job"].get("metrics", {})


def test_report_socket_verifies_sender_and_survives_garbage(hostile_agentd, raw_factory):
    raw = raw_factory(hostile_agentd.ctl)
    before = rss_kib(hostile_agentd.pid)
    sock_path = str(hostile_agentd.state_dir / "report.sock")
    honest = _job(raw, """
        import time
        from agentd import report
        i = 0
        while True:
            i += 1
            report.metric(step=i)
            time.sleep(0.1)
        """, env={"PYTHONPATH": str(REPO)})
    # the hostile job: garbage datagrams (bad JSON, bad timestamps, NaN, huge numbers, 500
    # metric names) from inside the job, so the kernel vouches for the sender
    hostile = _job(raw, """
        import json, os, socket, time
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dest, me = os.environ["AGENTD_REPORT"], os.environ["AGENTD_JOB_ID"]
        bad = [b"{not json", b"[1,2]", json.dumps({"job": me, "t": "metric", "wall_s": "yesterday", "values": {"a": 1}}).encode(),
               json.dumps({"job": me, "t": "metric", "wall_s": 1e300, "values": {"a": 1}}).encode(),
               b'{"job": "%s", "t": "metric", "wall_s": NaN, "values": {"a": 1}}' % me.encode(),
               b'{"job": "%s", "t": "metric", "values": {"big": 1e999999}}' % me.encode(),
               b'{"job": "%s", "t": "tool", "phase": "end", "name": "x", "wall_s": 99999999999999999999999}' % me.encode(),
               json.dumps({"job": me, "t": "metric", "values": [1, 2]}).encode(),
               json.dumps({"job": me, "t": "metric", "values": {f"m{i}": i for i in range(500)}}).encode()]
        while True:
            for b in bad:
                s.sendto(b, dest)
            print("AGENTD_METRIC " + " ".join(f"line{i}=1" for i in range(200)), flush=True)
            time.sleep(0.2)
        """)
    wait_for(lambda: _metrics(raw, honest).get("step", 0) > 5, 30, "the honest job's metrics")
    # an outsider (not in any job) forging a report for the honest job, and one that exits at once
    forged = json.dumps({"job": honest, "t": "metric", "values": {"forged": 1}}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for _ in range(20):
            s.sendto(forged, sock_path)
    subprocess.run([PY, "-c", f"import socket; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto({forged!r}, {sock_path!r})"],
                   check=True, timeout=30)
    step = _metrics(raw, honest)["step"]
    wait_for(lambda: _metrics(raw, honest)["step"] > step + 5, 30, "the honest job's metrics to keep coming")
    # bookkeeping goes on: a short job still ends, metrics of the hostile job are bounded
    short = _job(raw, "print('done')")
    wait_for(lambda: raw.call({"cmd": "show", "job": short})["job"]["state"] == "succeeded", 30, "a short job to end")
    assert "forged" not in _metrics(raw, honest)
    hostile_metrics = wait_for(lambda: _metrics(raw, hostile) or None, 30, "the hostile job's metrics")
    assert len(hostile_metrics) <= MAX_METRICS_PER_JOB
    log = (hostile_agentd.state_dir / "agentd.log").read_text()
    assert "report socket: dropped a report" in log and f"job {hostile} reports more than" in log
    assert "job bookkeeping failed" not in log
    record("report socket: datagrams forged by an outsider (and by one that exits at once); a job sending bad "
           "JSON, bad/NaN/huge timestamps, 1e999999, 500 metric names, 200-name AGENTD_METRIC lines",
           f"forged and unverifiable dropped; garbage counted and dropped; metrics capped at {MAX_METRICS_PER_JOB}; "
           "tick unaffected", before, rss_kib(hostile_agentd.pid))


def test_terminal_escapes_from_jobs_are_neutralised(hostile_agentd, raw_factory):
    raw = raw_factory(hostile_agentd.ctl)
    evil = "\x1b]0;owned\x07\x1b[2J\x9b31m[red]x"
    job = _job(raw, f"print({evil!r}); import sys; sys.stdout.write('\\r\\x1b[1Afake prompt $ ')", name=evil)
    wait_for(lambda: raw.call({"cmd": "show", "job": job})["job"]["state"] == "succeeded", 30, "the job to end")
    env = {"PYTHONPATH": str(REPO), "COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    outputs = []
    for verb in (["jobs"], ["show", job], ["logs", job]):
        out = subprocess.run([PY, "-m", "agentd.cli", "--node", hostile_agentd.ctl, *verb], capture_output=True,
                             timeout=60, env=env)
        assert out.returncode == 0, out.stderr
        text = out.stdout.decode("utf-8", "replace")
        assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text and "\r" not in text, (verb, text)
        assert "\\x1b" in text
        outputs.append(text)
    assert "[red]x" in outputs[0]  # rich markup shown as typed, not interpreted
    raw_logs = subprocess.run([PY, "-m", "agentd.cli", "--node", hostile_agentd.ctl, "logs", "--raw", job],
                              capture_output=True, timeout=60, env=env)
    assert b"\x1b]0;owned" in raw_logs.stdout  # --raw keeps the bytes for a pipe
