"""The live straggler and hang radar on the wire: ``group_health`` and ``capture_evidence``.

The daemon of a group's rank 0 (its *leader*) follows every rank's node and runs the radar
(``agentd.groups.radar``) on what they publish; ``group_health`` asks it for its current verdict
on each rank. When a rank turns straggler or hung the leader asks the rank's node to
``capture_evidence`` (a daemon verb: peer daemons and admins), which saves the rank's stacks,
its GPUs' clocks and throttle reasons and its last minute of metrics as JSON in the job's dir.
Each verdict change is also an event of kind ``"radar"`` with :class:`RankHealth` as its data.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from agentd.protocol.limits import JobId
from agentd.protocol.messages import Reply, Request, command

RankStatus = Literal["ok", "straggler", "hung", "waiting", "unknown"]


class RankHealth(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The radar's call on one rank. ``status`` "unknown": not observed yet (its node is not
    reachable, or the rank has not reported). ``likely``: slow_gpu, slow_host, extra_work or
    unknown (stragglers only). ``evidence``: the numbers that made the call; ``evidence_file``:
    where its node saved the captured stacks and metrics (``node:path``), once captured."""

    group: str
    rank: int
    node: str
    job_id: str = ""
    role: str = ""
    status: RankStatus = "unknown"
    likely: str = ""
    reason: str = ""
    since_s: float = 0.0  # wall time of the last status change
    evidence: dict[str, float] = {}
    evidence_file: str = ""


class GroupHealthReply(Reply, kw_only=True):
    group: str
    leader: str
    ranks: list[RankHealth] = msgspec.field(default_factory=list)
    message: str = ""


class EvidenceReply(Reply, kw_only=True):
    job_id: str
    path: str  # the JSON file on this node
    summary: dict[str, Any] = msgspec.field(default_factory=dict)


@command(GroupHealthReply)
class GroupHealth(Request, tag="group_health", kw_only=True):
    """The straggler and hang radar's verdict on every rank of GROUP (``NODE.run-N``), from
    the group's leader (the node of rank 0): status ok, straggler, hung, waiting (stalled behind
    a hung rank) or unknown, the likely class of a straggler and the evidence."""

    group: JobId


@command(EvidenceReply, role="daemon")
class CaptureEvidence(Request, tag="capture_evidence", kw_only=True):
    """Capture evidence about JOB on the node that runs it: each process's Python stack (py-spy
    dump where installed, else every thread's kernel stack, wchan and state), its GPUs' clocks
    and throttle reasons and its last minute of metrics, saved as JSON in the job's dir.
    ``reason`` is stored with it. Peer daemons (a group's leader) and admins."""

    job: JobId
    reason: str = ""
