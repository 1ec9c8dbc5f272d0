"""The job record's state machine (agentd.control.job): the explicit transition table."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd.control.job import (
    TRANSITIONS,
    IllegalTransition,
    Job,
    Runtime,
    check_transition,
)
from agentd.protocol.jobs import TERMINAL_STATES, JobSpec


def _job(state: str) -> Job:
    return Job(n=1, id="n1.1", node="n1", spec=JobSpec(argv=["true"]), state=state, priority=0,
               submitted_s=0.0, job_dir=Path("/nonexistent/jobs/1"), checkpoint_dir=Path("/nonexistent/ckpt"))


def test_illegal_transition_raises_and_names_the_job_and_states() -> None:
    job = _job("succeeded")
    with pytest.raises(IllegalTransition, match=r"job n1\.1: succeeded -> running is not an allowed transition"):
        job.set_state("running")
    assert job.state == "succeeded", "a refused transition leaves the state as it was"
    with pytest.raises(IllegalTransition, match="only queued"):
        _job("").set_state("running")  # a new job is queued first
    with pytest.raises(IllegalTransition):
        _job("queued").set_state("paused")  # a queued job has nothing to freeze


def test_terminal_states_are_final_and_every_live_state_can_end() -> None:
    for end in TERMINAL_STATES:
        assert not [t for f, t in TRANSITIONS if f == end], f"{end} must be final"
    for state in ("queued", "running", "paused", "checkpointing", "migrating"):
        for end in ("failed", "cancelled", "migrated"):
            check_transition("x", state, end)
    job = _job("")
    for step in ("queued", "running", "paused", "running", "checkpointing", "migrating", "queued", "running",
                 "succeeded"):
        job.set_state(step)
    assert job.state == "succeeded"


def test_runtime_round_trips_and_reads_old_records_leniently() -> None:
    job = _job("running")
    job.shim_pid, job.held, job.launch_token = 42, True, "abc"
    raw = job.runtime().to_dict()
    assert raw["shim_pid"] == 42 and raw["held"] is True and raw["cgroup"] is None
    assert Runtime.from_dict(raw) == job.runtime()
    old = Runtime.from_dict({"shim_pid": "garbage", "exited": 1, "migration": [1]})
    assert old.shim_pid is None and old.exited is True and old.migration == {}
