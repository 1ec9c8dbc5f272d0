"""agentd dies (SIGKILL) with jobs running: a new manager re-adopts them and still controls them."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from agentd.control import procs
from tests.control.control_helpers import PY, SLEEPER, SPIN, node_name, wait_for

PR_SET_CHILD_SUBREAPER = 36
REPO = Path(__file__).resolve().parents[2]

DAEMON = r"""
import json, sys, time
from pathlib import Path
from agentd.control.manager import JobManager
from agentd.protocol import JobSpec
node, state, spin, sleeper, exiter = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]), json.loads(sys.argv[5])
m = JobManager(node, state, 4, on_event=lambda e: None, on_job=lambda j: None)
m.start()
ids = [m.submit(JobSpec(argv=spin, name="a", gpus=1)).id,
       m.submit(JobSpec(argv=sleeper, name="b", gpus=1)).id,
       m.submit(JobSpec(argv=sleeper, name="c", gpus=1)).id,
       m.submit(JobSpec(argv=spin, name="d", gpus=1, priority=2)).id,
       m.submit(JobSpec(argv=exiter, name="e")).id]
m.pause(ids[1], actor="alice")
print(json.dumps(ids), flush=True)
while True:
    m.tick()
    time.sleep(0.1)
"""


def _subreaper(on: bool) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0)


def test_sigkilled_daemon_jobs_are_readopted(make_manager, tmp_path):
    node, state = node_name(), tmp_path / "state"
    release = tmp_path / "release-e"
    exiter = [PY, "-c", f"import os,time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.02)\n"
                        "raise SystemExit(7)"]
    _subreaper(True)  # the killed daemon's shims become our children, so we can reap them
    shim_pids: list[int] = []
    try:
        daemon = subprocess.Popen([sys.executable, "-c", DAEMON, node, str(state), json.dumps(SPIN),
                                   json.dumps(SLEEPER), json.dumps(exiter)],
                                  stdout=subprocess.PIPE, cwd=REPO, text=True)
        try:
            ids = json.loads(daemon.stdout.readline())
        finally:
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=10)
            daemon.stdout.close()
        shim_pids = [json.loads((state / "jobs" / str(n) / "pid.json").read_text())["shim_pid"] for n in range(1, 6)]
        release.touch()
        wait_for(lambda: (state / "jobs" / "5" / "exit.json").exists(), 10, "job e to exit while agentd is down")

        m, rec = make_manager(gpus=4, node=node, state_dir=state)
        jobs = {j.id: j for j in m.jobs()}
        assert [jobs[i].state for i in ids] == ["running", "paused", "running", "running", "failed"]
        assert jobs[ids[4]].exit_code == 7 and "while agentd was down" in jobs[ids[4]].reason
        assert all(procs.is_alive(jobs[i].pid) for i in ids[:4])
        assert jobs[ids[3]].priority == 2 and jobs[ids[0]].control == "cgroup-v1"
        assert sorted(g for i in ids[:4] for g in jobs[i].gpus) == [0, 1, 2, 3]
        assert {e.job_id for e in rec.events if "re-adopted" in e.message} == set(ids[:4])

        # still controllable: pause a running one, resume the paused one, cancel one
        a_pid = jobs[ids[0]].pid
        m.pause(ids[0])
        t = procs.cpu_time_s(a_pid)
        time.sleep(0.3)
        assert procs.cpu_time_s(a_pid) == t
        assert m.resume(ids[1]).state == "running"
        assert m.cancel(ids[2], grace_s=2).state == "cancelled"
        assert not procs.is_alive(jobs[ids[2]].pid)
        # exit codes are still collected although this process is not the jobs' parent
        os.kill(jobs[ids[3]].pid, signal.SIGKILL)
        wait_for(lambda: (m.tick(), m.get(ids[3]).state == "failed")[1], 10, "job d's exit to be seen")
        assert m.get(ids[3]).exit_code == -9 and m.get(ids[3]).reason == "killed by SIGKILL"
        for i in (ids[0], ids[1]):
            m.cancel(i, grace_s=1)
    finally:
        deadline = time.monotonic() + 10
        for pid in shim_pids:
            while time.monotonic() < deadline:
                try:
                    got, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if got:
                    break
                time.sleep(0.02)
        # (pytest stays a subreaper: tests/conftest.py makes it one for the whole session)
    assert not any(procs.is_alive(p) for p in shim_pids), "a shim outlived its job"
