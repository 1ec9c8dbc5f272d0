"""One followed node as a relay knows it, and its 1 Hz :class:`NodeSummary` (no sockets here).

The relay's link thread feeds a :class:`FollowedNode` with what its NodeLink yields (snapshot,
stream messages, link states); the summary is rebuilt when a sample arrives, with the one
``derive()``, so publishing is only collecting the latest summaries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import msgspec

from agentd.access import ROLE_RANK, public_job
from agentd.metrics import NodeInventory, NodeSample, derive
from agentd.protocol import TERMINAL_STATES, JobInfo
from agentd.protocol.alerts import Alert, alert_from_data
from agentd.protocol.messages import (
    EventMsg,
    HelloReply,
    InventoryMsg,
    JobMsg,
    SampleMsg,
    SnapshotReply,
    StreamMsg,
)
from agentd.protocol.relay import GpuSummary, JobSummary, NodeSummary, SummaryMsg

ENDED_JOBS_KEPT = 100  # ended jobs a relay remembers per node (for `jobs`); the node has them all
ROLES_BY_RANK = ("viewer", "user", "operator", "admin")


def least_role(*roles: str) -> str:
    """The weakest of ``roles`` (``daemon`` counts as viewer: it may only watch and migrate)."""
    return ROLES_BY_RANK[min(ROLE_RANK.get(r, 0) for r in roles)]


def summarise(node: str, newer: NodeSample | None, older: NodeSample | None, inventory: NodeInventory | None,
              jobs: list[JobInfo], **fields: object) -> NodeSummary:
    """The summary of one node from its two latest samples and its jobs."""
    d = derive(newer, older) if newer is not None else None
    rates = {j.job_id: j.app for j in d.jobs} if d is not None else {}
    active = [j for j in jobs if j.state not in TERMINAL_STATES]
    gpus = [GpuSummary(index=g.index, util_pct=g.sm_util_pct, mem_used_bytes=g.mem_used_bytes,
                       mem_total_bytes=g.mem_total_bytes, temp_c=g.temp_c, power_w=g.power_w)
            for g in (d.gpus if d is not None else [])]
    return NodeSummary(
        node=node, wall_s=newer.wall_s if newer is not None else 0.0,
        cpu_count=inventory.cpu_count if inventory is not None else 0,
        cpu_pct=d.cpu_pct if d is not None else None,
        mem_total_bytes=d.mem_total_bytes if d is not None else (inventory.mem_total_bytes if inventory else 0),
        mem_used_bytes=d.mem_used_bytes if d is not None else None,
        labels=dict(inventory.labels) if inventory is not None else {},
        simulated=inventory is not None and inventory.gpu_backend == "simulated",
        gpus=gpus,
        jobs=[JobSummary(id=j.id, name=j.name, state=j.state, owner=j.owner or j.spec.user or "", priority=j.priority,
                         gpus=list(j.gpus), throughput=rates.get(j.id, {})) for j in active],
        jobs_ended=len(jobs) - len(active),
        **fields,  # type: ignore[arg-type]
    )


@dataclass
class FollowedNode:
    """A node (or a child relay) this relay follows directly, fed by its link thread."""

    name: str  # from the cluster file until hello says
    endpoint: str
    server_key: str = ""
    link: str = "connecting"
    detail: str = ""
    hello: HelloReply | None = None
    inventory: NodeInventory | None = None
    newer: NodeSample | None = None
    older: NodeSample | None = None
    jobs: dict[str, JobInfo] = field(default_factory=dict)
    subtree: dict[str, NodeSummary] = field(default_factory=dict)  # a child relay's nodes, by name
    summary: NodeSummary | None = None
    # The node's own alerts firing now (its snapshot, then its alert events), by Alert.key. A
    # child relay's alerts about the nodes behind it reach us in its summaries instead.
    alerts: dict[tuple[str, str, str], Alert] = field(default_factory=dict)
    last_heard_s: float = field(default_factory=time.time)  # wall time of the last message (node_stale)

    @property
    def role(self) -> str:
        """This relay's role at the node (viewer until hello said more)."""
        return self.hello.role if self.hello is not None else "viewer"

    @property
    def is_relay(self) -> bool:
        return self.hello is not None and "relay" in self.hello.capabilities

    def on_snapshot(self, hello: HelloReply, reply: SnapshotReply) -> None:
        self.hello, self.name, self.inventory = hello, hello.node, reply.inventory
        self.newer = reply.samples[-1] if reply.samples else None
        self.older = reply.samples[-2] if len(reply.samples) > 1 else None
        # What crosses the relay is what every viewer may see: the relay may be an operator there.
        self.jobs = {j.id: public_job(j) for j in reply.jobs}
        self.alerts = {a.key: a for a in reply.alerts if a.node == self.name}
        self.link = "live"
        self.last_heard_s = time.time()
        self.refresh()

    def on_message(self, msg: StreamMsg) -> None:
        self.last_heard_s = time.time()
        if isinstance(msg, SampleMsg):
            self.older, self.newer = self.newer, msg.sample
            self.refresh()
        elif isinstance(msg, JobMsg):
            self.jobs[msg.job.id] = public_job(msg.job)
            self._prune()
        elif isinstance(msg, InventoryMsg):
            self.inventory = msg.inventory
        elif isinstance(msg, EventMsg) and msg.event.kind == "alert":
            self._on_alert(msg.event.data)
        elif isinstance(msg, SummaryMsg):
            for s in msg.nodes:
                if s.node != self.name:  # the child relay's own node: summarised here from its samples
                    self.subtree[s.node] = s

    def on_link(self, state: str, detail: str) -> None:
        self.link, self.detail = state, detail
        if self.summary is not None:
            self.refresh()

    def _on_alert(self, data: dict[str, object]) -> None:
        got = alert_from_data(data)
        if got is None or got[0].node != self.name:
            return
        alert, state = got
        if state == "firing":
            self.alerts[alert.key] = alert
        else:
            self.alerts.pop(alert.key, None)
        if self.summary is not None:
            self.summary = msgspec.structs.replace(self.summary, alerts=list(self.alerts.values()))

    def _prune(self) -> None:
        ended = [j for j in self.jobs.values() if j.state in TERMINAL_STATES]
        if len(ended) > ENDED_JOBS_KEPT:
            ended.sort(key=lambda j: j.ended_s or j.submitted_s)
            for j in ended[: len(ended) - ENDED_JOBS_KEPT]:
                del self.jobs[j.id]

    def refresh(self) -> None:
        caps = list(self.hello.capabilities) if self.hello is not None else []
        self.summary = summarise(
            self.name, self.newer, self.older, self.inventory, list(self.jobs.values()),
            endpoint=self.endpoint, link=self.link, detail=self.detail, relay_role=least_role(self.role),
            capabilities=caps, alerts=list(self.alerts.values()),
        )
        if "simulated" in caps and not self.summary.simulated:
            self.summary = msgspec.structs.replace(self.summary, simulated=True)
