"""Daemon-to-daemon migration commands: offer, chunks, status, commit, abort.

A source daemon moves a job to a target daemon in five steps, all with role ``daemon`` (on a
non-loopback address only CURVE keys authorised as daemons may call them):

1. ``migrate_offer``: the job spec, the checkpoint's size and SHA-256, the migration id. The
   target accepts (and says when the job will queue for lack of free GPUs) or refuses with an
   error reply (TOO_LARGE over quota, INVALID impossible spec, UNAVAILABLE mode unsupported).
2. ``migrate_chunk``: ``data`` at ``offset``; the reply carries the next offset the target
   expects (the end of the contiguous bytes it holds). Duplicates are harmless. Chunks for an
   id the target did not accept get NOT_FOUND.
3. ``migrate_status``: where a migration stands on the target (after a dropped connection the
   sender continues from ``next_offset``; after a lost commit reply it learns the new job id).
4. ``migrate_commit``: the target verifies the digest, unpacks, starts the job with
   AGENTD_RESUME=1 and replies with the new job. Idempotent: a repeated commit returns the
   same job.
5. ``migrate_abort``: the target drops what it received and remembers the id as aborted, so a
   late commit for it is refused. Refused with CONFLICT once the job was started there.
"""

from __future__ import annotations

from typing import Literal

from agentd.protocol.jobs import JobInfo, JobSpec, Lineage
from agentd.protocol.limits import ByteOffset, ChunkData, JobId, MigrationId, Name, Reason, Sha256, WallSeconds
from agentd.protocol.messages import Reply, Request, command

MigrationMode = Literal["checkpoint", "queued", "restart", "criu"]
TargetPhase = Literal["receiving", "received", "starting", "committed", "aborted", "unknown"]


class MigrateOfferReply(Reply, kw_only=True):
    """Accepted. ``will_queue``: the job waits in the target's queue (``message`` says why)."""

    migration_id: str
    next_offset: ByteOffset = 0
    will_queue: bool = False
    message: str = ""


class MigrateChunkReply(Reply, kw_only=True):
    migration_id: str
    next_offset: ByteOffset  # end of the contiguous bytes the target holds


class MigrateStatusReply(Reply, kw_only=True):
    migration_id: str
    phase: TargetPhase
    next_offset: ByteOffset = 0
    size_bytes: ByteOffset = 0
    job: JobInfo | None = None
    message: str = ""


class MigrateCommitReply(Reply, kw_only=True):
    migration_id: str
    job: JobInfo
    message: str = ""


class MigrateAbortReply(Reply, kw_only=True):
    migration_id: str
    message: str = ""


@command(MigrateOfferReply, role="daemon")
class MigrateOffer(Request, tag="migrate_offer", kw_only=True):
    """Offer a job to this daemon. ``mode``: "checkpoint" (a checkpoint of ``size_bytes``
    (an uncompressed tar) with digest ``sha256`` follows in chunks; an empty ``sha256`` means
    the source hashes while it streams and the commit gives the digest, and ``size_bytes``
    may then be an upper bound the commit makes exact), "queued" (spec only, joins the queue),
    "restart" (spec only, starts from scratch), "criu" (a CRIU image follows). ``paused``:
    start it frozen. ``source_node``/``source_job`` say where it came from. The spec carries
    the job's *current* priority (set after submit too), limits and labels; the target applies
    them to the new job (nice, cgroup CPU/IO weights, limits). ``lineage``: the job's ids so
    far, oldest first, ``source_job`` last; ``first_submitted_s``: wall time of its first submit
    (the new job keeps both: one identity across hops)."""

    migration_id: MigrationId
    spec: JobSpec
    source_node: Name
    source_job: JobId
    mode: MigrationMode = "checkpoint"
    size_bytes: ByteOffset = 0
    sha256: Sha256 = ""
    paused: bool = False
    lineage: Lineage = []
    first_submitted_s: WallSeconds = 0.0


@command(MigrateChunkReply, role="daemon")
class MigrateChunk(Request, tag="migrate_chunk", kw_only=True):
    """``data`` (at most 1 MiB) of an accepted migration's checkpoint at byte ``offset``."""

    migration_id: MigrationId
    offset: ByteOffset
    data: ChunkData


@command(MigrateStatusReply, role="daemon")
class MigrateStatus(Request, tag="migrate_status", kw_only=True):
    """Where migration ``migration_id`` stands on this daemon."""

    migration_id: MigrationId


@command(MigrateCommitReply, role="daemon")
class MigrateCommit(Request, tag="migrate_commit", kw_only=True):
    """Verify the received checkpoint against ``sha256`` (and ``size_bytes``, which a
    streaming offer left open), unpack it and start the job."""

    migration_id: MigrationId
    sha256: Sha256 = ""
    size_bytes: ByteOffset = 0


@command(MigrateAbortReply, role="daemon")
class MigrateAbort(Request, tag="migrate_abort", kw_only=True):
    """Forget migration ``migration_id``: delete what was received; refuse a later commit."""

    migration_id: MigrationId
    reason: Reason = ""
