"""Migration hooks (SourceJobs/TargetJobs of agentd.control.migration) on real processes."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from agentd.control import procs
from agentd.protocol import CheckpointContract, ErrorCode, JobSpec, ProtocolError
from tests.control.control_helpers import PY, spec, wait_for

TRAINER = Path(__file__).resolve().parents[2] / "examples" / "trainer.py"
CKPT = "trainer-checkpoint.npz"


def _trainer_spec(**kw) -> JobSpec:
    kw.setdefault("gpus", 1)
    return JobSpec(argv=[sys.executable, str(TRAINER), "--steps", "100000", "--step-time", "0.005"],
                   checkpoint=CheckpointContract(signal="SIGUSR2", timeout_s=20), **kw)


def _training(m, job_id: str) -> None:
    wait_for(lambda: (m.tick(), m.get(job_id).metrics.get("step", 0) > 5)[1], 20, "the trainer to train")


def test_checkpoint_then_restart_here_from_it(make_manager):
    m, rec = make_manager(gpus=1)
    job = m.submit(_trainer_spec())
    _training(m, job.id)
    m.pause(job.id)
    m.begin_checkpoint(job.id)
    assert m.wait_exit(job.id, 20) == 0
    info = m.get(job.id)
    assert info.state == "checkpointing" and info.pids == [] and info.gpus == [0], "exit is not terminal"
    assert (m.checkpoint_dir(job.id) / CKPT).exists()
    m.update_migration(job.id, {"phase": "transferring", "bytes_sent": 0}, state="migrating")
    m.tick()
    assert m.get(job.id).state == "migrating" and m.get(job.id).migration["phase"] == "transferring"
    other = m.submit(spec(gpus=1))
    assert other.state == "queued", "a parked job keeps its GPU for a restart"
    again = m.restart_local(job.id, "target refused", paused=False, from_checkpoint=True)
    assert again.state == "running" and again.gpus == [0] and again.reason == "target refused"
    wait_for(lambda: b"resumed from step" in m.read_log(job.id)[0], 20, "the trainer to resume")
    assert m.get(other.id).state == "queued"
    states = [e.data["to"] for e in rec.events if e.kind == "job.state" and e.job_id == job.id]
    assert states == ["queued", "running", "paused", "checkpointing", "migrating", "queued", "running"]


def test_checkpoint_then_finish_migrated(manager):
    m, _ = manager
    job = m.submit(_trainer_spec())
    _training(m, job.id)
    m.begin_checkpoint(job.id)
    assert m.wait_exit(job.id, 20) == 0
    done = m.finish_migrated(job.id, "other.7", "runs on other now")
    assert done.state == "migrated" and done.migrated_to == "other.7"
    with pytest.raises(ProtocolError) as e:
        m.restart_local(job.id, "x", paused=False, from_checkpoint=True)
    assert e.value.code == ErrorCode.CONFLICT


def test_abandon_and_stop(manager):
    m, _ = manager
    stubborn = m.submit(spec([PY, "-c", "import signal,time\nsignal.signal(signal.SIGUSR1, lambda *a: None)\n"
                                        "print('ready', flush=True)\nwhile True: time.sleep(0.05)"],
                             checkpoint=CheckpointContract(timeout_s=0.3)))
    wait_for(lambda: b"ready" in m.read_log(stubborn.id)[0], 10, "the handler")
    m.begin_checkpoint(stubborn.id)
    assert m.wait_exit(stubborn.id, 0.3) is None
    back = m.abandon_checkpoint(stubborn.id, "checkpoint timed out", paused=True)
    assert back.state == "paused" and back.reason == "checkpoint timed out"
    m.resume(stubborn.id)
    m.begin_checkpoint(stubborn.id)
    m.stop(stubborn.id, grace_s=0.2)
    info = m.get(stubborn.id)
    assert info.state == "checkpointing" and not procs.is_alive(stubborn.pid)
    assert m.restart_local(stubborn.id, "restart from scratch", paused=True, from_checkpoint=False).state == "paused"
    plain = m.submit(spec())
    with pytest.raises(ProtocolError) as e:
        m.begin_checkpoint(plain.id)
    assert e.value.code == ErrorCode.INVALID and "no checkpoint contract" in e.value.message


def test_hold_and_requeue(make_manager):
    m, _ = make_manager(gpus=1)
    m.submit(spec(gpus=1))
    q = m.submit(spec(gpus=1))
    m.hold_queued(q.id)
    assert m.get(q.id).state == "migrating"
    assert m.requeue(q.id, "target full").state == "queued"
    with pytest.raises(ProtocolError):
        m.hold_queued(m.jobs()[0].id)


def test_target_side_start_resumed(make_manager, tmp_path):
    src, _ = make_manager(gpus=1)
    job = src.submit(_trainer_spec(labels={"agentd.migration": "m-1"}))
    _training(src, job.id)
    src.begin_checkpoint(job.id)
    assert src.wait_exit(job.id, 20) == 0
    incoming = tmp_path / "incoming"
    shutil.copytree(src.checkpoint_dir(job.id), incoming)

    dst, _ = make_manager(gpus=1)
    with pytest.raises(ProtocolError) as e:
        dst.admission(_trainer_spec(gpus=2))
    assert e.value.field == "gpus"
    assert dst.admission(_trainer_spec())[0] is False
    started = dst.start_resumed(src.get(job.id).spec, incoming, resumed_from=job.id, paused=True)
    assert started.state == "paused" and started.resumed_from == job.id and not incoming.exists()
    assert (dst.checkpoint_dir(started.id) / CKPT).exists()
    assert dst.find_by_label("agentd.migration", "m-1").id == started.id
    assert dst.find_by_label("agentd.migration", "nope") is None
    dst.resume(started.id)
    wait_for(lambda: b"resumed from step" in dst.read_log(started.id)[0], 20, "the job to resume on the target")
    src.finish_migrated(job.id, started.id, "moved")


def test_checkpoint_survives_a_daemon_restart(make_manager, tmp_path):
    state, node = tmp_path / "state", "ckrestart"
    m, _ = make_manager(gpus=1, node=node, state_dir=state)
    job = m.submit(_trainer_spec())
    _training(m, job.id)
    m.begin_checkpoint(job.id)
    m.close()  # agentd goes away while the job writes its checkpoint
    wait_for(lambda: (state / "jobs" / "1" / "exit.json").exists(), 20, "the checkpoint exit")
    m2, _ = make_manager(gpus=1, node=node, state_dir=state)
    info = m2.get(job.id)
    assert info.state == "checkpointing" and info.exit_code == 0, "the exit belongs to the migration"
    assert m2.wait_exit(job.id, 1) == 0
    assert (m2.checkpoint_dir(job.id) / CKPT).exists()
    assert m2.restart_local(job.id, "rolled back", paused=False, from_checkpoint=True).state == "running"
    wait_for(lambda: b"resumed from step" in m2.read_log(job.id)[0], 20, "the trainer to resume")
