"""Move a job to another node without losing its progress, and never run it twice.

Source side (:class:`MigrationSource`), one worker thread per migration::

    requested -> checkpointing -> transferring -> committing -> done
                      |                |              |
                      +----------------+--------------+--> rolled_back (runs here again)

* checkpointing: the job gets its contract signal (thawed first when paused) and must exit 0
  within the contract's timeout. Timeout: the checkpoint is abandoned and the job keeps
  running here.
* transferring: offer (exact tar size, spec) then the checkpoint directory as a tar stream
  read straight from its files, hashed as it goes; resumable (see transfer.py).
* committing: the commit carries the digest; the target checks the digest of what it unpacked as it arrived, moves
  the checkpoint into place and starts the job with AGENTD_RESUME=1. A target that restarts
  mid-transfer receives again from byte 0 (it keeps no tar to resume from).
* Any failure before the target confirms a start -> the target is told to abort (it then
  refuses a late commit), and the job restarts here from its checkpoint with AGENTD_RESUME=1.
  When the outcome of a commit cannot be learned (target unreachable right after the commit
  was sent) nothing is restarted: the migration stays in ``committing`` with the checkpoint
  kept, and is resolved when the target answers again (retries, then ``recover()``).
* The local checkpoint is deleted only after the target replies with the started job.

Target side (:class:`MigrationTarget`) answers the ``migrate_*`` commands of
agentd/protocol/migration.py. Both sides journal every step (store/migration_journal.py)
before acting, and ``recover()`` on either side resumes or rolls back after a crash.

The job machinery is reached through two small hook interfaces, :class:`SourceJobs` and
:class:`TargetJobs` (agentd/control/migration_target.py), which the JobManager implements.

Over 500 lines: the source side's state machine (drawn above) in one class, step by step,
so every failure path can be read next to the step it leaves.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec

from agentd.control.checkpoint_archive import (
    ArchiveError,
    CheckpointTar,
    OrderedDigest,
)
from agentd.control.criu import criu_status
from agentd.control.transfer import (
    DEFAULT_COMMIT_RESOLVE_S,
    DEFAULT_RETRY_S,
    DEFAULT_WINDOW,
    ClientFactory,
    TransferError,
    remote_code,
    send_stream,
)
from agentd.groups.regroup import RegroupError, moved_spec
from agentd.protocol.errors import ErrorCode, ProtocolError
from agentd.protocol.jobs import Event, JobInfo, JobSpec, trim_lineage
from agentd.protocol.messages import Hello, Regroup
from agentd.protocol.migration import (
    MigrateAbort,
    MigrateCommit,
    MigrateCommitReply,
    MigrateOffer,
    MigrateOfferReply,
    MigrateStatus,
    MigrateStatusReply,
    MigrationMode,
)
from agentd.store.migration_journal import MigrationJournal, MigrationRecord

log = logging.getLogger(__name__)

MIGRATION_LABEL = "agentd.migration"  # label on the target's job: the migration that made it
DEFAULT_QUOTA_BYTES = 64 * 1024**3
DEFAULT_STALE_INCOMING_S = 3600.0  # a target drops a half-received migration this old
PROGRESS_EVERY_S = 0.25
HANDLER_POLL_S = 0.05  # how often a migration looks whether the job caught its checkpoint signal yet
JOURNAL_EVERY_BYTES = 16 * 1024 * 1024


# ---- hooks into the job manager ---------------------------------------------------------

class SourceJobs(Protocol):
    """What the source side needs from the JobManager (all by job id; NOT_FOUND as
    ProtocolError for unknown ids)."""

    def get(self, job_id: str) -> JobInfo: ...

    def checkpoint_dir(self, job_id: str) -> Path:
        """The job's AGENTD_CHECKPOINT_DIR."""

    def checkpoint_handler_missing(self, job_id: str) -> str | None:
        """None when the job catches its contract signal; else why signalling it now would
        not produce a checkpoint (no handler yet: the default action would kill it)."""

    def begin_checkpoint(self, job_id: str) -> None:
        """Thaw the job if paused, set state ``checkpointing`` and send its contract signal
        to the process group. From now until another hook is called, the job's exit (any
        code) must NOT move it to a terminal state: the manager only records the exit code."""

    def criu_obstacle(self, job_id: str) -> str | None:
        """None when CRIU can carry every process of the job; else why not, naming the
        processes it would leave behind (pid and command), e.g. daemons that double-forked
        out of the job's process tree."""

    def criu_dump(self, job_id: str, images_dir: Path) -> None:
        """Like begin_checkpoint, for a job without a contract: dump it with CRIU into
        ``images_dir`` (its processes end with the dump). ProtocolError when the dump fails or
        would leave processes of the job behind (criu_obstacle); the job then runs on as before."""

    def wait_exit(self, job_id: str, timeout_s: float) -> int | None:
        """Wait until the job's main process exits; its exit code, or None on timeout."""

    def stop(self, job_id: str, grace_s: float) -> None:
        """Kill the job (SIGTERM, SIGKILL after ``grace_s``) without making it terminal."""

    def abandon_checkpoint(self, job_id: str, reason: str, paused: bool) -> JobInfo:
        """The job did not checkpoint in time and still runs: back to ``running`` (frozen
        again and ``paused`` when ``paused``); ``reason`` goes to JobInfo.reason and an event."""

    def restart_local(self, job_id: str, reason: str, paused: bool, from_checkpoint: bool,
                      restore_images: Path | None = None) -> JobInfo:
        """Start the same job id again here: with AGENTD_RESUME=1 from its checkpoint dir
        when ``from_checkpoint``, restored from the CRIU image ``restore_images`` when given,
        else from scratch; frozen when ``paused``."""

    def hold_queued(self, job_id: str) -> None:
        """Take a queued job out of scheduling (state ``migrating``); CONFLICT if it started."""

    def requeue(self, job_id: str, reason: str) -> JobInfo:
        """Put a held queued job back in the queue (the migration failed)."""

    def update_migration(self, job_id: str, migration: dict[str, Any], state: str | None = None) -> None:
        """Set JobInfo.migration (and the state when given) and publish the change."""

    def finish_migrated(self, job_id: str, migrated_to: str, reason: str) -> JobInfo:
        """Terminal state ``migrated`` with JobInfo.migrated_to set."""


Connector = Callable[[str, str], ClientFactory]  # (endpoint, server key) -> client factory
Emit = Callable[[Event], None]


# ---- source -----------------------------------------------------------------------------

@dataclass
class SourceOptions:
    window: int = DEFAULT_WINDOW
    retry_s: float = DEFAULT_RETRY_S
    commit_resolve_s: float = DEFAULT_COMMIT_RESOLVE_S
    stop_grace_s: float = 10.0


class MigrationSource:
    """Runs migrations of this node's jobs to other daemons (one worker thread each)."""

    def __init__(self, node: str, jobs: SourceJobs, journal: MigrationJournal, connect: Connector,
                 work_dir: Path, emit: Emit, *, options: SourceOptions | None = None,
                 criu: Callable[[], tuple[bool, str]] = criu_status,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.node = node
        self.jobs = jobs
        self.journal = journal
        self.connect = connect
        self.work_dir = Path(work_dir)
        self.emit = emit
        self.options = options or SourceOptions()
        self.criu = criu
        self.clock = clock
        self.wall = wall
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()

    # -- public --------------------------------------------------------------------------

    def start(self, job_id: str, target: str, target_key: str = "", *, restart: bool = False,
              resume: bool = False, actor: str = "", background: bool = True,
              regroup: Regroup | None = None) -> MigrationRecord:
        """Validate and begin migrating ``job_id`` to the daemon at ``target``; with ``regroup``
        the job is a rank moving with its group (agentd.groups.regroup).

        Raises ProtocolError when the job cannot migrate (CONFLICT: wrong state or already
        migrating; INVALID: no checkpoint contract and no ``restart``). The rest runs in a
        worker thread (or inline when ``background`` is false) and reports through events.
        """
        info = self.jobs.get(job_id)
        with self._lock:
            for rec in self.journal.unfinished("source"):
                if rec.job_id == job_id:
                    raise ProtocolError(ErrorCode.CONFLICT, f"job '{job_id}' is already migrating to {rec.target} "
                                                            f"(migration {rec.id}); wait for it or check `agentctl show {job_id}`", "job")
            mode: MigrationMode
            if info.state == "queued":
                mode = "queued"
            elif info.state in ("running", "paused"):
                if info.spec.checkpoint is not None:
                    mode = "checkpoint"
                elif restart:
                    mode = "restart"
                else:
                    ok, why = self.criu()
                    hint = (f"add a checkpoint contract to its spec, or migrate with --restart to cancel it here "
                            f"and start it from scratch on {target}")
                    if not ok:
                        raise ProtocolError(ErrorCode.INVALID, f"job '{job_id}' has no checkpoint contract and {why}; {hint}", "job")
                    if info.spec.gpus:
                        raise ProtocolError(ErrorCode.INVALID, f"job '{job_id}' has no checkpoint contract and uses "
                                                               f"GPUs, whose state CRIU cannot move; {hint}", "job")
                    mode = "criu"
            else:
                raise ProtocolError(ErrorCode.CONFLICT, f"job '{job_id}' is {info.state}; only queued, running or paused jobs can migrate", "job")
            if mode == "criu":
                obstacle = self.jobs.criu_obstacle(job_id)
                if obstacle:
                    raise ProtocolError(ErrorCode.INVALID, f"{obstacle}; nothing was dumped and the job keeps running "
                                        f"here. Add a checkpoint contract, or migrate with --restart to cancel it here "
                                        f"and start it from scratch on {target}", "job")
            # What travels is the job as it is now: a priority changed after submit included.
            spec = msgspec.structs.replace(info.spec, priority=info.priority)
            if regroup is not None:
                if mode == "criu":
                    raise ProtocolError(ErrorCode.INVALID, f"job '{job_id}' would be restored by CRIU with its old "
                                        "rendezvous; a group moves only with a checkpoint contract", "job")
                try:
                    spec = moved_spec(job_id, spec, regroup)
                except RegroupError as e:
                    raise ProtocolError(ErrorCode.INVALID, e.message, "regroup") from None
            extra = {"lineage": trim_lineage([*info.lineage, info.id]),
                     "first_submitted_s": info.first_submitted_s or info.submitted_s}
            rec = MigrationRecord(
                id=f"{self.node}-{uuid.uuid4().hex[:12]}", side="source", job_id=job_id, phase="requested",
                mode=mode, spec_json=msgspec.json.encode(spec).decode(), source_node=self.node,
                target=target, target_key=target_key, was_paused=info.state == "paused", resume=resume,
                extra_json=json.dumps(extra))
            self.journal.create(rec, f"migrate {job_id} ({mode}) to {target} requested by {actor or 'unknown'}")
            # From now on the job's ``migration`` describes this attempt, not an earlier one
            # (a client following this attempt compares the id).
            self.jobs.update_migration(job_id, self._migration_dict(rec, None, "requested"))
        self._event(rec, f"migrating job '{job_id}' to {target} ({mode})")
        if background:
            t = threading.Thread(target=self._run_guarded, args=(rec,), name=f"migrate-{rec.id}", daemon=True)
            self._threads[rec.id] = t
            t.start()
        else:
            self._run_guarded(rec)
        return rec

    def wait(self, migration_id: str, timeout_s: float) -> MigrationRecord | None:
        """Wait for a background migration to end; its record (None when unknown)."""
        t = self._threads.get(migration_id)
        if t is not None:
            t.join(timeout_s)
        return self.journal.get(migration_id, "source")

    def close(self, timeout_s: float = 5.0) -> None:
        """Ask workers to stop at the next step and wait for them (recover() finishes them)."""
        self._closing.set()
        for t in list(self._threads.values()):
            t.join(timeout_s)

    def recover(self) -> list[MigrationRecord]:
        """After a restart: finish or roll back every unfinished source migration."""
        done = []
        for rec in self.journal.unfinished("source"):
            self.journal.note(rec, f"recovering after a daemon restart in phase {rec.phase}")
            try:
                self._recover_one(rec)
            except Exception as exc:  # one bad record must not stop the others
                log.exception("migration %s: recovery failed", rec.id)
                self.journal.note(rec, f"recovery failed: {exc}")
            done.append(rec)
        return done

    # -- the state machine ---------------------------------------------------------------

    def _run_guarded(self, rec: MigrationRecord) -> None:
        try:
            self._run(rec)
        except Exception as exc:  # never leave a job stranded
            log.exception("migration %s failed unexpectedly", rec.id)
            if rec.phase in ("committing",):
                self._resolve_commit(rec, f"unexpected error: {exc}")
            elif not rec.final:
                self._rollback(rec, f"migration failed unexpectedly: {exc}")

    def _run(self, rec: MigrationRecord) -> None:
        spec = msgspec.json.decode(rec.spec_json, type=JobSpec)
        factory = self.connect(rec.target, rec.target_key)
        t0 = self.clock()
        # Preflight: is the target there, is it another node, does it let us in as a daemon?
        try:
            hello = _call(factory, Hello())
            _call(factory, MigrateStatus(migration_id=rec.id))
        except Exception as exc:  # noqa: BLE001
            self._finish(rec, "failed", f"target {rec.target} cannot take migrations: {_describe(exc)}; job '{rec.job_id}' was not touched", ok=False)
            return
        if hello.node == self.node:
            self._finish(rec, "failed", f"target {rec.target} is node {self.node} itself, where job '{rec.job_id}' already "
                         "runs; it was not touched: migrate it to another node", ok=False)
            return
        if rec.mode == "queued":
            self._run_queued(rec, spec, factory)
            return
        if rec.mode == "restart":
            self._run_restart(rec, spec, factory)
            return
        if rec.mode == "criu":
            caps, why = hello.capabilities, "its `criu check` does not pass or it has no CRIU"
            if "criu" not in caps:
                self._finish(rec, "failed", f"target {rec.target} cannot restore CRIU images ({why}); job '{rec.job_id}' "
                             "was not touched: add a checkpoint contract or migrate with --restart", ok=False)
                return
            ckpt_dir = self._criu_checkpoint(rec, t0)
        else:
            ckpt_dir = self._contract_checkpoint(rec, spec, t0)
        if ckpt_dir is not None:
            self._transfer(rec, spec, factory, t0, ckpt_dir)

    def _criu_checkpoint(self, rec: MigrationRecord, t0: float) -> Path | None:
        """Dump the job with CRIU; the image directory, or None when the job runs on here."""
        self.journal.update(rec, phase="checkpointing")
        self._progress(rec, t0, "checkpointing", state="checkpointing")
        images = self.work_dir / f"{rec.id}.criu"
        t_dump = self.clock()
        try:
            self.jobs.criu_dump(rec.job_id, images)
        except ProtocolError as exc:
            shutil.rmtree(images, ignore_errors=True)
            self._finish(rec, "rolled_back", f"CRIU could not dump job '{rec.job_id}' ({exc.message}); it keeps running here", ok=False)
            return None
        self.journal.update(rec, checkpoint_dir=str(images), message=f"CRIU image written in {self.clock() - t_dump:.2f} s")
        self.jobs.wait_exit(rec.job_id, 30.0)  # the dumped tree was killed: let the manager record it
        return images

    def _contract_checkpoint(self, rec: MigrationRecord, spec: JobSpec, t0: float) -> Path | None:
        """Have the job write its checkpoint and exit; the directory, or None (rolled back)."""
        contract = spec.checkpoint
        assert contract is not None
        missing = self._await_checkpoint_handler(rec, contract.timeout_s)
        if missing:
            self._finish(rec, "failed", missing, ok=False)
            return None
        self.journal.update(rec, phase="checkpointing")
        self._progress(rec, t0, "checkpointing", state="checkpointing")
        self.jobs.begin_checkpoint(rec.job_id)
        t_ckpt = self.clock()
        code = self.jobs.wait_exit(rec.job_id, contract.timeout_s)
        if code is None:
            reason = (f"job '{rec.job_id}' did not checkpoint within {contract.timeout_s:g} s of {contract.signal}; "
                      f"migration to {rec.target} abandoned, the job keeps running here")
            self._rollback(rec, reason, still_running=True)
            return None
        if code != 0:
            self._rollback(rec, f"job '{rec.job_id}' exited with code {code} while checkpointing; restarted here from its last checkpoint")
            return None
        ckpt_s = self.clock() - t_ckpt
        ckpt_dir = self.jobs.checkpoint_dir(rec.job_id)
        self.journal.update(rec, checkpoint_dir=str(ckpt_dir), message=f"checkpoint written in {ckpt_s:.2f} s")
        if not ckpt_dir.is_dir():
            self._rollback(rec, f"job '{rec.job_id}' exited 0 but wrote no checkpoint in {ckpt_dir}; restarted here")
            return None
        return ckpt_dir

    def _await_checkpoint_handler(self, rec: MigrationRecord, timeout_s: float) -> str | None:
        """Wait, up to the contract's timeout, until the job catches its checkpoint signal.

        A job asked to migrate moments after it started may not have installed its handler
        yet, and the signal's default action would kill it. None when it is ready; else the
        reason the migration fails, the job untouched (the journal is still at ``requested``).
        """
        deadline = self.clock() + timeout_s
        missing = self.jobs.checkpoint_handler_missing(rec.job_id)
        if missing and not rec.was_paused:
            self.journal.note(rec, f"waiting up to {timeout_s:g} s: {missing}")
            while missing and self.clock() < deadline and not self._closing.is_set():
                time.sleep(HANDLER_POLL_S)
                missing = self.jobs.checkpoint_handler_missing(rec.job_id)
        if not missing:
            return None
        if rec.was_paused:
            return (f"{missing}; it was not signalled and stays paused here: resume it so it can handle "
                    f"the signal, then migrate it to {rec.target}")
        return (f"{missing} (waited {timeout_s:g} s, its checkpoint timeout); it was not signalled and keeps "
                f"running here, not migrated to {rec.target}")

    def _transfer(self, rec: MigrationRecord, spec: JobSpec, factory: ClientFactory, t0: float, ckpt_dir: Path) -> None:
        """Offer, stream the checkpoint (or CRIU image) directory, commit."""
        # The tar is streamed from the checkpoint files themselves (never written here), and
        # hashed as it goes out: the offer carries the exact size, the commit the digest.
        try:
            tar = CheckpointTar(ckpt_dir)
        except (ArchiveError, OSError) as exc:
            self._rollback(rec, f"cannot pack the checkpoint of job '{rec.job_id}': {_describe(exc)}; restarted here")
            return
        self.journal.update(rec, phase="transferring", size_bytes=tar.size_bytes)
        self._progress(rec, t0, "transferring", state="migrating")
        paused = rec.was_paused and not rec.resume
        offer = MigrateOffer(migration_id=rec.id, spec=spec, source_node=self.node, source_job=rec.job_id,
                             mode=rec.mode, size_bytes=tar.size_bytes, sha256="", paused=paused, **_identity(rec))
        try:
            accepted: MigrateOfferReply = _call(factory, offer)
        except Exception as exc:  # noqa: BLE001
            self._abort_and_rollback(rec, factory, f"target {rec.target} refused job '{rec.job_id}': {_describe(exc)}")
            return
        if accepted.will_queue:
            self.journal.note(rec, f"target will queue the job: {accepted.message}")
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = self.clock()
            if now - last[0] >= PROGRESS_EVERY_S or done >= total:
                last[0] = now
                if done - rec.bytes_done >= JOURNAL_EVERY_BYTES or done >= total:
                    self.journal.update(rec, bytes_done=done)
                self._progress(rec, t0, "transferring", bytes_sent=done)

        digest = OrderedDigest()

        def read(offset: int, length: int) -> bytes:
            data = tar.read(offset, length)
            digest.update(offset, data)
            return data

        try:
            # From byte 0 even if the target holds a prefix: it skips what it has.
            send_stream(factory, rec.id, read, tar.size_bytes,
                        window=self.options.window, retry_s=self.options.retry_s, progress=progress,
                        cancelled=self._closing.is_set, clock=self.clock)
        except TransferError as exc:
            self._abort_and_rollback(rec, factory, f"transfer of job '{rec.job_id}' to {rec.target} failed: {exc.message}")
            return
        except ArchiveError as exc:
            self._abort_and_rollback(rec, factory, f"cannot pack the checkpoint of job '{rec.job_id}': {exc.message}")
            return
        self.journal.update(rec, bytes_done=tar.size_bytes, sha256=digest.hexdigest())
        self._commit(rec, factory, t0)

    def _commit(self, rec: MigrationRecord, factory: ClientFactory, t0: float) -> None:
        # Journal first: from here on, the target may be running the job.
        self.journal.update(rec, phase="committing")
        self._progress(rec, t0, "committing", bytes_sent=rec.size_bytes)
        try:
            reply: MigrateCommitReply = _call(factory, MigrateCommit(migration_id=rec.id, sha256=rec.sha256, size_bytes=rec.size_bytes))
        except Exception as exc:  # noqa: BLE001
            if remote_code(exc) is not None:
                # The target answered with a refusal: it did not start the job.
                self._abort_and_rollback(rec, factory, f"target {rec.target} could not start job '{rec.job_id}': {_describe(exc)}")
            else:
                self._resolve_commit(rec, _describe(exc))
            return
        self._done(rec, reply.job, t0)

    def _done(self, rec: MigrationRecord, job: JobInfo, t0: float | None) -> None:
        where = f"{job.id} on {job.node}"
        reason = f"migrated to {where} ({job.state})"
        self.journal.update(rec, new_job_id=job.id)
        if rec.mode in ("checkpoint", "criu"):
            self.jobs.update_migration(rec.job_id, self._migration_dict(rec, t0, "done"))
        self.jobs.finish_migrated(rec.job_id, job.id, reason)
        # The target holds the checkpoint now: only here may ours go.
        if rec.checkpoint_dir:
            shutil.rmtree(rec.checkpoint_dir, ignore_errors=True)
        self._finish(rec, "done", f"job '{rec.job_id}' {reason}", data={"new_job": job.id, "target_state": job.state})

    def _resolve_commit(self, rec: MigrationRecord, why: str) -> None:
        """A commit was sent and no answer came: ask until the target says what happened."""
        self.journal.note(rec, f"commit outcome unknown ({why}); asking the target")
        factory = self.connect(rec.target, rec.target_key)
        deadline = self.clock() + self.options.commit_resolve_s
        while not self._closing.is_set():
            if self._settle_from_status(rec, factory):
                return
            if self.clock() > deadline:
                break
            time.sleep(0.5)
        reason = (f"target {rec.target} stopped answering after the commit of job '{rec.job_id}'; "
                  f"the checkpoint is kept here and the job will not be restarted until the target says whether it runs it")
        self.jobs.update_migration(rec.job_id, self._migration_dict(rec, None, "committing", reason=reason))
        self.journal.update(rec, reason=reason)
        self._event(rec, reason, ok=False)

    def _settle_from_status(self, rec: MigrationRecord, factory: ClientFactory) -> bool:
        """Ask the target about a committing migration; finish it when the answer settles it."""
        try:
            st: MigrateStatusReply = _call(factory, MigrateStatus(migration_id=rec.id))
        except Exception:  # noqa: BLE001 - still unreachable
            return False
        if st.phase == "committed" and st.job is not None:
            self._done(rec, st.job, None)
            return True
        if st.phase == "starting":
            return False  # the target is starting it right now; ask again
        if self._try_abort(rec, factory) == "aborted":
            self._rollback(rec, f"target {rec.target} did not start job '{rec.job_id}' ({st.phase}: {st.message or 'no detail'})")
            return True
        return False

    def _try_abort(self, rec: MigrationRecord, factory: ClientFactory) -> str:
        """Tell the target to abort: "aborted" (it will never start the job), "running" (it
        already started it) or "unknown" (no answer)."""
        try:
            _call(factory, MigrateAbort(migration_id=rec.id, reason=rec.reason or "aborted by the source"))
        except Exception as exc:  # noqa: BLE001
            code = remote_code(exc)
            if code == ErrorCode.CONFLICT:
                self.journal.note(rec, f"abort refused: {_describe(exc)}")
                return "running"
            if code is None:
                return "unknown"
            return "aborted"  # any other refusal: it has nothing it could start
        return "aborted"

    def _run_queued(self, rec: MigrationRecord, spec: JobSpec, factory: ClientFactory) -> None:
        self.jobs.hold_queued(rec.job_id)
        self.journal.update(rec, phase="committing")
        try:
            _call(factory, MigrateOffer(migration_id=rec.id, spec=spec, source_node=self.node, source_job=rec.job_id, mode="queued",
                                        **_identity(rec)))
            reply: MigrateCommitReply = _call(factory, MigrateCommit(migration_id=rec.id))
        except Exception as exc:  # noqa: BLE001
            if remote_code(exc) is None:
                self._resolve_commit(rec, _describe(exc))
                return
            self._abort_and_rollback(rec, factory, f"target {rec.target} refused queued job '{rec.job_id}': {_describe(exc)}")
            return
        self._done(rec, reply.job, None)

    def _run_restart(self, rec: MigrationRecord, spec: JobSpec, factory: ClientFactory) -> None:
        try:
            _call(factory, MigrateOffer(migration_id=rec.id, spec=spec, source_node=self.node, source_job=rec.job_id,
                                        mode="restart", paused=rec.was_paused and not rec.resume, **_identity(rec)))
        except Exception as exc:  # noqa: BLE001
            self._finish(rec, "failed", f"target {rec.target} refused job '{rec.job_id}': {_describe(exc)}; the job keeps running here", ok=False)
            return
        self.journal.update(rec, phase="checkpointing", message="stopping the job here (restart from scratch on the target)")
        self.jobs.stop(rec.job_id, self.options.stop_grace_s)
        self._commit(rec, factory, self.clock())

    # -- rollback ------------------------------------------------------------------------

    def _abort_and_rollback(self, rec: MigrationRecord, factory: ClientFactory, reason: str) -> None:
        """Make sure the target will never start the job, then run it here again."""
        outcome = self._try_abort(rec, factory)
        if outcome == "running":
            if not self._settle_from_status(rec, factory):
                self._resolve_commit(rec, "the target reports the job started")
            return
        if outcome == "unknown" and rec.phase == "committing":
            # Commit sent, abort not delivered: the target may run it. Do not restart here.
            self._resolve_commit(rec, f"abort not delivered after: {reason}")
            return
        # Aborted, or no commit was ever sent (so the target cannot start the job).
        self._rollback(rec, reason)

    def _rollback(self, rec: MigrationRecord, reason: str, still_running: bool = False) -> None:
        """Run the job here again: keep it when ``still_running``, else restart it."""
        if rec.mode == "queued":
            self.jobs.requeue(rec.job_id, reason)
        elif still_running:
            self.jobs.abandon_checkpoint(rec.job_id, reason, rec.was_paused)
        elif rec.phase != "requested":
            image = None
            if rec.mode == "criu":
                # Journaled after the dump; a daemon killed during it finds the image by name.
                image = Path(rec.checkpoint_dir or self.work_dir / f"{rec.id}.criu")
                if not (image / "inventory.img").exists():
                    image = None
                    reason += "; no CRIU image was written, so it starts from scratch"
            self.jobs.restart_local(rec.job_id, reason, rec.was_paused, rec.mode == "checkpoint", restore_images=image)
        self._finish(rec, "rolled_back", reason, ok=False)

    def _recover_one(self, rec: MigrationRecord) -> None:
        factory = self.connect(rec.target, rec.target_key)
        if rec.phase == "requested":
            self._finish(rec, "failed", f"agentd restarted before migrating job '{rec.job_id}'; it was not touched", ok=False)
        elif rec.phase == "checkpointing":
            if rec.mode == "restart":
                self._abort_and_rollback(rec, factory, f"agentd restarted while stopping job '{rec.job_id}' for a restart elsewhere")
                return
            info = self.jobs.get(rec.job_id)
            if info.pid is not None and info.exit_code is None and info.state in ("running", "paused", "checkpointing"):
                reason = f"agentd restarted while job '{rec.job_id}' was checkpointing; migration abandoned, the job keeps running here"
                self._rollback(rec, reason, still_running=True)
            else:
                self._rollback(rec, f"agentd restarted while job '{rec.job_id}' was checkpointing; restarted here from its checkpoint")
        elif rec.phase == "transferring":
            self._abort_and_rollback(rec, factory, f"agentd restarted during the transfer of job '{rec.job_id}'; restarted here from its checkpoint")
        elif rec.phase == "committing" and not self._settle_from_status(rec, factory):
            self._resolve_commit(rec, "agentd restarted after sending the commit")

    # -- reporting -----------------------------------------------------------------------

    def _migration_dict(self, rec: MigrationRecord, t0: float | None, phase: str, **extra: Any) -> dict[str, Any]:
        d: dict[str, Any] = {"id": rec.id, "phase": phase, "target": rec.target, "bytes_total": rec.size_bytes,
                             "bytes_sent": extra.pop("bytes_sent", rec.bytes_done)}
        if t0 is not None:
            d["elapsed_s"] = round(self.clock() - t0, 3)
        d.update(extra)
        return d

    def _progress(self, rec: MigrationRecord, t0: float, phase: str, state: str | None = None, **extra: Any) -> None:
        mig = self._migration_dict(rec, t0, phase, **extra)
        self.jobs.update_migration(rec.job_id, mig, state)
        self.emit(Event(wall_s=self.wall(), node=self.node, kind="migration", job_id=rec.job_id,
                        message=f"job '{rec.job_id}' {phase} -> {rec.target} ({mig['bytes_sent']}/{mig['bytes_total']} bytes)",
                        data=mig))

    def _event(self, rec: MigrationRecord, message: str, ok: bool = True, data: dict[str, Any] | None = None) -> None:
        self.emit(Event(wall_s=self.wall(), node=self.node, kind="migration", job_id=rec.job_id, message=message,
                        ok=ok, data={"migration_id": rec.id, "phase": rec.phase, "target": rec.target, **(data or {})}))

    def _finish(self, rec: MigrationRecord, phase: str, reason: str, ok: bool = True, data: dict[str, Any] | None = None) -> None:
        self.journal.update(rec, phase=phase, reason=reason, message=reason)
        log.info("migration %s: %s", rec.id, reason)
        try:
            if phase != "done":
                self.jobs.update_migration(rec.job_id, self._migration_dict(rec, None, phase, reason=reason))
        except Exception:  # reporting must not undo a finished rollback
            log.exception("migration %s: cannot update job %s", rec.id, rec.job_id)
        self._event(rec, reason, ok=ok, data=data)


def _call(factory: ClientFactory, request: Any) -> Any:
    client = factory()
    try:
        return client.call(request)
    finally:
        client.close()


def _identity(rec: MigrationRecord) -> dict[str, Any]:
    """The lineage fields of an offer, from a source record (older records have none)."""
    extra = rec.extra
    return {"lineage": list(extra.get("lineage") or [rec.job_id]),
            "first_submitted_s": float(extra.get("first_submitted_s") or 0.0)}


def _describe(exc: BaseException) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


# ---- target -----------------------------------------------------------------------------
