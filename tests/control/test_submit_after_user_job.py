"""A submit never waits behind another job's end (issue 11: after a user's job exited, root's
next submit hung 10 s and its job failed with "the job's shim did not start: no output" in 3
of 7 runs). Real users, a real JobManager and a real agentd; each round submits as the user,
submits as root the moment the user's job has exited, and checks root's job started at once."""

from __future__ import annotations

import os
import time

import pytest

from agentd.control.manager import SHIM_START_TIMEOUT_S
from agentd.protocol import TERMINAL_STATES, JobSpec
from agentd.protocol.messages import Show, Submit
from tests.agentd_proc import start_agentd
from tests.control.control_helpers import wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

ROUNDS = 7
# Jobs that end in different ways: at once, with a leftover child holding its stdout, failing.
USER_JOBS = ["id -u", "id -u; sleep 3 & exit 0", "cat /etc/shadow"]


def _gone(pid: int | None) -> bool:
    return pid is not None and not os.path.exists(f"/proc/{pid}")


def _check_root_job(info, took_s: float, round_no: int) -> None:
    assert info.state in ("running", "succeeded"), (
        f"round {round_no}: root's job is {info.state} ({info.reason}) after a submit of {took_s:.1f} s")
    # a healthy submit takes milliseconds; the fault made it wait out the shim's whole deadline
    assert took_s < SHIM_START_TIMEOUT_S, f"round {round_no}: root's submit took {took_s:.1f} s"


def test_root_submit_right_after_a_user_job_ends_in_process(make_manager, make_user, public_dir):
    u = make_user()
    m, _ = make_manager(state_dir=public_dir / "state")
    for i in range(ROUNDS):
        user_job = m.submit(JobSpec(argv=["/bin/sh", "-c", USER_JOBS[i % len(USER_JOBS)]], user=u.name))
        assert m.get(user_job.id).owner == u.name

        def exited() -> bool:
            m.tick()
            j = m.get(user_job.id)  # noqa: B023 - called within this iteration only
            return j.state in TERMINAL_STATES or _gone(j.pid)

        wait_for(exited, 30, f"round {i}: the user's job to exit")
        t0 = time.monotonic()
        root_job = m.submit(JobSpec(argv=["/bin/sh", "-c", "id -u"]))
        _check_root_job(root_job, time.monotonic() - t0, i)
        assert root_job.owner == "root"
    for j in m.jobs(active_only=True):
        m.cancel(j.id, grace_s=0.0)


def test_root_submit_right_after_a_user_job_ends_real_agentd(make_user, public_dir):
    u = make_user()
    d = start_agentd(public_dir, node="sub")
    try:
        with d.client(timeout_s=30) as c:
            for i in range(ROUNDS):
                spec = JobSpec(argv=["/bin/sh", "-c", USER_JOBS[i % len(USER_JOBS)]], user=u.name)
                user_job = c.call(Submit(spec=spec)).job

                def exited() -> bool:
                    j = c.call(Show(job=user_job.id)).job  # noqa: B023 - called within this iteration only
                    return j.state in TERMINAL_STATES or _gone(j.pid)

                wait_for(exited, 30, f"round {i}: the user's job to exit")
                t0 = time.monotonic()
                root_job = c.call(Submit(spec=JobSpec(argv=["/bin/sh", "-c", "id -u"]))).job
                _check_root_job(root_job, time.monotonic() - t0, i)
    finally:
        d.stop()
