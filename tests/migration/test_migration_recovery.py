"""A daemon killed mid-migration, on either side, resumes or rolls back on restart."""

import hashlib
import os

import pytest

from agentd.control.migration import MigrationSource, SourceOptions
from agentd.control.migration_target import MigrationTarget
from agentd.protocol.migration import MigrateChunk, MigrateCommit, MigrateOffer, MigrateStatus
from agentd.store.migration_journal import MigrationJournal

from .conftest import steps, trainer_spec, wait_for


class Killed(BaseException):
    """Stands for kill -9: escapes every `except Exception` of the state machine."""


def _kill_in_phase(node, phase):
    real = node.jobs.update_migration

    def update(job_id, migration, state=None):
        if migration.get("phase") == phase:
            raise Killed()
        return real(job_id, migration, state)

    node.jobs.update_migration = update
    return real


def _restart_source(cluster, node):
    """A new daemon process: new journal handle and state machine, same files and jobs."""
    node.journal.close()
    node.journal = MigrationJournal(node.root / "state.db")
    old = node.source
    node.source = MigrationSource(node.name, node.jobs, node.journal, old.connect, old.work_dir, node.events.append,
                                  options=SourceOptions(retry_s=1, commit_resolve_s=1))
    return node.source.recover()


@pytest.mark.parametrize("phase", ["transferring", "committing"])
def test_source_killed_mid_migration_recovers(cluster, tmp_path, phase):
    a, b = cluster.add("a"), cluster.add("b")
    progress = tmp_path / "p.txt"
    job = a.jobs.submit(trainer_spec(progress, pad_bytes=2 << 20))
    wait_for(lambda: len(steps(progress)) >= 10, what="trainer steps")
    real = _kill_in_phase(a, phase)
    with pytest.raises(Killed):
        a.source.start(job.id, "b", background=False)
    a.jobs.update_migration = real
    rec = a.journal.unfinished("source")[0]
    assert rec.phase == phase
    assert cluster.alive_total() == 0  # checkpointed and exited; nothing runs
    _restart_source(cluster, a)
    rec = a.journal.get(rec.id, "source")
    if phase == "transferring":
        # Commit never sent: the target is told to abort and the job restarts here.
        assert rec.phase == "rolled_back", rec.reason
        assert a.jobs.get(job.id).state == "running"
        assert b.journal.get(rec.id, "target").phase == "aborted"
    else:
        # The commit was about to be sent (journal says committing): the target did not
        # start it, so recovery aborts there and restarts here.
        assert rec.phase == "rolled_back", rec.reason
        assert a.jobs.get(job.id).state == "running"
    assert cluster.alive_total() == 1
    info = a.jobs.get(job.id)
    wait_for(lambda: any(p == info.pid for s, p in steps(progress)), what="restarted trainer")
    before = [s for s, p in steps(progress) if p != info.pid]
    assert [s for s, p in steps(progress) if p == info.pid][0] == before[-1] + 1


def test_source_killed_after_target_started_job_finishes_as_migrated(cluster, tmp_path):
    a, b = cluster.add("a"), cluster.add("b")
    progress = tmp_path / "p.txt"
    job = a.jobs.submit(trainer_spec(progress))
    wait_for(lambda: len(steps(progress)) >= 10, what="trainer steps")
    real_finish = a.jobs.finish_migrated

    def crash(*args, **kw):
        raise Killed()

    a.jobs.finish_migrated = crash
    with pytest.raises(Killed):
        a.source.start(job.id, "b", background=False)
    a.jobs.finish_migrated = real_finish
    _restart_source(cluster, a)
    rec = a.journal.all("source")[0]
    assert rec.phase == "done" and a.jobs.get(job.id).state == "migrated"
    assert cluster.alive_total() == 1 and len(b.jobs.alive()) == 1


def test_target_killed_mid_reception_receives_again_and_the_digest_holds(cluster, tmp_path):
    """The target keeps no tar (bytes are unpacked as they land), so a restarted target asks
    for byte 0 again; the sender rewinds, hashes nothing twice, and the job starts intact."""
    from agentd.control.checkpoint_archive import CheckpointTar, OrderedDigest
    from agentd.control.transfer import send_stream

    b = cluster.add("b")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "state.json").write_text('{"step": 3}')
    (ckpt / "weights.bin").write_bytes(os.urandom(20 << 20))
    tar = CheckpointTar(ckpt)
    spec = trainer_spec(tmp_path / "p.txt")
    b.target.handle(MigrateOffer(migration_id="m1", spec=spec, source_node="a", source_job="a.1",
                                 size_bytes=tar.size_bytes, sha256=""))
    sent = []

    class Client:
        def call(self, req):
            if isinstance(req, MigrateChunk):
                sent.append(req.offset)
                if len(sent) == 12:  # kill -9 of the target: a fresh MigrationTarget, same files
                    b.journal.close()
                    b.journal = MigrationJournal(b.root / "state.db")
                    b.target = MigrationTarget("b", b.jobs, b.journal, b.root / "incoming", b.events.append)
                    b.target.recover()
                    raise ConnectionError("target went away")
            return b.target.handle(req)

        def close(self):
            pass

    digest = OrderedDigest()

    def read(offset, length):
        data = tar.read(offset, length)
        digest.update(offset, data)
        return data

    assert send_stream(Client, "m1", read, tar.size_bytes, window=1, retry_s=5) == tar.size_bytes
    assert sent.count(0) == 2, "the restarted target must be sent everything again"
    rec = b.journal.get("m1", "target")
    assert any("receiving again from byte 0" in st["message"] for st in b.journal.steps("m1")), rec
    reply = b.target.handle(MigrateCommit(migration_id="m1", sha256=digest.hexdigest(), size_bytes=tar.size_bytes))
    assert reply.job.state == "running" and reply.job.resumed_from == "a.1"
    got = (b.root / "ckpt" / reply.job.id / "weights.bin").read_bytes()
    assert hashlib.sha256(got).digest() == hashlib.sha256((ckpt / "weights.bin").read_bytes()).digest()
    wait_for(lambda: steps(tmp_path / "p.txt"), what="resumed trainer")
    assert steps(tmp_path / "p.txt")[0][0] == 4


def test_target_killed_during_start_does_not_start_twice(cluster, tmp_path):
    b = cluster.add("b")
    spec = trainer_spec(tmp_path / "p.txt", gpus=0)
    b.target.handle(MigrateOffer(migration_id="m2", spec=spec, source_node="a", source_job="a.1", mode="restart"))
    real = b.jobs.start_resumed

    def start_then_die(*args, **kw):
        real(*args, **kw)
        raise Killed()

    b.jobs.start_resumed = start_then_die
    with pytest.raises(Killed):
        b.target.handle(MigrateCommit(migration_id="m2"))
    b.jobs.start_resumed = real
    assert b.journal.get("m2", "target").phase == "starting"
    b.target = MigrationTarget("b", b.jobs, b.journal, b.root / "incoming", b.events.append)
    b.target.recover()
    assert b.journal.get("m2", "target").phase == "committed"
    again = b.target.handle(MigrateCommit(migration_id="m2"))
    assert again.message == "already committed"
    assert len(b.jobs.alive()) == 1


def test_target_drops_stale_incoming_migrations(cluster, tmp_path):
    b = cluster.add("b")
    clock = [1000.0]
    b.target.wall = lambda: clock[0]
    b.journal.clock = lambda: clock[0]
    b.target.stale_after_s = 60
    spec = trainer_spec(tmp_path / "p.txt")
    b.target.handle(MigrateOffer(migration_id="m3", spec=spec, source_node="a", source_job="a.1",
                                 size_bytes=3 << 20, sha256="0" * 64))
    b.target.handle(MigrateChunk(migration_id="m3", offset=0, data=b"x" * (1 << 20)))
    clock[0] += 30
    assert b.target.expire_stale() == 0
    clock[0] += 61
    assert b.target.expire_stale() == 0  # bytes arrived since the last journal write: still alive
    clock[0] += 61
    assert b.target.expire_stale() == 1
    assert b.journal.get("m3", "target").phase == "aborted"
    assert not (b.root / "incoming" / "m3").exists()
    st = b.target.handle(MigrateStatus(migration_id="m3"))
    assert st.phase == "aborted" and "no word from the source" in st.message
