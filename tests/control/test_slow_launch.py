"""A slow launch never stalls other requests: the manager waits for a job's shim without its lock.

The shim here is real, only slowed: a wrapper that says it is waiting, waits for a go file, then
execs the real shim (same pid, so the manager's bookkeeping is untouched). Before the fix, the
manager held its lock while waiting for the shim, so ``jobs()`` from another thread waited for
the whole launch; the test gives it until long after that would have answered, and releases the
shim only afterwards (ordering, not timing, decides the result).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agentd.control import launch
from agentd.protocol import JobSpec
from tests.control.control_helpers import SLEEPER, wait_for

SLOW_SHIM = """
import os, sys, time
job_dir = sys.argv[1]
open(os.path.join(job_dir, "slow-shim.waiting"), "w").close()
deadline = time.monotonic() + 120
while not os.path.exists(os.path.join(job_dir, "slow-shim.go")) and time.monotonic() < deadline:
    time.sleep(0.02)
os.execv(sys.executable, [sys.executable, "-I", "-S", {real!r}, job_dir])
"""


def test_jobs_answers_while_a_launch_waits_for_its_shim(make_manager, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    slow = tmp_path / "slow_shim.py"
    slow.write_text(SLOW_SHIM.format(real=str(launch.SHIM_PATH)))
    monkeypatch.setattr(launch, "SHIM_PATH", slow)
    monkeypatch.setattr(launch, "SHIM_START_TIMEOUT_S", 150.0)
    m, _ = make_manager(gpus=0)
    submitted: dict[str, object] = {}

    def submit() -> None:
        try:
            submitted["info"] = m.submit(JobSpec(argv=SLEEPER, name="slow-start"))
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            submitted["error"] = e

    submitter = threading.Thread(target=submit, daemon=True)
    submitter.start()
    job_dir = wait_for(lambda: next(iter((m.state_dir / "jobs").glob("*/slow-shim.waiting")), None), 30,
                       "the slowed shim to start waiting").parent  # type: ignore[union-attr]
    listed: dict[str, object] = {}
    lister = threading.Thread(target=lambda: listed.update(jobs=m.jobs()), daemon=True)
    lister.start()
    lister.join(60)  # generous: before the fix this waits for the whole launch (which never comes)
    answered_during_launch = not lister.is_alive()
    launch_pending = submitter.is_alive() and not (job_dir / "pid.json").exists()
    (job_dir / "slow-shim.go").touch()
    submitter.join(60)
    lister.join(60)
    assert answered_during_launch and launch_pending, "jobs() waited behind a launch in progress"
    jobs = listed["jobs"]
    assert [j.state for j in jobs] == ["queued"], f"the starting job shows as queued, not {jobs}"  # type: ignore[union-attr]
    assert "error" not in submitted, submitted.get("error")
    assert not submitter.is_alive() and submitted["info"].state == "running"  # type: ignore[union-attr]
    m.cancel(submitted["info"].id, grace_s=0)  # type: ignore[union-attr]
