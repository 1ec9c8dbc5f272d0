"""A full state disk (a real small tmpfs): agentd and its jobs keep running, replies say what
failed, a start on the full disk works degraded, and the audit log never raises."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from agentd.control import procs
from agentd.protocol import JobSpec
from agentd.protocol.messages import Cancel, Pause, Resume, Submit
from agentd.store.audit import AuditLog
from agentd.transport.client import RemoteError
from tests.control.durability_helpers import daemon, jobs, running, submit, wait_until

CHATTY = ["python3", "-c", "import itertools, time\nfor i in itertools.count():\n    print('x' * 200, i, flush=True)\n"
          "    time.sleep(0.002)"]


@pytest.fixture
def small_disk(tmp_path) -> Path:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needed to fill a real disk): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path) -> Path:
    """Fill the file system to the last byte; returns the filler file."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        block = b"\0" * 65536
        with contextlib.suppress(OSError):
            while True:
                f.write(block)
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0")
    return filler


def test_full_state_disk_keeps_jobs_and_daemon_running(small_disk):
    state = small_disk / "state"
    with running(daemon(state)) as d:
        chatty = submit(d, CHATTY, name="chatty")
        short = submit(d, ["python3", "-c", "import time\nfor i in range(3000): print('y' * 100)\ntime.sleep(1)"],
                       name="short")
        wait_until(lambda: (state / "jobs" / str(chatty.id.split(".")[1]) / "stdout.log").exists(), 10, "chatty's log")
        filler = _fill(small_disk)
        try:
            with d.client(timeout_s=10) as c:
                with pytest.raises(RemoteError) as refused:
                    c.call(Submit(spec=JobSpec(argv=["true"])))
                assert "state disk full" in refused.value.message, refused.value.message
                assert c.call(Pause(job=chatty.id)).job.state == "paused"
                assert c.call(Resume(job=chatty.id)).job.state == "running"
            assert procs.is_alive(chatty.pid), "the job died of the full disk"

            # agentd killed and started again on the full disk: degraded, not a crash loop
            d.kill9()
            d.start()
            with d.client(timeout_s=10) as c:
                assert c.hello().node == "n1"
            listed = jobs(d)
            assert listed[chatty.id].state == "running" and procs.is_alive(chatty.pid)
            with pytest.raises(RemoteError) as refused:
                submit(d, ["true"])
            assert "full" in refused.value.message
        finally:
            filler.unlink()
        # space is back: the short job's end is recorded (nothing lost), submits work again
        wait_until(lambda: jobs(d)[short.id].state == "succeeded", 30, "the short job's exit to be recorded")
        n = short.id.split(".")[1]
        exit_info = json.loads((state / "jobs" / n / "exit.json").read_text())
        assert exit_info["log_dropped_bytes"] > 0, "dropped log output is not counted"
        again = wait_until(lambda: _try_submit(d), 30, "submits to be accepted again")
        assert again.state == "running"
        with d.client(timeout_s=15) as c:
            assert c.call(Cancel(job=chatty.id, grace_s=0.5)).job.state == "cancelled"


def _try_submit(d):
    try:
        return submit(d, ["sleep", "30"], name="later")
    except RemoteError:
        return None


def test_audit_log_never_raises_and_is_private(small_disk, caplog):
    path = small_disk / "audit.log"
    audit = AuditLog(path)
    audit.write({"action": "pause", "job": "n1.1", "actor": "alice"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text().splitlines()[0])["actor"] == "alice"
    filler = _fill(small_disk)
    try:
        with caplog.at_level("ERROR", logger="agentd.store.audit"):
            for _ in range(50):
                audit.write({"action": "cancel", "blob": "z" * 8192})
        assert audit.dropped > 0
        assert len([r for r in caplog.records if "audit log" in r.getMessage()]) == 1, "failures not logged once"
        audit.write({"bad": object()})  # not JSON: encoded with str(), never raises
    finally:
        filler.unlink()
    audit.write({"action": "resume"})
    audit.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0]["actor"] == "alice" and lines[-1]["action"] == "resume"
