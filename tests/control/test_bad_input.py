"""Bad input and races: clear ProtocolErrors, never another exception, never an inconsistent job."""

from __future__ import annotations

import os
import random
import threading

import pytest

from agentd.control import procs
from agentd.protocol import TERMINAL_STATES, ErrorCode, JobSpec, ProtocolError
from tests.control.control_helpers import SPIN, spec


def test_unknown_ids_are_not_found(manager):
    m, rec = manager
    for call in (lambda: m.pause("nope.1"), lambda: m.resume("nope.1"), lambda: m.cancel("nope.1"),
                 lambda: m.set_priority("nope.1", 1), lambda: m.get("nope.1"), lambda: m.read_log("nope.1")):
        with pytest.raises(ProtocolError) as e:
            call()
        assert e.value.code == ErrorCode.NOT_FOUND and "nope.1" in e.value.message
    refused = [e for e in rec.events if e.kind == "action" and not e.ok]
    assert len(refused) == 4


def test_garbage_submissions(manager):
    m, _ = manager
    for bad, code in ((JobSpec(argv=["python3"], gpus=5), ErrorCode.INVALID),
                      (JobSpec(argv=["definitely-not-a-program"]), ErrorCode.INVALID),
                      ({"argv": ["python3"]}, ErrorCode.BAD_MESSAGE),
                      (None, ErrorCode.BAD_MESSAGE)):
        with pytest.raises(ProtocolError) as e:
            m.submit(bad)  # type: ignore[arg-type]
        assert e.value.code == code
    assert m.jobs() == []


def test_bad_log_stream(manager):
    # A priority outside -10..10 never reaches the manager: the Priority schema refuses it while
    # decoding, naming the field (tests/protocol/test_constraints.py).
    m, _ = manager
    job = m.submit(spec())
    with pytest.raises(ProtocolError) as e:
        m.read_log(job.id, stream="stdin")
    assert e.value.field == "stream"


def test_racing_pause_resume_cancel_leaves_job_consistent(manager):
    m, _ = manager
    job = m.submit(spec(SPIN))
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        start.wait()
        for _ in range(40):
            action = rnd.choice(["pause", "resume", "resume", "pause", "priority", "cancel" if seed == 3 else "pause"])
            try:
                if action == "pause":
                    m.pause(job.id, actor=f"w{seed}")
                elif action == "resume":
                    m.resume(job.id, actor=f"w{seed}")
                elif action == "priority":
                    m.set_priority(job.id, rnd.randint(-10, 10), actor=f"w{seed}")
                else:
                    m.cancel(job.id, grace_s=0.2, actor=f"w{seed}")
            except ProtocolError as e:
                if e.code not in (ErrorCode.CONFLICT,):
                    errors.append(e)
            except BaseException as e:  # noqa: BLE001 - the point of the test
                errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    info = m.get(job.id)
    if info.state in TERMINAL_STATES:
        assert info.state == "cancelled" and not procs.is_alive(job.pid) and info.pids == []
    else:
        assert info.state in ("running", "paused")
        m.resume(job.id)
        assert m.cancel(job.id, grace_s=1).state == "cancelled"
    assert not procs.is_alive(job.pid)


def test_two_managers_cannot_share_a_state_dir(make_manager, tmp_path):
    m, _ = make_manager(state_dir=tmp_path / "shared")
    with pytest.raises(ProtocolError) as e:
        make_manager(state_dir=tmp_path / "shared")
    assert e.value.code == ErrorCode.UNAVAILABLE and str(os.getpid()) in e.value.message
    m.close()
    make_manager(state_dir=tmp_path / "shared")  # free again once closed


def test_callbacks_may_call_back_into_the_manager(tmp_path):
    from agentd.control.manager import JobManager
    from tests.control.control_helpers import cleanup_manager, node_name

    seen: list[str] = []
    holder: list[JobManager] = []

    def on_event(e):
        if e.job_id:
            seen.append(holder[0].get(e.job_id).state)  # re-enters the manager from the callback

    m = JobManager(node_name(), tmp_path / "s", 0, on_event=on_event, on_job=lambda j: holder[0].jobs())
    holder.append(m)
    m.start()
    try:
        job = m.submit(spec())
        m.pause(job.id)
        m.cancel(job.id, grace_s=0.5)
        with pytest.raises(ProtocolError):
            m.cancel(job.id)
        assert seen and seen[-1] == "cancelled"
    finally:
        cleanup_manager(m)
