"""Submitting from the app: a plan from the submit dialog (gui/submitform.py) sent through the
DataSource, as agentctl submit does it, without ever blocking the GUI thread.

A job: one ``submit`` to its node (through a relay, the relay forwards it: ``Submit.node`` names
the node behind it). A group: ``group_open`` to rank 0's node (a group id and a free rendezvous
port), then every rank's ``submit`` to its node, all at once, with the specs built by the same
step as the CLI's (agentd.groups.submitplan). When any rank is refused, the ranks that were
submitted are cancelled, so no half group waits for a gang that never completes. Outcomes land
in the event log and reach the window through ``succeeded``/``failed``, like gui/actions.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from PySide6.QtCore import QObject, Signal

from agentd.groups.submitplan import group_name, rank_specs
from agentd.protocol.gang import GroupOpen, GroupOpenReply
from agentd.protocol.jobs import JobInfo
from agentd.protocol.messages import Cancel, JobReply, Submit
from gui.actions import readable
from gui.sources.base import DataSource, RequestFailure
from gui.state import ClusterState
from gui.submitform import GroupPlan, JobPlan, NodeOffer


@dataclass
class _Group:
    """One group submit in flight."""

    plan: GroupPlan
    name: str
    group_id: str = ""
    rendezvous: str = ""
    left: int = 0  # rank submits not answered yet
    done: list[tuple[str, JobInfo]] = field(default_factory=list)  # (node key, rank) accepted
    refused: list[str] = field(default_factory=list)


@dataclass
class _Pending:
    kind: str  # "job", "open" or "rank"
    key: str
    group: _Group | None = None
    what: str = ""


def offers(source: DataSource, state: ClusterState) -> dict[str, NodeOffer]:
    """The nodes a submit can go to now: live ones that told their inventory, with their GPUs
    and the relay each is reached through."""
    out = {}
    for key, node in state.nodes.items():
        if node.link == "live" and node.inventory is not None:
            out[key] = NodeOffer(name=node.name, gpus=[g.index for g in node.inventory.gpus], relay=source.relay_of(key))
    return out


class Submitter(QObject):
    """Sends submit plans; ``submitted(job ids)`` when a job or a whole group was accepted."""

    succeeded = Signal(str)
    failed = Signal(str)
    submitted = Signal(list)

    def __init__(self, source: DataSource, state: ClusterState, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.source = source
        self.state = state
        self.pending: dict[int, _Pending] = {}
        source.request_done.connect(self._on_done)
        source.request_failed.connect(self._on_failed)

    def submit(self, plan: JobPlan | GroupPlan) -> None:
        if not self.source.capabilities().can_control:
            self._fail(f"submitting is not possible here: this view ({self.source.capabilities().label}) is read-only")
            return
        if isinstance(plan, JobPlan):
            relayed = self.source.relay_of(plan.node) is not None
            what = f"job '{plan.spec.name}'" if plan.spec.name else f"job {plan.spec.argv[0]!r}"
            token = self.source.request(plan.node, Submit(spec=plan.spec, node=plan.node if relayed else ""))
            self.pending[token] = _Pending("job", plan.node, what=what)
            return
        missing = [k for k in plan.keys.values() if self.source.address(k) is None]
        if missing:
            self._fail(f"cannot submit the group: the app has no address for node {missing[0]!r}; connect to it "
                       "directly (Cluster ▸ Connect to node…)")
            return
        leader = plan.keys[plan.spec.node_order()[0]]
        g = _Group(plan, name=plan.spec.name)
        self.pending[self.source.request(leader, GroupOpen())] = _Pending("open", leader, group=g)

    # ---- replies ----
    def _on_done(self, token: int, key: str, reply: object) -> None:
        p = self.pending.pop(token, None)
        if p is None:
            return
        if p.kind == "job" and isinstance(reply, JobReply):
            if key in self.state.nodes:
                self.state.apply_job(key, reply.job)
            self._ok(f"Submitted {p.what} on {key}: {reply.job.id}, now {reply.job.state}", key, reply.job.id)
            self.submitted.emit([reply.job.id])
        elif p.kind == "open" and isinstance(reply, GroupOpenReply) and p.group is not None:
            self._send_ranks(p.group, reply)
        elif p.kind == "rank" and isinstance(reply, JobReply) and p.group is not None:
            if key in self.state.nodes:
                self.state.apply_job(key, reply.job)
            p.group.done.append((key, reply.job))
            self._rank_answered(p.group)

    def _on_failed(self, token: int, failure: RequestFailure) -> None:
        p = self.pending.pop(token, None)
        if p is None:
            return
        if p.kind == "job":
            self._fail(f"Submitting {p.what} on {p.key} failed: {readable(failure.message)}", p.key)
        elif p.kind == "open" and p.group is not None:
            self._fail(f"Submitting group '{p.group.name or '(unnamed)'}' failed: rank 0's node {p.key} did not open "
                       f"it: {readable(failure.message)}", p.key)
        elif p.kind == "rank" and p.group is not None:
            p.group.refused.append(f"node {p.key}, {p.what}: {readable(failure.message)}")
            self._rank_answered(p.group)

    def _send_ranks(self, g: _Group, opened: GroupOpenReply) -> None:
        plan = g.plan
        order = plan.spec.node_order()
        endpoints, keys = {}, {}
        for n in order:
            addr = self.source.address(plan.keys[n])
            if addr is None:  # the node was removed while group_open was under way
                self._fail(f"Submitting group {opened.group_id} failed: node {n} is no longer connected; nothing was "
                           "submitted")
                return
            endpoints[n] = addr.endpoint
            keys[n] = addr.server_key or ""  # z85 text: the live source turned key files into keys
        g.group_id = opened.group_id
        g.name = group_name(plan.spec, opened.group_id)
        port = plan.spec.master_port or opened.master_port
        addr_host = urlsplit(endpoints[order[0]]).hostname or "127.0.0.1"
        g.rendezvous = f"{addr_host}:{port}"
        specs = rank_specs(plan.spec, plan.ranks, opened.group_id, addr_host, port, endpoints, limits=plan.limits,
                           keys=keys)
        g.left = sum(len(s) for s in specs.values())
        for n, node_specs in specs.items():
            key = plan.keys[n]
            for s in node_specs:
                token = self.source.request(key, Submit(spec=s))
                self.pending[token] = _Pending("rank", key, group=g, what=f"rank {s.group.rank if s.group else '?'}")

    def _rank_answered(self, g: _Group) -> None:
        g.left -= 1
        if g.left > 0:
            return
        n_nodes = len(g.plan.keys)
        if g.refused:
            # Never leave half a group queued: the leader would wait for the missing ranks forever.
            for key, job in g.done:
                self.source.request(key, Cancel(job=job.id, grace_s=0))
            self._fail(f"Group {g.group_id} ('{g.name}') was not submitted — {g.refused[0]}"
                       + (f" (+{len(g.refused) - 1} more refusals)" if len(g.refused) > 1 else "")
                       + (f"; the {len(g.done)} rank(s) that were accepted are being cancelled" if g.done else ""))
            return
        self._ok(f"Submitted group {g.group_id} ('{g.name}'): {len(g.done)} ranks on {n_nodes} nodes, rendezvous "
                 f"{g.rendezvous}; they start together when every node has room")
        self.submitted.emit([job.id for _, job in g.done])

    def _ok(self, message: str, node: str = "", job_id: str = "") -> None:
        self.state.add_local_event(message, node=node, job_id=job_id)
        self.succeeded.emit(message)

    def _fail(self, message: str, node: str = "") -> None:
        self.state.add_local_event(message, node=node, ok=False, kind="error")
        self.failed.emit(message)
