"""Acceptance: real agentd processes on loopback move a real trainer between them."""

import contextlib
import os
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from agentd.protocol import ErrorCode
from agentd.protocol.jobs import CheckpointContract, JobSpec
from agentd.protocol.messages import Cancel, Jobs, Logs, Migrate, Pause, Resume, Show, Submit
from agentd.protocol.migration import MigrateStatus
from agentd.transport.client import RemoteError
from tests.agentd_proc import start_agentd

from .conftest import TRAINER, remove_node_cgroups, steps, wait_for

N = 20
pytestmark = pytest.mark.slow


def trainers(tag: str) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if tag in cmd and str(TRAINER) in cmd and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p.info["pid"])
    return out


@pytest.fixture
def daemons(tmp_path):
    started = []

    def start(node, **kw):
        # Unique node names: a node's cgroup subtree is named after it, and other tests (ours
        # or other areas') may run daemons called "a" or "b" at the same time.
        d = start_agentd(tmp_path, node=f"{node}{uuid.uuid4().hex[:6]}", **{"simulate_gpus": 2, **kw})
        started.append(d)
        with d.client(timeout_s=5) as c:
            try:
                c.call(MigrateStatus(migration_id="probe"))
            except RemoteError as exc:
                if exc.code == ErrorCode.UNAUTHORIZED:
                    pytest.fail("agentd refuses daemon commands from loopback clients (it gives them role "
                                f"'operator'): {exc.message}. Loopback has no CURVE, so daemon.py must give "
                                "loopback clients every role, 'daemon' included.")
                raise
        return d

    yield start
    for d in started:
        # Cancel through the daemon: a paused job sits in a frozen cgroup, where a plain
        # SIGKILL stays pending until someone thaws it.
        try:
            with d.client(timeout_s=5) as c:
                for j in c.call(Jobs(active_only=True)).jobs:
                    with contextlib.suppress(RemoteError):
                        c.call(Cancel(job=j.id, grace_s=1), timeout_s=15)
        except Exception:  # noqa: BLE001 - a dead daemon has nothing left to cancel
            pass
        d.stop()
        remove_node_cgroups(d.node)


def _spec(progress, **kw):
    return JobSpec(argv=[sys.executable, str(TRAINER), str(progress)], name="trainer",
                   env={"PROGRESS_FILE": str(progress), "STEP_S": "0.02", **kw.pop("env", {})},
                   checkpoint=CheckpointContract(signal="SIGUSR1", timeout_s=kw.pop("timeout_s", 10.0)), **kw)


def _show(d, job_id):
    with d.client(timeout_s=5) as c:
        return c.call(Show(job=job_id)).job


def _kill_trainers(tag):
    for pid in trainers(tag):
        try:
            os.killpg(pid, 9)
        except ProcessLookupError:
            pass


def test_trainer_migrates_between_real_daemons(daemons, tmp_path):
    a, b = daemons("a"), daemons("b")
    progress = tmp_path / "progress.txt"
    tag = str(progress)
    try:
        with a.client(timeout_s=10) as c:
            job = c.call(Submit(spec=_spec(progress))).job
        wait_for(lambda: len(steps(progress)) >= N, timeout_s=20, what=f"step {N} on a")
        with a.client(timeout_s=10) as c:
            reply = c.call(Migrate(job=job.id, target=b.ctl))
        assert "started" in reply.message
        max_alive, deadline = 0, time.monotonic() + 30
        while time.monotonic() < deadline:
            max_alive = max(max_alive, len(trainers(tag)))
            info = _show(a, job.id)
            unsettled = (None, "requested", "checkpointing", "transferring", "committing")
            if info.state in ("migrated", "running", "failed") and info.migration.get("phase") not in unsettled:
                break
            time.sleep(0.05)
        assert info.state == "migrated", (info.state, info.reason, info.migration)
        new_id = info.migrated_to
        assert new_id and new_id.startswith(b.node + ".")
        new = _show(b, new_id)
        assert new.state == "running" and new.resumed_from == job.id
        wait_for(lambda: any(p == new.pid for s, p in steps(progress)), timeout_s=10, what="trainer on b")
        for _ in range(20):
            max_alive = max(max_alive, len(trainers(tag)))
            time.sleep(0.02)
        before = [s for s, p in steps(progress) if p != new.pid]
        after = [s for s, p in steps(progress) if p == new.pid]
        assert before[-1] >= N and after[0] == before[-1] + 1
        assert max_alive == 1
    finally:
        _kill_trainers(tag)


def _wait_settled(a, job_id, tag, timeout_s=40):
    """Poll until the migration of ``job_id`` ended; max trainers seen alive meanwhile.
    ``tag``: the trainers' tag, or a function counting the job's live processes."""
    count = tag if callable(tag) else (lambda: len(trainers(tag)))
    max_alive, deadline = 0, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        max_alive = max(max_alive, count())
        info = _show(a, job_id)
        # "done" is published a moment before the job turns "migrated": wait for the state.
        if info.migration.get("phase") in ("rolled_back", "failed") or info.state == "migrated":
            # Count once more after it settled: a fast migration may end between two polls.
            return info, max(max_alive, count())
        time.sleep(0.05)
    raise AssertionError(f"migration of {job_id} did not settle: {info.state} {info.migration}")


def _assert_runs_again_on_a(a, job_id, progress, tag):
    info = _show(a, job_id)
    assert info.state == "running", (info.state, info.reason)
    wait_for(lambda: any(p == info.pid for s, p in steps(progress)), timeout_s=10, what="trainer back on a")
    before = [s for s, p in steps(progress) if p != info.pid]
    assert [s for s, p in steps(progress) if p == info.pid][0] == before[-1] + 1
    assert trainers(tag) == [info.pid] or len(trainers(tag)) == 1
    return info


@pytest.fixture
def fast_failures(tmp_path):
    """agentd arguments that make a source give up on an unreachable target within seconds."""
    cfg = tmp_path / "fast-failures.toml"
    cfg.write_text("migration_call_timeout_s = 1\nmigration_retry_s = 2\nmigration_commit_resolve_s = 3\n")
    return ["--config", str(cfg)]


def _submit_and_reach(a, progress, **kw):
    with a.client(timeout_s=10) as c:
        job = c.call(Submit(spec=_spec(progress, **kw))).job
    wait_for(lambda: len(steps(progress)) >= N, timeout_s=20, what=f"step {N} on a")
    return job


def _migrate(a, job_id, target, **kw):
    with a.client(timeout_s=10) as c:
        return c.call(Migrate(job=job_id, target=target, **kw))


@pytest.mark.parametrize("fault", ["kill9", "sigstop"])
def test_target_dies_or_hangs_mid_transfer_job_runs_again_here(daemons, tmp_path, fast_failures, fault):
    a, b = daemons("a", extra=fast_failures), daemons("b", extra=fast_failures)
    progress = tmp_path / "p.txt"
    tag = str(progress)
    try:
        job = _submit_and_reach(a, progress, env={"PAD_BYTES": str(64 << 20)})
        _migrate(a, job.id, b.ctl)
        wait_for(lambda: not trainers(tag), timeout_s=10, what="trainer to checkpoint and exit", poll_s=0.005)
        if fault == "kill9":
            b.kill9()
        else:
            os.kill(b.pid, 19)  # SIGSTOP: the port stays open, nothing answers (a blocked peer)
        info, max_alive = _wait_settled(a, job.id, tag)
        assert info.migration["phase"] == "rolled_back", info.migration
        assert "unreachable" in info.migration["reason"] or "did not answer" in info.migration["reason"], info.migration
        _assert_runs_again_on_a(a, job.id, progress, tag)
        assert max_alive <= 1
    finally:
        if fault == "sigstop" and b.proc.poll() is None:
            os.kill(b.pid, 18)
        _kill_trainers(tag)


def test_ignored_checkpoint_signal_keeps_running(daemons, tmp_path):
    a, b = daemons("a"), daemons("b")
    progress = tmp_path / "p.txt"
    tag = str(progress)
    try:
        job = _submit_and_reach(a, progress, env={"IGNORE_CKPT": "catch"}, timeout_s=1.0)
        pid = _show(a, job.id).pid
        _migrate(a, job.id, b.ctl)
        info, max_alive = _wait_settled(a, job.id, tag)
        assert info.state == "running" and info.pid == pid
        assert "did not checkpoint within 1 s" in info.migration["reason"]
        assert max_alive == 1 and trainers(tag) == [pid]
    finally:
        _kill_trainers(tag)


def test_migrate_right_after_submit_waits_for_the_checkpoint_handler(daemons, tmp_path):
    """Asked before the job installed its SIGUSR1 handler, agentd waits instead of killing it."""
    a, b = daemons("a"), daemons("b")
    progress = tmp_path / "p.txt"
    tag = str(progress)
    try:
        with a.client(timeout_s=10) as c:
            job = c.call(Submit(spec=_spec(progress, env={"HANDLER_DELAY_S": "1.5"}))).job
        wait_for(lambda: trainers(tag), timeout_s=10, what="trainer process on a")
        _migrate(a, job.id, b.ctl)
        info, max_alive = _wait_settled(a, job.id, tag)
        assert info.state == "migrated", (info.state, info.reason, info.migration)
        assert info.exit_code == 0, "the checkpoint signal must not have killed the job"
        new = _show(b, info.migrated_to)
        wait_for(lambda: any(p == new.pid for _, p in steps(progress)), timeout_s=10, what="trainer on b")
        assert max_alive == 1 and trainers(tag) == [new.pid]
    finally:
        _kill_trainers(tag)


def test_target_quota_refusal_restarts_here(daemons, tmp_path):
    a = daemons("a")
    b = daemons("b", extra=["--migration-quota", "1M"])
    progress = tmp_path / "p.txt"
    tag = str(progress)
    try:
        job = _submit_and_reach(a, progress, env={"PAD_BYTES": str(4 << 20)})
        _migrate(a, job.id, b.ctl)
        info, max_alive = _wait_settled(a, job.id, tag)
        assert info.migration["phase"] == "rolled_back" and "migration quota (1048576 bytes" in info.migration["reason"], info.migration
        _assert_runs_again_on_a(a, job.id, progress, tag)
        assert max_alive <= 1
    finally:
        _kill_trainers(tag)


def test_paused_job_arrives_paused(daemons, tmp_path):
    a, b = daemons("a"), daemons("b")
    progress = tmp_path / "p.txt"
    tag = str(progress)
    try:
        job = _submit_and_reach(a, progress)
        with a.client(timeout_s=10) as c:
            c.call(Pause(job=job.id))
        _migrate(a, job.id, b.ctl)
        info, max_alive = _wait_settled(a, job.id, tag)
        assert info.state == "migrated", info.migration
        new = _show(b, info.migrated_to)
        assert new.state == "paused" and max_alive == 1
        n = len(steps(progress))
        time.sleep(0.3)
        assert len(steps(progress)) <= n + 3  # frozen right after start
    finally:
        _kill_trainers(tag)


def test_queued_job_moves_to_target(daemons, tmp_path):
    a = daemons("a", simulate_gpus=1)
    b = daemons("b")
    p1, p2 = tmp_path / "p1.txt", tmp_path / "p2.txt"
    try:
        _submit_and_reach(a, p1, gpus=1)
        with a.client(timeout_s=10) as c:
            queued = c.call(Submit(spec=_spec(p2, gpus=1))).job
        assert queued.state == "queued"
        _migrate(a, queued.id, b.ctl)
        info, _ = _wait_settled(a, queued.id, str(p2))
        assert info.state == "migrated", info.migration
        new = wait_for(lambda: (lambda j: j if j.state != "queued" else None)(_show(b, info.migrated_to)),
                       timeout_s=15, what="queued job to start on b")
        assert new.state == "running" and new.resumed_from == queued.id, (new.state, new.reason)
        wait_for(lambda: steps(p2), timeout_s=10, what="queued job to start on b")
        assert steps(p2)[0][0] == 1
    finally:
        _kill_trainers(str(p1))
        _kill_trainers(str(p2))


def test_source_killed_mid_migration_recovers_on_restart(daemons, tmp_path, fast_failures):
    a, b = daemons("a", extra=fast_failures), daemons("b", extra=fast_failures)
    progress = tmp_path / "p.txt"
    tag = str(progress)
    try:
        job = _submit_and_reach(a, progress, env={"PAD_BYTES": str(64 << 20)})
        _migrate(a, job.id, b.ctl)
        wait_for(lambda: not trainers(tag), timeout_s=10, what="trainer to checkpoint and exit", poll_s=0.005)
        a.kill9()
        assert len(trainers(tag)) <= 1  # on a slow machine the commit may just have made it
        a.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert len(trainers(tag)) <= 1
            info = _show(a, job.id)
            if info.state in ("migrated", "running") and info.migration.get("phase") in (None, "done", "rolled_back"):
                break
            time.sleep(0.05)
        # Either outcome is right; what matters: exactly one copy, resumed from the checkpoint.
        try:
            wait_for(lambda: len(trainers(tag)) == 1, timeout_s=10, what="one trainer after recovery")
        except pytest.fail.Exception:
            info = _show(a, job.id)
            there = _show(b, info.migrated_to) if info.migrated_to else None
            pytest.fail(f"no trainer after recovery: on a {info.state} {info.reason!r} {info.migration}; "
                        f"on b {there and (there.state, there.reason, there.exit_code)}")
        pid = trainers(tag)[0]
        wait_for(lambda: any(p == pid for s, p in steps(progress)), timeout_s=10, what="trainer stepping")
        before = [s for s, p in steps(progress) if p != pid]
        assert [s for s, p in steps(progress) if p == pid][0] == before[-1] + 1
    finally:
        _kill_trainers(tag)


def test_real_target_rejects_corrupted_checkpoint_and_refuses_late_commit(daemons, tmp_path):
    """A source's view over real zmq: a flipped byte is caught by the digest at commit."""
    from agentd.protocol.migration import MigrateAbort, MigrateChunk, MigrateCommit, MigrateOffer

    from .tarfiles import iter_chunks, pack

    b = daemons("b")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "state.json").write_text('{"step": 3}')
    (ckpt / "w.bin").write_bytes(os.urandom(3 << 20))
    info = pack(ckpt, tmp_path / "c.tar")
    spec = _spec(tmp_path / "p.txt")
    with b.client(timeout_s=10) as c:
        c.call(MigrateOffer(migration_id="bad1", spec=spec, source_node="x", source_job="x.1",
                            size_bytes=info.size_bytes, sha256=info.sha256))
        for off, data in iter_chunks(info.path):
            if off == 1 << 20:
                data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            c.call(MigrateChunk(migration_id="bad1", offset=off, data=data))
        with pytest.raises(RemoteError) as e:
            c.call(MigrateCommit(migration_id="bad1", sha256=info.sha256))
        assert e.value.code == ErrorCode.FAILED and "arrived corrupted" in e.value.message
        st = c.call(MigrateStatus(migration_id="bad1"))
        assert st.phase == "aborted" and "digest mismatch" in st.message
        with pytest.raises(RemoteError) as e:
            c.call(MigrateChunk(migration_id="bad1", offset=0, data=b"x"))
        assert e.value.code == ErrorCode.NOT_FOUND
        assert c.call(MigrateAbort(migration_id="bad1")).message == "aborted"
        assert not c.call(Jobs()).jobs
    assert not (b.state_dir / "migrations" / "incoming" / "bad1").exists()


def test_job_without_contract_is_refused_with_the_real_criu_verdict(daemons, tmp_path):
    """No checkpoint contract: agentd runs the real `criu check` and, where it fails (Debian
    12's criu 3.17 on recent kernels) or criu is absent, refuses naming why and offering
    --restart; the job keeps running untouched."""
    import shutil

    from agentd.control.criu import criu_status

    a, b = daemons("a"), daemons("b")
    with a.client(timeout_s=30) as c:
        job = c.call(Submit(spec=JobSpec(argv=[sys.executable, "-c", "import time; time.sleep(600)"], name="nockpt"))).job
        ok, why = criu_status()
        if ok:
            pytest.skip("criu check passes on this node, so such a job moves with CRIU "
                        "(test_job_without_contract_moves_with_criu_and_keeps_counting)")
        with pytest.raises(RemoteError) as e:
            c.call(Migrate(job=job.id, target=b.ctl))
    msg = e.value.message
    assert e.value.code == ErrorCode.INVALID and "no checkpoint contract" in msg and "--restart" in msg, msg
    if shutil.which("criu"):
        assert "`criu check` fails on this kernel: " in msg and why.split(": ", 1)[1] in msg, msg
    else:
        assert "CRIU is not installed" in msg, msg
    assert _show(a, job.id).state == "running"


EXAMPLE_TRAINER = Path(__file__).resolve().parents[2] / "examples" / "trainer.py"


def test_example_trainer_resumes_on_b_at_its_step_and_keeps_reporting_samples(daemons, tmp_path):
    """The issue's acceptance run with examples/trainer.py: step >= N on A, migrate, B resumes at
    >= N (not 0) and its samples counter keeps growing; one trainer process at every poll."""
    a, b = daemons("a"), daemons("b")
    out = str(tmp_path / "weights.npy")  # unique in the command line: finds our processes

    def alive():
        return [p for p in psutil.process_iter(["cmdline", "status"])
                if out in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE]

    spec = JobSpec(argv=[sys.executable, str(EXAMPLE_TRAINER), "--steps", "1000000", "--step-time", "0.01",
                         "--checkpoint-mb", "8", "--out", out],
                   name="example-trainer", counters=["samples"], checkpoint=CheckpointContract(signal="SIGUSR1", timeout_s=30))
    try:
        with a.client(timeout_s=10) as c:
            job = c.call(Submit(spec=spec)).job
        wait_for(lambda: _show(a, job.id).metrics.get("step", 0) >= N, timeout_s=60, what=f"step {N} on a")
        with a.client(timeout_s=10) as c:
            c.call(Migrate(job=job.id, target=b.ctl))
        info, max_alive = _wait_settled(a, job.id, lambda: len(alive()), timeout_s=60)
        assert info.state == "migrated", (info.state, info.migration)
        last_on_a = info.metrics["step"]
        assert last_on_a >= N
        new = wait_for(lambda: (lambda j: j if j.metrics.get("step") else None)(_show(b, info.migrated_to)),
                       timeout_s=30, what="the trainer's first report on b")
        assert new.resumed_from == job.id and new.state == "running"
        assert new.metrics["step"] >= last_on_a, f"b started at step {new.metrics['step']}, a had reached {last_on_a}"
        s0 = new.metrics["samples"]
        wait_for(lambda: _show(b, new.id).metrics["samples"] > s0 + 32 * 5, timeout_s=20, what="samples to keep growing on b")
        max_alive = max(max_alive, len(alive()))
        assert max_alive == 1 and len(alive()) == 1
    finally:
        for p in alive():
            p.kill()



CRIU_TEST_BUILD = Path("/opt/fleetdeck-test/criu/criu")  # criu 4.1 (scripts/system-deps.sh)


def _working_criu() -> str | None:
    """A criu whose `criu check` passes here: $AGENTD_CRIU or the test build."""
    from agentd.control.criu import criu_status

    for candidate in (os.environ.get("AGENTD_CRIU"), str(CRIU_TEST_BUILD)):
        if candidate and criu_status(candidate.split())[0]:
            return candidate
    return None


def _counter_job(tmp_path):
    """A job without a checkpoint contract whose only state is in memory: a counter it prints
    and appends to a file. (spec, the file, the counts so far, its live processes)."""
    progress = tmp_path / "count.txt"
    code = ("import sys, time\nn = 0\nwhile True:\n    n += 1\n    print(f'count {n}', flush=True)\n"
            "    open(sys.argv[1], 'a').write(f'{n}\\n')\n    time.sleep(0.02)\n")
    spec = JobSpec(argv=[sys.executable, "-c", code, str(progress)], name="no-contract")

    def counts():
        """Counts written so far (complete lines only: the job may be mid-write)."""
        return [int(x) for x in progress.read_text().split("\n")[:-1]] if progress.exists() else []

    def alive():
        return [p for p in psutil.process_iter(["cmdline", "status"])
                if str(progress) in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE]

    return spec, counts, alive


def _counted_from_one(counts) -> bool:
    """Every count from 1 on, once and in order: the process went on from its own count."""
    seen = counts()  # once: the job keeps appending
    return seen == list(range(1, len(seen) + 1))


def _need_criu() -> dict[str, str]:
    exe = _working_criu()
    if exe is None:
        pytest.skip("no criu here passes `criu check` (Debian 12's 3.17 fails on this kernel; "
                    "scripts/system-deps.sh unpacks criu 4.1 into /opt/fleetdeck-test as root)")
    return {"AGENTD_CRIU": exe}


def _count_then_migrate(a, b, spec, counts, alive, pause=False):
    """Run the counter on A to N (then pause it), migrate it to B; (job as it ran on A,
    settled info, max alive)."""
    with a.client(timeout_s=10) as c:
        c.call(Submit(spec=spec))
    wait_for(lambda: len(counts()) >= N, timeout_s=20, what="counting on a")
    with a.client(timeout_s=10) as c:
        job = c.call(Jobs(active_only=True)).jobs[0]
        if pause:
            c.call(Pause(job=job.id))
        c.call(Migrate(job=job.id, target=b.ctl))
    info, max_alive = _wait_settled(a, job.id, lambda: len(alive()), timeout_s=60)
    return job, info, max_alive


def test_job_without_contract_moves_with_criu_and_keeps_counting(daemons, tmp_path):
    """No checkpoint contract, criu check passes on both nodes: the process is dumped on A,
    restored on B with its memory (the counter goes on from where it was), its output reaches
    B's log; one copy at every poll."""
    env = _need_criu()
    a, b = daemons("a", env=env), daemons("b", env=env)
    spec, counts, alive = _counter_job(tmp_path)
    try:
        job, info, max_alive = _count_then_migrate(a, b, spec, counts, alive)
        assert info.state == "migrated", (info.state, info.reason, info.migration.get("reason"))
        new = _show(b, info.migrated_to)
        assert new.state == "running" and new.resumed_from == job.id
        before = len(counts())
        wait_for(lambda: len(counts()) > before + 10, timeout_s=20, what="counting on b")
        assert _counted_from_one(counts), "the restored process must go on from its own count"
        with b.client(timeout_s=10) as c:
            log = c.call(Logs(job=new.id)).data.decode()
        on_b = [int(line.split()[1]) for line in log.splitlines() if line.startswith("count ")]
        assert on_b and on_b[0] > N, f"b's log must go on from a's count, not restart: {log[:200]!r}"
        assert max(max_alive, len(alive())) == 1
    finally:
        for p in alive():
            p.kill()


def test_paused_job_moves_with_criu_and_arrives_paused(daemons, tmp_path):
    env = _need_criu()
    a, b = daemons("a", env=env), daemons("b", env=env)
    spec, counts, alive = _counter_job(tmp_path)
    try:
        _job, info, max_alive = _count_then_migrate(a, b, spec, counts, alive, pause=True)
        assert info.state == "migrated", (info.state, info.migration.get("reason"))
        assert _show(b, info.migrated_to).state == "paused" and max_alive == 1
        frozen_at = len(counts())
        time.sleep(0.4)
        assert len(counts()) <= frozen_at + 2, "restored paused: it must not run on"
        with b.client(timeout_s=10) as c:
            c.call(Resume(job=info.migrated_to))
        wait_for(lambda: len(counts()) > frozen_at + 10, timeout_s=20, what="counting after resume on b")
        assert _counted_from_one(counts)
    finally:
        for p in alive():
            p.kill()


def _assert_restored_here(a, job, counts, alive, max_alive):
    """The job counts on, on A, from where its image left it; one copy all along."""
    before = len(counts())
    wait_for(lambda: len(counts()) > before + 10, timeout_s=20, what="counting again on a")
    assert _counted_from_one(counts), "restored from the image, not restarted"
    assert _show(a, job.id).state == "running" and max(max_alive, len(alive())) == 1


def test_criu_image_refused_by_the_target_is_restored_here(daemons, tmp_path):
    """The job is dumped, then the target refuses the image (over its quota): the source
    restores the job from its image, so it goes on counting here, never from 1."""
    env = _need_criu()
    a, b = daemons("a", env=env), daemons("b", env=env, extra=["--migration-quota", "4K"])
    spec, counts, alive = _counter_job(tmp_path)
    try:
        job, info, max_alive = _count_then_migrate(a, b, spec, counts, alive)
        assert info.migration["phase"] == "rolled_back" and "quota" in info.migration["reason"], info.migration
        _assert_restored_here(a, job, counts, alive, max_alive)
    finally:
        for p in alive():
            p.kill()


def test_criu_restore_failing_on_the_target_restores_the_job_here(daemons, tmp_path):
    """`criu restore` fails on B (its criu passes `check` but not `restore`): the commit is
    refused, B runs nothing, and A restores the job from the image it kept."""
    env = _need_criu()
    broken = tmp_path / "criu-no-restore"
    broken.write_text(f'#!/bin/sh\n[ "$1" = restore ] && {{ echo "injected restore failure" >&2; exit 1; }}\nexec {env["AGENTD_CRIU"]} "$@"\n')
    broken.chmod(0o755)
    a, b = daemons("a", env=env), daemons("b", env={"AGENTD_CRIU": str(broken)})
    spec, counts, alive = _counter_job(tmp_path)
    try:
        job, info, max_alive = _count_then_migrate(a, b, spec, counts, alive)
        assert info.migration["phase"] == "rolled_back" and "could not start" in info.migration["reason"], info.migration
        _assert_restored_here(a, job, counts, alive, max_alive)
        with b.client(timeout_s=10) as c:
            assert not c.call(Jobs(active_only=True)).jobs
    finally:
        for p in alive():
            p.kill()


def test_criu_target_that_cannot_restore_leaves_the_job_untouched(daemons, tmp_path):
    env = _need_criu()
    a, b = daemons("a", env=env), daemons("b", env={"AGENTD_CRIU": "/bin/false"})
    spec, counts, alive = _counter_job(tmp_path)
    try:
        job, info, _ = _count_then_migrate(a, b, spec, counts, alive)
        assert info.migration["phase"] == "failed" and "cannot restore CRIU images" in info.migration["reason"], info.migration
        assert info.state == "running" and info.pid == job.pid
    finally:
        for p in alive():
            p.kill()
