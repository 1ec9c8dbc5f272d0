"""Group (gang) commands: opening a group, acting on all of a node's ranks of a group, and the
daemon-to-daemon verbs of gang admission (docs/groups.md).

Clients (role ``user``; each member job is checked against the caller's rights):

- ``group_open`` (to the node of rank 0): a new cluster-unique group id and a free rendezvous
  port on that node.
- ``group_action``: pause, resume, priority or cancel every rank of a group on this node; the
  reply gives the wall time each rank's action completed (for a paused rank: when the kernel
  reported it frozen), so the client measures the skew across nodes.

Daemons (role ``daemon``; they act only on ranks that users already submitted, never create a
job): the leader (rank 0's node) runs admission rounds with ``gang_prepare`` (reserve this node's
ranks' resources for ``ttl_s`` if they all fit), ``gang_start`` (start the reserved ranks) or
``gang_release`` (drop the reservation, keep the ranks queued with ``reason``), watches the
ranks with ``gang_status`` and applies the rank-failure policy with ``gang_cancel``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from agentd.protocol.jobs import JobInfo
from agentd.protocol.limits import GraceSeconds, JobId, PriorityValue, Reason
from agentd.protocol.messages import OkReply, Reply, Request, command

GroupActionName = Literal["pause", "resume", "priority", "cancel"]
TtlSeconds = Annotated[float, msgspec.Meta(gt=0, le=600)]


class GroupOpenReply(Reply, kw_only=True):
    """``group_id``: ``NODE.run-N``; ``master_port``: a port that was free on this node."""

    group_id: str
    master_port: int


@command(GroupOpenReply, role="user")
class GroupOpen(Request, tag="group_open", kw_only=True):
    """Open a group on this node (rank 0's): a new group id and a free rendezvous port here."""


class GroupActionReply(Reply, kw_only=True):
    """The group's ranks on this node after the action; ``done_wall_s``: job id -> wall time
    (s) the action completed for it (the kernel reported it frozen, for pause)."""

    jobs: list[JobInfo] = msgspec.field(default_factory=list)
    done_wall_s: dict[str, float] = msgspec.field(default_factory=dict)
    message: str = ""


@command(GroupActionReply, role="user")
class GroupAction(Request, tag="group_action", kw_only=True):
    """Pause, resume, reprioritise or cancel every rank of ``group`` on this node, each as the
    single-job verb would (refused as a whole unless the caller may control every one)."""

    group: JobId
    action: GroupActionName
    priority: PriorityValue = 0
    grace_s: GraceSeconds = 10.0


class GangPrepareReply(Reply, kw_only=True):
    """``ready``: all ``members`` ranks of the group here are reserved until the TTL ends;
    otherwise ``reason`` says what is missing (``members`` counts the ranks queued here)."""

    ready: bool
    members: int = 0
    expected: int = 0
    reason: str = ""


@command(GangPrepareReply, role="daemon")
class GangPrepare(Request, tag="gang_prepare", kw_only=True):
    """Reserve this node's queued ranks of ``group`` (all of them, or none) for ``ttl_s``."""

    group: JobId
    ttl_s: TtlSeconds = 20.0


class GangJobsReply(Reply, kw_only=True):
    jobs: list[JobInfo] = msgspec.field(default_factory=list)
    message: str = ""


@command(GangJobsReply, role="daemon")
class GangStart(Request, tag="gang_start", kw_only=True):
    """Start this node's reserved ranks of ``group`` (CONFLICT when a rank is not reserved and
    no longer fits)."""

    group: JobId


@command(OkReply, role="daemon")
class GangRelease(Request, tag="gang_release", kw_only=True):
    """Drop this node's reservation for ``group``; its ranks stay queued with ``reason``."""

    group: JobId
    reason: Reason = ""


@command(GangJobsReply, role="daemon")
class GangStatus(Request, tag="gang_status", kw_only=True):
    """This node's ranks of ``group`` (env values left out)."""

    group: JobId


@command(GangJobsReply, role="daemon")
class GangCancel(Request, tag="gang_cancel", kw_only=True):
    """Cancel this node's unfinished ranks of ``group`` (the rank-failure policy); ``reason``
    is recorded on each."""

    group: JobId
    reason: Reason = ""
    grace_s: GraceSeconds = 5.0
