"""The target side of a job move: answers the ``migrate_*`` commands of
agentd/protocol/migration.py (offer, chunk, status, commit, abort), journals every step before
acting, and starts the job from the checkpoint it received. The states and the source side are
in agentd/control/migration.py, whose docstring draws the whole protocol.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from agentd.control.checkpoint_archive import (
    ArchiveError,
    StreamUnpacker,
)
from agentd.control.migration import (
    DEFAULT_QUOTA_BYTES,
    DEFAULT_STALE_INCOMING_S,
    JOURNAL_EVERY_BYTES,
    MIGRATION_LABEL,
    Emit,
)
from agentd.control.transfer import (
    IncomingStream,
)
from agentd.protocol.errors import ErrorCode, ProtocolError
from agentd.protocol.jobs import Event, JobInfo, JobSpec
from agentd.protocol.limits import is_safe_name
from agentd.protocol.messages import Reply
from agentd.protocol.migration import (
    MigrateAbort,
    MigrateAbortReply,
    MigrateChunk,
    MigrateChunkReply,
    MigrateCommit,
    MigrateCommitReply,
    MigrateOffer,
    MigrateOfferReply,
    MigrateStatus,
    MigrateStatusReply,
)
from agentd.store.migration_journal import MigrationJournal, MigrationRecord

log = logging.getLogger("agentd.control.migration")


class TargetJobs(Protocol):
    """What the target side needs from the JobManager."""

    def admission(self, spec: JobSpec) -> tuple[bool, str]:
        """Can this node take ``spec``? ``(will_queue, message)``; raise ProtocolError
        INVALID naming the field when it never could (more GPUs than the node has)."""

    def start_resumed(self, spec: JobSpec, checkpoint_dir: Path | None, resumed_from: str, paused: bool,
                      criu_image: bool = False, lineage: list[str] | None = None,
                      first_submitted_s: float = 0.0) -> JobInfo:
        """Create a job from ``spec`` (its labels carry ``agentd.migration``; its priority is
        the job's current one, applied to the new processes, CRIU-restored ones included). With a
        ``checkpoint_dir``: adopt that directory (rename it) as the job's
        AGENTD_CHECKPOINT_DIR and start with AGENTD_RESUME=1, or with ``criu_image`` restore
        the CRIU image it holds. ``resumed_from`` goes to
        JobInfo.resumed_from. ``paused``: freeze it as soon as it starts. No free GPU: queue it
        (with the same checkpoint and env) and return it queued. ``lineage`` (earlier ids,
        oldest first) and ``first_submitted_s`` go to the new JobInfo: one identity across hops.
        A CRIU image is deleted once restored, or when the job ends without being restored."""

    def held_image_bytes(self) -> int:
        """Bytes of received CRIU images this node still holds for jobs not yet restored
        (queued ones): they count against the migration quota."""

    def find_by_label(self, key: str, value: str) -> JobInfo | None:
        """The job whose spec has label ``key=value`` (for recovery after a crash)."""


class MigrationTarget:
    """Receives jobs from other daemons: the handler of the ``migrate_*`` commands."""

    def __init__(self, node: str, jobs: TargetJobs, journal: MigrationJournal, root: Path, emit: Emit, *,
                 quota_bytes: int = DEFAULT_QUOTA_BYTES, stale_after_s: float = DEFAULT_STALE_INCOMING_S,
                 wall: Callable[[], float] = time.time, criu: Callable[[], tuple[bool, str]] | None = None) -> None:
        self.node = node
        self.jobs = jobs
        self.journal = journal
        self.root = Path(root)
        # Asked once: `criu check` takes a while, and the kernel does not change under us.
        self.criu_ok, self.criu_why = criu() if criu is not None else (False, "CRIU restore is off on this node")
        self.emit = emit
        self.quota_bytes = quota_bytes
        self.stale_after_s = stale_after_s
        self.wall = wall
        self._lock = threading.RLock()
        self._streams: dict[str, IncomingStream] = {}
        self._unpackers: dict[str, StreamUnpacker] = {}
        self._journaled: dict[str, int] = {}

    def handle(self, req: Any) -> Reply:
        """Answer one ``migrate_*`` request; raises ProtocolError for an error reply."""
        if isinstance(req, MigrateChunk):
            return self.chunk(req)
        if isinstance(req, MigrateOffer):
            return self.offer(req)
        if isinstance(req, MigrateStatus):
            return self.status(req)
        if isinstance(req, MigrateCommit):
            return self.commit(req)
        if isinstance(req, MigrateAbort):
            return self.abort(req)
        raise ProtocolError(ErrorCode.UNKNOWN_COMMAND, f"{type(req).__name__} is not a migration command", "cmd")

    def _dir(self, mid: str) -> Path:
        """The directory of incoming migration ``mid``; never anything outside ``root``."""
        if not is_safe_name(mid):  # the schema refuses such ids; this guards every other way in
            raise ProtocolError(ErrorCode.INVALID, f"migration id {mid[:80]!r} is not a plain name "
                                "(letters, digits, '_.-', not starting with '.')", "migration_id")
        return self.root / mid

    def offer(self, req: MigrateOffer) -> MigrateOfferReply:
        with self._lock:
            rec = self.journal.get(req.migration_id, "target")
            if rec is not None:
                if rec.phase in ("receiving", "received") and rec.size_bytes == req.size_bytes and rec.sha256 == req.sha256:
                    f = self._streams.get(rec.id)
                    return MigrateOfferReply(id=req.id, migration_id=rec.id, next_offset=f.next_offset if f else 0)
                raise ProtocolError(ErrorCode.CONFLICT, f"migration {req.migration_id} is already {rec.phase} on node "
                                                        f"{self.node}; start a new migration", "migration_id")
            if req.source_node == self.node:
                raise ProtocolError(ErrorCode.INVALID, f"job '{req.source_job}' already runs on node {self.node}; "
                                    "a job cannot migrate to its own node: pick another node", "source_node")
            if req.mode == "criu" and not self.criu_ok:
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"node {self.node} does not restore CRIU images: {self.criu_why}", "mode")
            will_queue, why = self.jobs.admission(req.spec)
            if req.mode in ("checkpoint", "criu"):
                if req.size_bytes <= 0 or len(req.sha256) not in (0, 64):
                    raise ProtocolError(ErrorCode.INVALID, "a checkpoint offer needs size_bytes > 0 and a SHA-256 hex "
                                                           "digest (or none, when streaming)", "size_bytes")
                # Incoming checkpoints, and CRIU images received earlier that wait for their
                # restore (a queued job): both are on this node's disk.
                in_flight = sum(r.size_bytes for r in self.journal.unfinished("target")) + self.jobs.held_image_bytes()
                if in_flight + req.size_bytes > self.quota_bytes:
                    raise ProtocolError(
                        ErrorCode.TOO_LARGE,
                        f"checkpoint of {req.size_bytes} bytes exceeds node {self.node}'s migration quota "
                        f"({self.quota_bytes} bytes, {in_flight} in use); raise its migration_quota (agentd --migration-quota) or pick another node",
                        "size_bytes")
                self.root.mkdir(parents=True, exist_ok=True)
                free = shutil.disk_usage(self.root).free
                if free < 2 * req.size_bytes:
                    raise ProtocolError(
                        ErrorCode.TOO_LARGE,
                        f"node {self.node} has {free} bytes free in {self.root}, needs {2 * req.size_bytes} for a "
                        f"{req.size_bytes}-byte checkpoint; free disk space there or pick another node", "size_bytes")
            rec = MigrationRecord(
                id=req.migration_id, side="target", job_id=req.source_job, phase="receiving", mode=req.mode,
                spec_json=msgspec.json.encode(req.spec).decode(), source_node=req.source_node,
                was_paused=req.paused, size_bytes=req.size_bytes, sha256=req.sha256,
                extra_json=msgspec.json.encode({"will_queue": will_queue, "lineage": req.lineage or [req.source_job],
                                                "first_submitted_s": req.first_submitted_s}).decode())
            if req.mode in ("checkpoint", "criu"):
                self._start_reception(rec)
            else:
                rec.phase = "received"
            self.journal.create(rec, f"offer of job '{req.source_job}' from {req.source_node} accepted ({req.mode})")
            msg = why if will_queue else ""
            return MigrateOfferReply(id=req.id, migration_id=rec.id, will_queue=will_queue, message=msg)

    def chunk(self, req: MigrateChunk) -> MigrateChunkReply:
        f = self._streams.get(req.migration_id)
        if f is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"node {self.node} accepted no migration {req.migration_id!r}, "
                                                     "or it was aborted; offer it first", "migration_id")
        unpacker = self._unpackers.get(req.migration_id)
        if unpacker is not None and unpacker.error is not None:
            # Refuse at once (disk full, quota, a hostile member): the source stops sending.
            code = ErrorCode.TOO_LARGE if unpacker.error.reason in ("too_large", "disk_full") else ErrorCode.FAILED
            raise ProtocolError(code, f"cannot unpack the checkpoint of job '{req.migration_id}' on node {self.node}: {unpacker.error.message}", "migration_id")
        next_offset = f.write(req.offset, req.data)
        if f.complete or next_offset - self._journaled.get(req.migration_id, 0) >= JOURNAL_EVERY_BYTES:
            with self._lock:
                rec = self.journal.get(req.migration_id, "target")
                if rec is not None and rec.phase == "receiving":
                    self._journaled[rec.id] = next_offset
                    self.journal.update(rec, bytes_done=next_offset, **({"phase": "received"} if f.complete else {}))
        return MigrateChunkReply(id=req.id, migration_id=req.migration_id, next_offset=next_offset)

    def status(self, req: MigrateStatus) -> MigrateStatusReply:
        rec = self.journal.get(req.migration_id, "target")
        if rec is None:
            return MigrateStatusReply(id=req.id, migration_id=req.migration_id, phase="unknown",
                                      message=f"node {self.node} knows no migration {req.migration_id}")
        f = self._streams.get(rec.id)
        job = None
        if rec.phase == "committed" and rec.new_job_id:
            job = self.jobs.find_by_label(MIGRATION_LABEL, rec.id)
        return MigrateStatusReply(id=req.id, migration_id=rec.id, phase=rec.phase,  # type: ignore[arg-type]
                                  next_offset=f.next_offset if f else rec.bytes_done, size_bytes=rec.size_bytes,
                                  job=job, message=rec.reason)

    def commit(self, req: MigrateCommit) -> MigrateCommitReply:
        with self._lock:
            rec = self.journal.get(req.migration_id, "target")
            if rec is None:
                raise ProtocolError(ErrorCode.NOT_FOUND, f"node {self.node} accepted no migration {req.migration_id!r}; offer it first", "migration_id")
            if rec.phase == "committed":
                job = self.jobs.find_by_label(MIGRATION_LABEL, rec.id)
                if job is not None:
                    return MigrateCommitReply(id=req.id, migration_id=rec.id, job=job, message="already committed")
            if rec.phase not in ("receiving", "received", "starting"):
                raise ProtocolError(ErrorCode.CONFLICT, f"migration {rec.id} is {rec.phase} on node {self.node}; it cannot be committed", "migration_id")
            spec = msgspec.json.decode(rec.spec_json, type=JobSpec)
            spec = msgspec.structs.replace(spec, labels={**spec.labels, MIGRATION_LABEL: rec.id})
            ckpt_dir: Path | None = None
            if rec.mode in ("checkpoint", "criu"):
                ckpt_dir = self._verified_checkpoint(rec, req)
            self.journal.update(rec, phase="starting", checkpoint_dir=str(ckpt_dir or ""))
            resumed_from = rec.job_id
            try:
                extra = rec.extra
                job = self.jobs.start_resumed(spec, ckpt_dir, resumed_from, rec.was_paused, criu_image=rec.mode == "criu",
                                              lineage=list(extra.get("lineage") or [rec.job_id]),
                                              first_submitted_s=float(extra.get("first_submitted_s") or 0.0))
            except ProtocolError as exc:
                self._drop(rec, exc.message)
                raise
            except Exception as exc:  # noqa: BLE001 - becomes an error reply
                self._drop(rec, f"start failed: {exc}")
                raise ProtocolError(ErrorCode.FAILED, f"node {self.node} could not start job '{rec.job_id}': {exc}") from None
            if job.state == "failed":
                # It never ran here (shim or criu restore failed): the source still holds the
                # checkpoint and must run the job itself, so this is a refusal, not a commit.
                self._drop(rec, f"start failed: {job.reason}")
                raise ProtocolError(ErrorCode.FAILED, f"node {self.node} could not start job '{rec.job_id}': {job.reason}")
            self.journal.update(rec, phase="committed", new_job_id=job.id, reason=f"running as {job.id} ({job.state})")
            self._cleanup_files(rec)
            self.emit(Event(wall_s=self.wall(), node=self.node, kind="migration", job_id=job.id,
                            message=f"job '{rec.job_id}' from {rec.source_node} arrived as {job.id} ({job.state})",
                            data={"migration_id": rec.id, "phase": "committed", "resumed_from": rec.job_id}))
            return MigrateCommitReply(id=req.id, migration_id=rec.id, job=job)

    def _verified_checkpoint(self, rec: MigrationRecord, req: MigrateCommit) -> Path:
        """The checkpoint directory, complete and matching the commit's digest; raises
        ProtocolError (dropping the migration when it cannot succeed any more)."""
        ckpt_dir = self._dir(rec.id) / "checkpoint"
        if rec.checkpoint_dir and Path(rec.checkpoint_dir).is_dir():
            return ckpt_dir  # verified and unpacked before a restart interrupted the start
        f = self._streams.get(rec.id)
        # A streaming offer may give an upper bound; the commit gives the exact size.
        size = req.size_bytes or rec.size_bytes
        if size > rec.size_bytes:
            self._drop(rec, f"commit size {size} exceeds the offered bound {rec.size_bytes}")
            raise ProtocolError(ErrorCode.TOO_LARGE, f"migration {rec.id}: {size} bytes exceed the {rec.size_bytes} offered", "size_bytes")
        got = f.next_offset if f else 0
        if f is None or got != size:
            raise ProtocolError(ErrorCode.CONFLICT, f"migration {rec.id}: {got} of {size} checkpoint bytes received; send the rest first", "migration_id")
        want = req.sha256 or rec.sha256
        if not want or (rec.sha256 and req.sha256 and rec.sha256 != req.sha256):
            self._drop(rec, "no digest, or commit and offer disagree on it")
            raise ProtocolError(ErrorCode.INVALID, f"migration {rec.id}: the commit must carry the checkpoint's "
                                                   "SHA-256 (matching the offer's, if any)", "sha256")
        digest = f.digest()
        if digest != want:
            self._drop(rec, f"checkpoint digest mismatch: expected sha256 {want}, received {digest}")
            raise ProtocolError(ErrorCode.FAILED, f"checkpoint of job '{rec.job_id}' arrived corrupted on node "
                                                  f"{self.node} (sha256 {digest} != {want}); migration aborted", "sha256")
        self.journal.update(rec, size_bytes=size, sha256=want, bytes_done=size)
        try:
            self._unpackers.pop(rec.id).finish()
        except ArchiveError as exc:
            self._drop(rec, exc.message)
            code = ErrorCode.TOO_LARGE if exc.reason in ("too_large", "disk_full") else ErrorCode.FAILED
            raise ProtocolError(code, f"cannot unpack the checkpoint of job '{rec.job_id}' on node {self.node}: {exc.message}", "migration_id") from None
        return ckpt_dir

    def _start_reception(self, rec: MigrationRecord) -> None:
        """Receive from byte 0: the bytes are unpacked as they arrive, never kept as a tar."""
        unpacker = StreamUnpacker(self._dir(rec.id) / "checkpoint", limit_bytes=self.quota_bytes)
        self._unpackers[rec.id] = unpacker
        self._streams[rec.id] = IncomingStream(rec.size_bytes, unpacker.feed)

    def abort(self, req: MigrateAbort) -> MigrateAbortReply:
        with self._lock:
            rec = self.journal.get(req.migration_id, "target")
            if rec is None:
                # Remember the id, so a commit that arrives late is refused.
                rec = MigrationRecord(id=req.migration_id, side="target", job_id="", phase="aborted", reason=req.reason or "aborted before any offer")
                self.journal.create(rec, f"abort of unknown migration: {req.reason}")
                return MigrateAbortReply(id=req.id, migration_id=rec.id, message="nothing to abort")
            if rec.phase == "committed":
                raise ProtocolError(ErrorCode.CONFLICT, f"migration {rec.id} already started job {rec.new_job_id} on "
                                                        f"node {self.node}; cancel that job instead", "migration_id")
            if rec.phase != "aborted":
                self._drop(rec, req.reason or "aborted by the source")
            return MigrateAbortReply(id=req.id, migration_id=rec.id, message="aborted")

    def recover(self) -> list[MigrationRecord]:
        """After a restart: resume half-received migrations, settle interrupted starts, drop stale ones."""
        out = []
        now = self.wall()
        for rec in self.journal.unfinished("target"):
            out.append(rec)
            if rec.phase == "starting":
                job = self.jobs.find_by_label(MIGRATION_LABEL, rec.id)
                if job is not None:
                    self.journal.update(rec, phase="committed", new_job_id=job.id, reason=f"running as {job.id} ({job.state})")
                    self._cleanup_files(rec)
                    continue
                self.journal.update(rec, phase="received", message="agentd restarted before the job started; awaiting a new commit")
            if now - rec.updated_wall_s > self.stale_after_s:
                self._drop(rec, f"no word from the source for {self.stale_after_s:.0f} s")
                continue
            if rec.mode in ("checkpoint", "criu") and not rec.checkpoint_dir:
                # The unpacker's place in the stream died with the process: start over (the
                # source asks where to resume and gets 0). Received bytes live only unpacked.
                self._start_reception(rec)
                self.journal.update(rec, phase="receiving", bytes_done=0,
                                    message=f"agentd restarted after {rec.bytes_done} bytes; receiving again from byte 0")
        return out

    def expire_stale(self) -> int:
        """Drop incoming migrations with no word from the source for ``stale_after_s``; how many."""
        now, n = self.wall(), 0
        with self._lock:
            for rec in self.journal.unfinished("target"):
                if rec.phase in ("receiving", "received") and now - rec.updated_wall_s > self.stale_after_s:
                    f = self._streams.get(rec.id)
                    if f is not None and f.next_offset > rec.bytes_done:
                        self.journal.update(rec, bytes_done=f.next_offset)  # still moving: not stale
                        continue
                    self._drop(rec, f"no word from the source for {self.stale_after_s:.0f} s")
                    n += 1
        return n

    def _drop(self, rec: MigrationRecord, reason: str) -> None:
        unpacker = self._unpackers.pop(rec.id, None)
        if unpacker is not None:
            unpacker.abort()
        self._forget(rec.id)
        if is_safe_name(rec.id):
            shutil.rmtree(self._dir(rec.id), ignore_errors=True)
        self.journal.update(rec, phase="aborted", reason=reason)
        self.emit(Event(wall_s=self.wall(), node=self.node, kind="migration", job_id=rec.job_id, ok=False,
                        message=f"incoming migration of job '{rec.job_id}' from {rec.source_node} aborted: {reason}",
                        data={"migration_id": rec.id, "phase": "aborted"}))

    def _forget(self, mid: str) -> None:
        self._streams.pop(mid, None)
        self._journaled.pop(mid, None)

    def _cleanup_files(self, rec: MigrationRecord) -> None:
        self._forget(rec.id)
