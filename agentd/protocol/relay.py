"""What crosses a relay: per-node summaries, the subtree listing, full detail on demand.

A relay (``agentd --relay CLUSTER.toml``) follows many nodes and serves them on its own
sockets. By default only a compact :class:`NodeSummary` per node crosses it, once a second, in
:class:`SummaryMsg` batches on topic ``nsum``: every batch carries the whole current summary of
its nodes (not a delta), so a missed batch is repaired by the next one and a late joiner needs
nothing but ``nodes`` (the subtree now) to start. Full detail of one node is asked for with
``follow``: the reply carries that node's own snapshot, and from then on the node's own stream
messages travel wrapped in :class:`RelayedMsg` on topic ``d:NODE|`` with the node's own ``seq``
and ``epoch`` inside (Clone pattern per node: drop inner messages at or below the snapshot's
``seq``). A follow is a lease (at most :data:`FOLLOW_LEASE_S`) held by one client: its verified
identity and the ``client`` name it picks for the view. Following again renews that lease,
``unfollow`` ends it, and the detail crosses while any lease on the node is unexpired, so one
client's unfollow (or crash) never stops another's detail. Job actions need no new command: a job id names its node
(``gpu-a.42``), and the relay hands the request to that node and returns the node's reply.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from agentd.protocol.alerts import Alert
from agentd.protocol.messages import (
    TOPICS,
    OkReply,
    Reply,
    SnapshotReply,
    StreamMsg,
    command,
)
from agentd.protocol.messages import (
    Request as _Request,
)

FOLLOW_LEASE_S = 60.0  # the longest follow lease: detail stops crossing this long after the last renewal
ClientName = Annotated[str, msgspec.Meta(max_length=64)]
SUMMARY_BATCH = 400  # nodes per SummaryMsg (~100 KiB), so one frame never holds a whole fleet
# A client of a big subtree takes its summaries in phases (see SummaryMsg): its work per second
# then stays about SUMMARY_RATE_MAX summaries whatever the fleet's size.
SUMMARY_PHASES = 10
SUMMARY_RATE_MAX = 1500
NodeName = Annotated[str, msgspec.Meta(min_length=1, max_length=253)]


class GpuSummary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, array_like=True):
    """One GPU in a node summary (array-like on the wire: 8 GPUs × 1,000 nodes add up)."""

    index: int
    util_pct: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    temp_c: float | None = None
    power_w: float | None = None


class JobSummary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One unfinished job in a node summary; ``throughput`` holds its application rates
    (``tokens_per_s``...) as derived on the relay by the one ``derive()``."""

    id: str
    name: str
    state: str
    owner: str = ""
    priority: int = 0
    gpus: list[int] = []
    throughput: dict[str, float] = {}


class NodeSummary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a relay says about one node every second.

    ``link``: the relay's link to the node ("live", "stale", "down", "connecting").
    ``via``: the relays between the client and the node, nearest first (empty: the node is
    followed directly by the relay that answered). ``relay_role``: the least role the relays on
    that path hold at the node; nothing sent through them can do more. ``simulated``: the
    node is part of a fleet simulator (``agentd.simulate``) or has only simulated GPUs.
    """

    node: str
    endpoint: str = ""
    link: str = "connecting"
    detail: str = ""
    via: list[str] = []
    relay_role: str = "viewer"
    simulated: bool = False
    labels: dict[str, str] = {}
    wall_s: float = 0.0  # when the node measured the numbers below (its clock)
    cpu_count: int = 0
    cpu_pct: float | None = None
    mem_total_bytes: int = 0
    mem_used_bytes: int | None = None
    gpus: list[GpuSummary] = []
    jobs: list[JobSummary] = []
    jobs_ended: int = 0
    alerts: list[Alert] = []  # firing now: the node's own, and node_stale from the relay following it
    capabilities: list[str] = []


class SummaryMsg(StreamMsg, tag="nsum", kw_only=True):
    """A batch of node summaries (topic ``nsumP|``, P its ``phase``); ``node`` is the relay
    that sent it. Each tick batch ``i`` has phase ``(i + tick) % SUMMARY_PHASES``, so a client
    subscribed to ``k`` of the phases gets every node's summary ``k`` times in
    ``SUMMARY_PHASES`` ticks, and subscribing to ``nsum`` gets them all every tick."""

    nodes: list[NodeSummary] = []
    phase: Annotated[int, msgspec.Meta(ge=0, lt=100)] = 0

    @property
    def topic_suffix(self) -> bytes:
        return b"%d|" % self.phase


class RelayedMsg(StreamMsg, tag="fwd", kw_only=True):
    """One stream message of a followed node (``origin``), as that node sent it (``body``:
    its msgpack, with its own ``seq`` and ``epoch``). Topic ``d:ORIGIN|``: subscribe to
    exactly one node's detail (the ``|`` keeps ``d:gpu-1`` from matching ``gpu-10``)."""

    origin: str
    body: bytes

    @property
    def topic_suffix(self) -> bytes:
        return self.origin.encode() + b"|"


def detail_topic(node: str) -> bytes:
    """The PUB topic of one followed node's detail on a relay."""
    return b"d:" + node.encode() + b"|"


TOPICS[SummaryMsg] = b"nsum"
TOPICS[RelayedMsg] = b"d:"


def summary_phases(nodes: int) -> int:
    """How many of the SUMMARY_PHASES a client of ``nodes`` nodes takes so that it gets at
    most about SUMMARY_RATE_MAX summaries a second (all of them, up to that many nodes)."""
    return max(1, min(SUMMARY_PHASES, SUMMARY_PHASES * SUMMARY_RATE_MAX // max(1, nodes)))


def phased_topics(phases: int) -> tuple[bytes, ...]:
    """The topics of a relay client that takes ``phases`` of the summary phases and every
    other topic whole. Such a subscriber skips messages by design: it cannot read loss from
    ``seq`` (summaries are whole states, so a lost batch is repaired by the next one)."""
    if phases >= SUMMARY_PHASES:
        return (b"",)
    others = tuple(t for t in TOPICS.values() if t != TOPICS[SummaryMsg])
    return others + tuple(TOPICS[SummaryMsg] + b"%d|" % p for p in range(phases))


class NodesReply(Reply, kw_only=True):
    """``relay`` names the answering daemon; ``nodes`` is its whole subtree, itself included."""

    relay: str
    nodes: list[NodeSummary] = []


class FollowReply(Reply, kw_only=True):
    """The followed node's own snapshot; its detail now crosses on ``topic`` until
    ``lease_s`` after the last follow."""

    node: str
    topic: bytes
    lease_s: float = FOLLOW_LEASE_S
    snapshot: SnapshotReply


@command(NodesReply)
class Nodes(_Request, tag="nodes", kw_only=True):
    """Every node a relay serves, itself included, with the latest summary of each: the
    snapshot of a late joiner to a relay's summaries. A daemon that is no relay answers
    UNAVAILABLE (its hello lists no ``relay`` capability)."""


@command(FollowReply)
class Follow(_Request, tag="follow", kw_only=True):
    """Send ``node``'s full detail across the relay for the reply's ``lease_s`` (follow again
    to renew); the reply holds the node's snapshot. NOT_FOUND for a node the relay does not serve.
    The lease is this caller's under ``client`` (a name the client picks per view, e.g. a random
    token per window); ``lease_s`` asks for a shorter lease than the longest, FOLLOW_LEASE_S."""

    node: NodeName
    client: ClientName = ""
    lease_s: Annotated[float, msgspec.Meta(gt=0, le=FOLLOW_LEASE_S)] = FOLLOW_LEASE_S


@command(OkReply)
class Unfollow(_Request, tag="unfollow", kw_only=True):
    """End this caller's lease on ``node``'s detail under ``client`` (as given to ``follow``);
    the detail stops crossing when no other lease on the node is left."""

    node: NodeName
    client: ClientName = ""
