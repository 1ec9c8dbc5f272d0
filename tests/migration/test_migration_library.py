"""The migration state machine against real trainer processes, two in-process nodes."""

import threading
import time

import pytest

from agentd.control.migration import MIGRATION_LABEL
from agentd.protocol import ProtocolError

from .conftest import steps, trainer_spec, wait_for

N = 15


class OneCopyWatch:
    """Polls every few ms that at most one trainer runs across all nodes."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.max_alive = 0
        self.polls = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            self.max_alive = max(self.max_alive, self.cluster.alive_total())
            self.polls += 1
            self._stop.wait(0.005)

    def stop(self):
        self._stop.set()
        self._t.join(5)
        return self.max_alive


def _start_trainer(a, tmp_path, **kw):
    progress = tmp_path / "progress.txt"
    job = a.jobs.submit(trainer_spec(progress, **kw))
    wait_for(lambda: len(steps(progress)) >= N, what=f"trainer to reach step {N}")
    return job, progress


def _migrate(src, job_id, target, **kw):
    rec = src.source.start(job_id, target, **kw)
    return src.source.wait(rec.id, 30)


def test_job_moves_and_resumes_at_its_step(cluster, tmp_path):
    a, b = cluster.add("a"), cluster.add("b")
    job, progress = _start_trainer(a, tmp_path)
    watch = OneCopyWatch(cluster)
    rec = _migrate(a, job.id, "b")
    assert rec.phase == "done", rec.reason
    new = b.jobs.get(rec.new_job_id)
    assert new.state == "running" and new.resumed_from == job.id
    assert new.spec.labels[MIGRATION_LABEL] == rec.id
    pid_b = new.pid
    before = [s for s, p in steps(progress) if p != pid_b]
    wait_for(lambda: len([1 for s, p in steps(progress) if p == pid_b]) >= 5, what="trainer on b to report")
    after = [s for s, p in steps(progress) if p == pid_b]
    assert before[-1] >= N and after[0] == before[-1] + 1, (before[-3:], after[:3])
    assert watch.stop() == 1 and watch.polls > 10
    src = a.jobs.get(job.id)
    assert src.state == "migrated" and src.migrated_to == rec.new_job_id
    assert not (a.root / "ckpt" / job.id).exists(), "source checkpoint must go once the target runs the job"
    phases = [s["phase"] for s in a.journal.steps(rec.id) if s["side"] == "source"]
    assert phases[:4] == ["requested", "checkpointing", "checkpointing", "transferring"] and phases[-1] == "done"
    kinds = {e.data.get("phase") for e in a.events if e.kind == "migration"}
    assert {"checkpointing", "transferring", "committing"} <= kinds
    assert b.journal.get(rec.id, "target").phase == "committed"


def test_job_asked_before_it_handles_the_signal_is_waited_for(cluster, tmp_path):
    """Signalled before its handler exists, the job would die of SIGUSR1: the source waits."""
    a, b = cluster.add("a"), cluster.add("b")
    progress = tmp_path / "progress.txt"
    job = a.jobs.submit(trainer_spec(progress, handler_delay_s=1.0))
    watch = OneCopyWatch(cluster)
    rec = _migrate(a, job.id, "b")
    assert rec.phase == "done", rec.reason
    assert a.jobs.get(job.id).exit_code == 0, "the checkpoint signal must not have killed the job"
    assert any("has not installed a handler for SIGUSR1" in st["message"] for st in a.journal.steps(rec.id))
    new = b.jobs.get(rec.new_job_id)
    wait_for(lambda: any(p == new.pid for _, p in steps(progress)), what="trainer on b to step")
    assert watch.stop() == 1


def test_paused_job_without_a_handler_is_refused_untouched(cluster, tmp_path):
    a, b = cluster.add("a"), cluster.add("b")
    progress = tmp_path / "progress.txt"
    job = a.jobs.submit(trainer_spec(progress, handler_delay_s=30.0))
    wait_for(lambda: a.jobs.get(job.id).pid is not None, what="trainer to start")
    a.jobs.pause(job.id)
    rec = _migrate(a, job.id, "b")
    assert rec.phase == "failed" and "has not installed a handler for SIGUSR1" in rec.reason
    assert "resume it" in rec.reason
    info = a.jobs.get(job.id)
    assert info.state == "paused" and info.exit_code is None and not b.jobs.jobs


def test_job_that_ignores_the_signal_is_not_signalled(cluster, tmp_path):
    a, b = cluster.add("a"), cluster.add("b")
    job, _progress = _start_trainer(a, tmp_path, ignore="1", timeout_s=0.5)
    pid = a.jobs.get(job.id).pid
    rec = _migrate(a, job.id, "b")
    assert rec.phase == "failed" and "ignores SIGUSR1" in rec.reason and "keeps running here" in rec.reason
    info = a.jobs.get(job.id)
    assert info.state == "running" and info.pid == pid and info.exit_code is None
    assert cluster.alive_total() == 1 and not b.jobs.jobs


def test_ignored_checkpoint_signal_keeps_job_running_here(cluster, tmp_path):
    a, b = cluster.add("a"), cluster.add("b")
    job, progress = _start_trainer(a, tmp_path, ignore="catch", timeout_s=0.5)
    rec = _migrate(a, job.id, "b")
    assert rec.phase == "rolled_back" and "did not checkpoint within 0.5 s" in rec.reason
    info = a.jobs.get(job.id)
    assert info.state == "running" and info.exit_code is None and "keeps running here" in info.reason
    n = len(steps(progress))
    wait_for(lambda: len(steps(progress)) > n + 3, what="job to keep stepping")
    assert cluster.alive_total() == 1 and not b.jobs.jobs


def _assert_restarted_locally(cluster, a, job, progress, rec):
    info = a.jobs.get(job.id)
    assert info.state == "running" and info.pid is not None
    before = [s for s, p in steps(progress) if p != info.pid]
    wait_for(lambda: any(p == info.pid for s, p in steps(progress)), what="local restart to step")
    first = [s for s, p in steps(progress) if p == info.pid][0]
    assert first == before[-1] + 1, "restart must resume from the checkpoint"
    assert cluster.alive_total() == 1


def test_target_dies_mid_transfer_job_restarts_here(cluster, tmp_path):
    a, b = cluster.add("a", retry_s=0.5), cluster.add("b")
    job, progress = _start_trainer(a, tmp_path, pad_bytes=8 << 20)
    cluster.link("b").down_after = 4  # preflight, offer and a couple of chunks
    watch = OneCopyWatch(cluster)
    rec = _migrate(a, job.id, "b")
    assert rec.phase == "rolled_back" and "unreachable" in rec.reason, rec.reason
    _assert_restarted_locally(cluster, a, job, progress, rec)
    assert watch.stop() == 1
    assert not b.jobs.jobs


def test_dropped_connection_resumes_transfer_from_target_offset(cluster, tmp_path):
    a, b = cluster.add("a", retry_s=5), cluster.add("b")
    job, _progress = _start_trainer(a, tmp_path, pad_bytes=8 << 20)
    cluster.link("b").flaky = {5, 6, 9}
    rec = _migrate(a, job.id, "b")
    assert rec.phase == "done", rec.reason
    assert b.jobs.get(rec.new_job_id).state == "running"
    assert cluster.alive_total() == 1


def test_corrupt_chunk_is_caught_by_digest_and_rolled_back(cluster, tmp_path):
    a, b = cluster.add("a"), cluster.add("b")
    job, progress = _start_trainer(a, tmp_path, pad_bytes=3 << 20)
    cluster.link("b").corrupt_chunk = 1 << 20
    rec = _migrate(a, job.id, "b")
    assert rec.phase == "rolled_back" and "corrupted" in rec.reason, rec.reason
    _assert_restarted_locally(cluster, a, job, progress, rec)
    assert b.journal.get(rec.id, "target").phase == "aborted"
    assert not (b.root / "incoming" / rec.id).exists()


def test_target_quota_refuses_offer_job_restarts_here(cluster, tmp_path):
    a, _b = cluster.add("a"), cluster.add("b", quota_bytes=1 << 20)
    job, progress = _start_trainer(a, tmp_path, pad_bytes=2 << 20)
    rec = _migrate(a, job.id, "b")
    assert rec.phase == "rolled_back" and "migration quota" in rec.reason, rec.reason
    _assert_restarted_locally(cluster, a, job, progress, rec)


def test_lost_commit_reply_is_resolved_without_a_second_copy(cluster, tmp_path):
    a, _b = cluster.add("a", commit_resolve_s=5), cluster.add("b")
    job, _progress = _start_trainer(a, tmp_path)
    link = cluster.link("b")
    link.drop_commit_reply = True

    def heal():  # half a second after the reply was dropped (the link then reads down)
        wait_for(lambda: link.down, timeout_s=30, poll_s=0.005, what="the commit reply to be dropped")
        time.sleep(0.5)
        link.down = False

    healer = threading.Thread(target=heal)
    healer.start()
    rec = _migrate(a, job.id, "b")
    healer.join(10)
    assert rec.phase == "done", rec.reason
    assert a.jobs.get(job.id).state == "migrated"
    assert cluster.alive_total() == 1


def test_unreachable_after_commit_keeps_checkpoint_and_restarts_nothing(cluster, tmp_path):
    a, b = cluster.add("a", commit_resolve_s=0.5), cluster.add("b")
    job, _progress = _start_trainer(a, tmp_path)
    cluster.link("b").drop_commit_reply = True  # and stays down
    rec = _migrate(a, job.id, "b")
    assert rec.phase == "committing" and "stopped answering" in rec.reason
    assert (a.root / "ckpt" / job.id / "state.json").exists()
    assert len(a.jobs.alive()) == 0 and len(b.jobs.alive()) == 1
    # The target comes back: recovery learns the job runs there.
    cluster.link("b").down = False
    a.source.recover()
    rec = a.journal.get(rec.id, "source")
    assert rec.phase == "done" and a.jobs.get(job.id).state == "migrated"


def test_queued_job_moves_to_target_queue(cluster, tmp_path):
    a, b = cluster.add("a"), cluster.add("b", free_gpus=0)
    job = a.jobs.submit(trainer_spec(tmp_path / "p.txt", gpus=1), queued=True)
    rec = _migrate(a, job.id, "b")
    assert rec.phase == "done", rec.reason
    assert a.jobs.get(job.id).state == "migrated"
    new = b.jobs.get(rec.new_job_id)
    assert new.state == "queued" and new.resumed_from == job.id and cluster.alive_total() == 0


@pytest.mark.parametrize("resume", [False, True])
def test_paused_job_arrives_paused_unless_resume(cluster, tmp_path, resume):
    a, b = cluster.add("a"), cluster.add("b")
    job, _progress = _start_trainer(a, tmp_path)
    a.jobs.pause(job.id)
    rec = _migrate(a, job.id, "b", resume=resume)
    assert rec.phase == "done", rec.reason
    new = b.jobs.get(rec.new_job_id)
    assert new.state == ("running" if resume else "paused")
    assert cluster.alive_total() == 1


def test_no_contract_is_refused_with_restart_hint_then_restart_works(cluster, tmp_path):
    a, b = cluster.add("a"), cluster.add("b")
    job, progress = _start_trainer(a, tmp_path, contract=False)
    with pytest.raises(ProtocolError) as e:
        a.source.start(job.id, "b")
    assert "no checkpoint contract" in e.value.message and "--restart" in e.value.message
    assert a.jobs.get(job.id).state == "running"
    rec = _migrate(a, job.id, "b", restart=True)
    assert rec.phase == "done", rec.reason
    new = b.jobs.get(rec.new_job_id)
    wait_for(lambda: any(p == new.pid for s, p in steps(progress)), what="fresh start on b")
    assert [s for s, p in steps(progress) if p == new.pid][0] == 1
    assert cluster.alive_total() == 1


def test_target_refuses_chunks_it_did_not_accept(cluster):
    from agentd.protocol.migration import MigrateChunk

    b = cluster.add("b")
    with pytest.raises(ProtocolError) as e:
        b.target.handle(MigrateChunk(migration_id="x", offset=0, data=b"abc"))
    assert e.value.code == 404 and "offer it first" in e.value.message


def test_streaming_offer_needs_exact_size_and_digest_at_commit(cluster, tmp_path):

    from agentd.protocol.migration import MigrateChunk, MigrateCommit, MigrateOffer

    b = cluster.add("b")
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    (ckpt / "state.json").write_text('{"step": 5}')
    from .tarfiles import pack

    info = pack(ckpt, tmp_path / "c.tar")
    bound = info.size_bytes + 4096  # an offer may give an upper bound; the commit the size
    data = info.path.read_bytes()
    b.target.handle(MigrateOffer(migration_id="s1", spec=trainer_spec(tmp_path / "p.txt"), source_node="a",
                                 source_job="a.9", size_bytes=bound, sha256=""))
    b.target.handle(MigrateChunk(migration_id="s1", offset=0, data=data))
    with pytest.raises(ProtocolError) as e:
        b.target.handle(MigrateCommit(migration_id="s1", sha256=info.sha256, size_bytes=info.size_bytes + 512))
    assert e.value.code == 409 and "send the rest" in e.value.message
    with pytest.raises(ProtocolError) as e:
        b.target.handle(MigrateCommit(migration_id="s1", sha256="", size_bytes=info.size_bytes))
    assert e.value.code == 422 and "SHA-256" in e.value.message
    assert b.journal.get("s1", "target").phase == "aborted"  # a broken commit ends it for good
