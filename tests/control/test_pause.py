"""Pause and resume: the freezer (v1 here, v2 on the unified mount) and the process-group fallback."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from agentd.control import procs
from agentd.protocol import ErrorCode, ProtocolError
from tests.control.control_helpers import SPIN, spec, wait_for


def _cpu(pid: int) -> float:
    t = procs.cpu_time_s(pid)
    assert t is not None, f"process {pid} is gone"
    return t


def _assert_pause_stops_cpu(m, job_id: str) -> None:
    info = m.get(job_id)
    wait_for(lambda: _cpu(info.pid) > 0.05, 10, "the job to use some CPU")
    paused = m.pause(job_id, actor="alice")
    assert paused.state == "paused"
    assert paused.revision > info.revision, "each change counts up, so viewers can order replies and stream"
    before = _cpu(info.pid)
    time.sleep(0.5)
    assert _cpu(info.pid) == before, "CPU time advanced while paused"
    resumed = m.resume(job_id, actor="alice")
    assert resumed.state == "running" and resumed.revision > paused.revision
    wait_for(lambda: _cpu(info.pid) > before + 0.02, 10, "CPU time to advance after resume")


def test_pause_freezes_cpu_time_v1(manager):
    m, rec = manager
    job = m.submit(spec(SPIN, name="spin"), actor="alice")
    assert job.state == "running" and job.control == "cgroup-v1"
    _assert_pause_stops_cpu(m, job.id)
    actions = [e for e in rec.events if e.kind == "action" and e.job_id == job.id]
    assert [e.data["action"] for e in actions] == ["submit", "pause", "resume"]
    assert all(e.actor == "alice" and e.ok for e in actions)


def test_pause_on_cgroup_v2_root(make_manager):
    m, _ = make_manager(cgroup_root=Path("/sys/fs/cgroup/unified"))
    job = m.submit(spec(SPIN))
    assert job.control == "cgroup-v2"
    assert job.cgroup.startswith("/sys/fs/cgroup/unified/")
    _assert_pause_stops_cpu(m, job.id)


def test_pause_without_cgroups_uses_process_group(make_manager, tmp_path):
    m, _ = make_manager(cgroup_root=tmp_path / "no-cgroups")
    job = m.submit(spec(SPIN))
    assert job.control == "pgroup"
    _assert_pause_stops_cpu(m, job.id)
    assert procs.state_of(job.pid) in ("R", "S")


def test_pause_is_idempotent_and_resume_of_running_is_noop(manager):
    m, _ = manager
    job = m.submit(spec())
    m.pause(job.id)
    assert m.pause(job.id).state == "paused"
    m.resume(job.id)
    assert m.resume(job.id).state == "running"


def test_paused_job_shows_gpu_memory_held(manager):
    m, _ = manager
    job = m.submit(spec(gpus=1))
    m.tick({job.id: 3 << 30})
    m.pause(job.id)
    assert m.get(job.id).gpu_mem_held_bytes == 3 << 30
    m.tick({job.id: 3 << 30})
    assert m.get(job.id).gpu_mem_held_bytes == 3 << 30


def test_resume_queued_job_is_conflict(make_manager):
    m, _ = make_manager(gpus=1)
    m.submit(spec(gpus=1))
    queued = m.submit(spec(gpus=1))
    assert queued.state == "queued"
    with pytest.raises(ProtocolError) as e:
        m.resume(queued.id)
    assert e.value.code == ErrorCode.CONFLICT and "queued" in e.value.message
    with pytest.raises(ProtocolError) as e:
        m.pause(queued.id)
    assert e.value.code == ErrorCode.CONFLICT


def test_pause_resume_latency_p99(manager):
    m, _ = manager
    job = m.submit(spec(SPIN))
    pause_s, resume_s = [], []
    for _ in range(50):
        t0 = time.perf_counter()
        m.pause(job.id)
        t1 = time.perf_counter()
        m.resume(job.id)
        t2 = time.perf_counter()
        pause_s.append(t1 - t0)
        resume_s.append(t2 - t1)

    def p99(xs: list[float]) -> float:
        return statistics.quantiles(xs, n=100)[98]

    print(f"\npause p50 {statistics.median(pause_s) * 1e3:.2f} ms p99 {p99(pause_s) * 1e3:.2f} ms; "
          f"resume p50 {statistics.median(resume_s) * 1e3:.2f} ms p99 {p99(resume_s) * 1e3:.2f} ms")
    assert m.get(job.id).state == "running"
