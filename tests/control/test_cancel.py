"""Cancel: SIGTERM, SIGKILL after the grace period, nothing left behind (grandchildren included)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agentd.control import procs
from agentd.protocol import ErrorCode, ProtocolError
from tests.control.control_helpers import PY, SPIN, spec, wait_for

IGNORES_TERM = [PY, "-c", "import signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                          "print('ready', flush=True)\nwhile True: time.sleep(0.05)"]
# The child starts a grandchild in its own session (setsid) that ignores SIGTERM, and prints its pid.
ESCAPER = [PY, "-c", "import subprocess,sys,time\n"
                     "p = subprocess.Popen([sys.executable, '-c', 'import signal,time\\n"
                     "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\nwhile True: time.sleep(0.05)'],"
                     " start_new_session=True)\n"
                     "print(p.pid, flush=True)\nwhile True: time.sleep(0.05)"]


def _gone(pids) -> bool:
    return not any(procs.is_alive(p) for p in pids)


def test_cancel_running_job_leaves_nothing(manager):
    m, rec = manager
    job = m.submit(spec(SPIN))
    cgroup_dirs = [Path(p) for p in m.probes()[job.id][0].paths.values()]
    info = m.cancel(job.id, grace_s=5, actor="erin")
    assert info.state == "cancelled" and info.exit_code == -15 and info.pids == []
    assert _gone([job.pid])
    assert not any(d.exists() for d in cgroup_dirs)
    ev = [e for e in rec.events if e.kind == "action" and e.data.get("action") == "cancel"]
    assert ev and ev[-1].ok and ev[-1].actor == "erin"


def test_job_ignoring_sigterm_is_killed_after_grace(manager):
    m, _ = manager
    job = m.submit(spec(IGNORES_TERM))
    wait_for(lambda: b"ready" in m.read_log(job.id)[0], 10, "the job to install its handler")
    t0 = time.monotonic()
    info = m.cancel(job.id, grace_s=0.5)
    took = time.monotonic() - t0
    assert info.state == "cancelled" and info.exit_code == -9
    assert 0.5 <= took < 15, took
    assert _gone([job.pid])


def test_grandchild_in_its_own_session_is_killed(manager):
    m, _ = manager
    job = m.submit(spec(ESCAPER))
    out = wait_for(lambda: m.read_log(job.id)[0].strip(), 10, "the grandchild pid")
    grandchild = int(out.split()[0])
    assert procs.is_alive(grandchild) and os.getsid(grandchild) != job.pid
    assert grandchild in m.get(job.id).pids
    m.cancel(job.id, grace_s=0.3)
    wait_for(lambda: _gone([job.pid, grandchild]), 5, "every process of the job to be gone")


def test_cancel_paused_job_kills_then_thaws(manager):
    m, _ = manager
    job = m.submit(spec(SPIN))
    m.pause(job.id)
    info = m.cancel(job.id, grace_s=10)
    assert info.state == "cancelled" and info.exit_code == -9
    assert _gone([job.pid])


def test_cancel_without_cgroups(make_manager, tmp_path):
    m, _ = make_manager(cgroup_root=tmp_path / "none")
    job = m.submit(spec(IGNORES_TERM))
    assert job.control == "pgroup"
    wait_for(lambda: b"ready" in m.read_log(job.id)[0], 10, "the job to install its handler")
    assert m.cancel(job.id, grace_s=0.2).state == "cancelled"
    assert _gone([job.pid])


def test_cancel_finished_job_is_conflict(manager):
    m, _ = manager
    job = m.submit(spec([PY, "-c", "raise SystemExit(3)"]))
    wait_for(lambda: (m.tick(), m.get(job.id).state == "failed")[1], 10, "the job to fail")
    assert m.get(job.id).exit_code == 3 and m.get(job.id).reason == "exit code 3"
    with pytest.raises(ProtocolError) as e:
        m.cancel(job.id)
    assert e.value.code == ErrorCode.CONFLICT and "already ended" in e.value.message
