"""The per-node queue: GPUs (and declared CPU/memory) gate starts; priority then submit order."""

from __future__ import annotations

from pathlib import Path

from tests.control.control_helpers import PY, spec, wait_for


def test_two_gpus_three_jobs_priority_and_start_on_finish(make_manager, tmp_path):
    m, rec = make_manager(gpus=2)
    stop = tmp_path / "stop-first"
    first = m.submit(spec([PY, "-c", f"import os,time\nwhile not os.path.exists({str(stop)!r}): time.sleep(0.02)"],
                          gpus=1, name="first"))
    second = m.submit(spec(gpus=1, name="second"))
    waiting = m.submit(spec(gpus=1, name="waiting"))
    assert [first.state, second.state, waiting.state] == ["running", "running", "queued"]
    assert sorted(first.gpus + second.gpus) == [0, 1]
    assert waiting.queue_position == 0 and waiting.gpus == []

    newcomer = m.submit(spec(gpus=1, name="newcomer", priority=3))
    assert m.get(newcomer.id).queue_position == 0 and m.get(waiting.id).queue_position == 1
    m.set_priority(waiting.id, 5, actor="carol")
    assert m.get(waiting.id).queue_position == 0 and m.get(newcomer.id).queue_position == 1

    stop.touch()
    wait_for(lambda: (m.tick(), m.get(waiting.id).state == "running")[1], 10, "the waiting job to start")
    started = m.get(waiting.id)
    assert started.gpus == first.gpus
    assert m.get(first.id).state == "succeeded" and m.get(first.id).exit_code == 0
    assert m.get(newcomer.id).state == "queued" and m.get(newcomer.id).queue_position == 0
    env = wait_for(lambda: _environ_after_exec(started.pid), 5, "the job to exec")
    assert f"CUDA_VISIBLE_DEVICES={started.gpus[0]}".encode() in env
    assert f"AGENTD_JOB_ID={waiting.id}".encode() in env
    states = [(e.data["from"], e.data["to"]) for e in rec.events if e.kind == "job.state" and e.job_id == waiting.id]
    assert states == [("", "queued"), ("queued", "running")]


def _environ_after_exec(pid: int) -> list[bytes] | None:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return env if any(e.startswith(b"AGENTD_JOB_ID=") for e in env) else None


def test_declared_memory_gates_start(make_manager):
    m, _ = make_manager(gpus=0, mem_total_bytes=1 << 30, cpu_count=2)
    a = m.submit(spec(memory_bytes=600 << 20))
    b = m.submit(spec(memory_bytes=600 << 20))
    c = m.submit(spec(cpus=1.0))
    assert (a.state, b.state) == ("running", "queued")
    assert c.state == "queued", "strict order: a job behind a waiting one waits too"
    m.cancel(a.id, grace_s=1)
    assert m.get(b.id).state == "running" and m.get(c.id).state == "running"


def test_cancel_queued_job(make_manager):
    m, _ = make_manager(gpus=1)
    m.submit(spec(gpus=1))
    q = m.submit(spec(gpus=1))
    info = m.cancel(q.id, actor="dave")
    assert info.state == "cancelled" and info.pid is None


def test_job_ids_increase_and_are_never_reused(make_manager, tmp_path):
    state = tmp_path / "ids"
    m, _ = make_manager(gpus=0, node="idnode", state_dir=state)
    ids = [m.submit(spec([PY, "-c", "pass"])).id for _ in range(3)]
    assert ids == ["idnode.1", "idnode.2", "idnode.3"]
    m.close()
    m2, _ = make_manager(gpus=0, node="idnode", state_dir=state)
    assert m2.submit(spec([PY, "-c", "pass"])).id == "idnode.4"
