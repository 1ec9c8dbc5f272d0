"""The Slurm backend against a real single-node Slurm (tests/slurm/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd.control.slurm import NICE_PER_LEVEL, SlurmBackend, detect_slurm
from agentd.protocol.errors import ErrorCode, ProtocolError
from tests.waiting import wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.root, pytest.mark.timeout(120)]


@pytest.fixture
def backend(slurm_cluster):
    b = SlurmBackend("n1", slurm_node=slurm_cluster.node, commands=slurm_cluster.commands(), refresh_s=0.0)
    yield b
    slurm_cluster.cancel_all()


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _wait(cond, timeout_s: float, what: str):
    return wait_for(cond, timeout_s, what, poll_s=0.1)


def test_detect_slurm_sees_the_test_cluster(slurm_cluster):
    assert detect_slurm(slurm_cluster.commands()) is None


def test_running_job_is_listed_with_pids(slurm_cluster, backend):
    sid = slurm_cluster.sbatch("-J", "sleeper")
    slurm_cluster.wait_state(sid, "RUNNING")
    job = _wait(lambda: next((j for j in backend.jobs() if j.id == f"n1.slurm-{sid}" and j.pids), None), 10,
                "running Slurm job listed with pids")
    assert job.backend == "slurm" and job.state == "running" and job.name == "sleeper"
    assert job.node == "n1" and job.spec.labels["slurm_job_id"] == str(sid)
    assert all(Path(f"/proc/{p}").exists() for p in job.pids)
    cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes() for p in job.pids]
    assert any(c.startswith(b"sleep\x00300") for c in cmdlines), cmdlines
    # proctrack/linuxproc: the job has no cgroup of its own, and the backend says so
    assert job.cgroup is None and backend.cgroup_ref(job.id) is None
    assert backend.probes()[job.id] == (None, job.pids)  # telemetry attaches by pid, as for local jobs
    assert backend.get(str(sid)).id == job.id and backend.get(f"slurm-{sid}").id == job.id


def test_suspend_stops_processes_and_resume_continues_them(slurm_cluster, backend):
    sid = slurm_cluster.sbatch()
    slurm_cluster.wait_state(sid, "RUNNING")
    jid = backend.job_id(sid)
    pids = _wait(lambda: backend.get(jid).pids, 10, "pids of the job")
    paused = backend.pause(jid)
    assert paused.state == "paused"
    assert slurm_cluster.state(sid) == "SUSPENDED"
    # the kernel's view, not Slurm's: every process of the job is stopped
    _wait(lambda: all(_proc_state(p) == "T" for p in pids), 5, f"processes {pids} stopped (state T)")
    assert backend.pause(jid).state == "paused"  # no-op when paused
    resumed = backend.resume(jid)
    assert resumed.state == "running" and slurm_cluster.state(sid) == "RUNNING"
    _wait(lambda: all(_proc_state(p) in ("S", "R") for p in pids), 5, f"processes {pids} running again")


def test_priority_on_pending_job_changes_slurm_nice_and_order(slurm_cluster, backend):
    blocker = slurm_cluster.sbatch("--exclusive")
    slurm_cluster.wait_state(blocker, "RUNNING")
    first = slurm_cluster.sbatch("-J", "first")
    second = slurm_cluster.sbatch("-J", "second")
    slurm_cluster.wait_state(second, "PENDING")
    before = {j.spec.labels["slurm_job_id"]: j for j in backend.jobs() if j.state == "queued"}
    assert {str(first), str(second)} <= set(before)
    assert int(before[str(first)].spec.labels["slurm_priority"]) > int(before[str(second)].spec.labels["slurm_priority"])

    job = backend.set_priority(backend.job_id(second), 5)
    assert job.state == "queued" and job.priority == 5
    assert job.spec.labels["slurm_nice"] == str(-5 * NICE_PER_LEVEL)
    assert f"Nice={-5 * NICE_PER_LEVEL}" in slurm_cluster.run("scontrol", "show", "job", str(second))
    # Slurm now ranks the later job ahead of the earlier one
    assert int(job.spec.labels["slurm_priority"]) > int(backend.get(backend.job_id(first)).spec.labels["slurm_priority"])

    # A priority outside -10..10 never reaches a backend: the Priority schema refuses it while
    # decoding (tests/protocol/test_codec.py).

    running = backend.set_priority(backend.job_id(blocker), 1)
    assert "does not change the CPU share" in running.reason


def test_cancel_and_errors_carry_slurms_message(slurm_cluster, backend):
    sid = slurm_cluster.sbatch()
    slurm_cluster.wait_state(sid, "RUNNING")
    job = backend.cancel(backend.job_id(sid))
    assert job.state == "cancelled" and slurm_cluster.state(sid) == "CANCELLED"
    assert backend.cancel(job.id).state == "cancelled"  # no-op
    with pytest.raises(ProtocolError) as err:
        backend.pause(job.id)
    assert err.value.code == ErrorCode.CONFLICT and "cancelled" in err.value.message
    with pytest.raises(ProtocolError) as err:
        backend.get("n1.slurm-999999")
    assert err.value.code == ErrorCode.NOT_FOUND and "999999" in err.value.message
    with pytest.raises(ProtocolError) as err:
        backend.set_priority(job.id, 3)
    assert err.value.code == ErrorCode.CONFLICT
    # a refusal that only Slurm knows about comes back in Slurm's words
    with pytest.raises(ProtocolError) as err:
        backend._act(["scontrol", "resume", str(sid)], job)
    assert "Slurm refused scontrol resume" in err.value.message


def test_migrate_requeues_with_node_hint(slurm_cluster, backend):
    sid = slurm_cluster.sbatch("-J", "mover")
    slurm_cluster.wait_state(sid, "RUNNING")
    job = backend.migrate(backend.job_id(sid), target=f"tcp://{slurm_cluster.node}:7710")
    assert "Slurm requeued job" in job.reason and "restarts from the beginning" in job.reason
    shown = slurm_cluster.run("scontrol", "show", "job", str(sid))
    assert f"ReqNodeList={slurm_cluster.node}" in shown and "Restarts=1" in shown
    slurm_cluster.wait_state(sid, "RUNNING", timeout_s=40)
    again = backend.get(job.id)
    assert again.state == "running" and again.spec.labels["slurm_restarts"] == "1"
    with pytest.raises(ProtocolError) as err:
        backend.migrate(job.id, target="tcp://no-such-node:7710")
    assert err.value.code == ErrorCode.INVALID and slurm_cluster.node in err.value.message


def test_backend_for_follows_the_slurm_switch(slurm_cluster, tmp_path):
    from agentd.control.slurm import SlurmCommands, SlurmUnavailable, backend_for

    cmds = slurm_cluster.commands()
    b = backend_for("n1", "auto", commands=cmds, slurm_node=slurm_cluster.node)
    assert b is not None and b.slurm_node == slurm_cluster.node
    assert backend_for("n1", "off", commands=cmds) is None
    nowhere = SlurmCommands(env={"PATH": str(tmp_path)})
    assert backend_for("n1", "auto", commands=nowhere) is None
    with pytest.raises(SlurmUnavailable, match="scontrol is not on PATH"):
        backend_for("n1", "on", commands=nowhere)


def test_job_info_travels_on_the_wire(slurm_cluster, backend):
    import msgspec

    from agentd.protocol.jobs import JobInfo

    sid = slurm_cluster.sbatch("-J", "wire")
    slurm_cluster.wait_state(sid, "RUNNING")
    job = backend.get(backend.job_id(sid))
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(job), type=JobInfo) == job


def test_poll_changes_reports_each_change_once(slurm_cluster, backend):
    backend.poll_changes()  # whatever earlier tests left: reported now, not again
    sid = slurm_cluster.sbatch("-J", "watched")
    slurm_cluster.wait_state(sid, "RUNNING")
    jid = backend.job_id(sid)
    changed = _wait(lambda: [j for j in backend.poll_changes() if j.id == jid and j.pids], 10, "new running job reported")
    assert changed[0].state == "running"
    assert not [j for j in backend.poll_changes() if j.id == jid]  # nothing new
    slurm_cluster.run("scancel", str(sid))
    slurm_cluster.wait_state(sid, "CANCELLED")
    gone = _wait(lambda: [j for j in backend.poll_changes() if j.id == jid], 10, "cancel reported")
    assert gone[0].state == "cancelled"


def test_slurm_refusal_reaches_the_caller_in_slurms_words(slurm_cluster):
    """A plain user may not raise priority (negative nice): Slurm says no, and so do we."""
    import pwd

    from agentd.control.slurm import SlurmCommands

    user = pwd.getpwnam("nobody")
    as_nobody = SlurmCommands(env=slurm_cluster.env, timeout_s=15.0, run_as="nobody")
    blocker = slurm_cluster.sbatch("--exclusive")
    slurm_cluster.wait_state(blocker, "RUNNING")
    sid = int(as_nobody.run(["sbatch", "--parsable", "-o", "/dev/null", "-e", "/dev/null", "-D", "/tmp",
                             "--wrap", "sleep 300"]).strip().split(";")[0])
    try:
        slurm_cluster.wait_state(sid, "PENDING")
        backend = SlurmBackend("n1", slurm_node=slurm_cluster.node, commands=as_nobody, refresh_s=0.0)
        assert backend.get(backend.job_id(sid)).spec.labels["user"] == user.pw_name
        with pytest.raises(ProtocolError) as err:
            backend.set_priority(backend.job_id(sid), 5)
        assert err.value.code == ErrorCode.UNAUTHORIZED, err.value
        assert "Slurm refused scontrol update" in err.value.message and "denied" in err.value.message.lower()
        lowered = backend.set_priority(backend.job_id(sid), -2)  # lowering one's own job is allowed
        assert lowered.priority == -2 and lowered.spec.labels["slurm_nice"] == "2000"
    finally:
        slurm_cluster.cancel_all()
