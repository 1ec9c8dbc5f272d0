"""The relay inside agentd (``agentd --relay CLUSTER.toml``): follow many nodes, serve them all.

Threads (the daemon's rule: one thread owns each socket):

- the relay's link thread owns a :class:`~agentd.transport.fanout.LinkPool` (every followed
  node's DEALER and SUB) and folds what arrives into :class:`FollowedNode` objects;
- the daemon's loop thread owns the PUB: at each tick (:meth:`Relay.on_tick`) it publishes the
  summaries of the whole subtree, and at each wake-up (:meth:`Relay.flush`) the detail of the
  followed nodes queued by the link thread;
- the daemon's request pool runs :meth:`Relay.route`: a job action for another node goes to
  that node on a short-lived client of the pool thread's own, and the node's reply (or
  refusal) comes back to the caller.

Security (docs/relays.md): a node authorises the relay like any client, with the least role
it should have there; the relay gives each client ``least_role(client's role at the relay,
the relay's role at the node, ...)`` along the path, checks job ownership itself for users
(by the Unix user name, as Slurm does across a cluster), and names the client in the ``actor``
note the node writes to its audit log. A relay never gives a client more than its own key has.

Slightly over 500 lines: the routing of every request kind and the rights check it needs are
kept in one class, so no request can reach a node without passing the same check.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Protocol

import msgspec

from agentd.access import Caller, public_job, without_env_values
from agentd.clusterfile import ClusterFile
from agentd.health.engine import NodeLiveness, alert_event
from agentd.health.rules import HealthRules
from agentd.metrics import NodeInventory, NodeSample
from agentd.protocol import ErrorCode, JobInfo, ProtocolError
from agentd.protocol.alerts import Alert
from agentd.protocol.jobs import Event
from agentd.protocol.messages import (
    Alerts,
    AlertsReply,
    Cancel,
    JobReply,
    Jobs,
    JobsReply,
    Logs,
    Migrate,
    OkReply,
    Pause,
    Priority,
    Reply,
    Request,
    Resume,
    Show,
    Snapshot,
    SnapshotReply,
    StreamMsg,
    Submit,
)
from agentd.protocol.relay import (
    SUMMARY_BATCH,
    SUMMARY_PHASES,
    Follow,
    FollowReply,
    JobSummary,
    Nodes,
    NodesReply,
    NodeSummary,
    RelayedMsg,
    SummaryMsg,
    Unfollow,
    detail_topic,
)
from agentd.relay.summary import FollowedNode, least_role, summarise
from agentd.transport.client import (
    ClientError,
    LinkMessage,
    LinkSnapshot,
    LinkState,
    RemoteError,
    Unreachable,
)
from agentd.transport.fanout import LinkPool

log = logging.getLogger(__name__)
FORWARDED: tuple[type[Request], ...] = (Show, Pause, Resume, Priority, Cancel, Logs, Migrate)
CONTROL = (Pause, Resume, Priority, Cancel, Migrate)
FORWARD_TIMEOUT_S = 20.0
# Least time between two polls of the link pool. A poll costs O(followed sockets) whatever
# is ready (pyzmq builds the whole poll set each call), so polling as soon as anything arrives
# meant hundreds of O(2,000) polls a second at 1,000 nodes; waiting this long lets each poll
# drain a batch (every ready socket is read to empty). It adds at most this much latency.
POLL_GAP_S = 0.05
# While its links first connect (libzmq's buffers for thousands of connections, the nodes'
# snapshots), the relay's growth is its own, not a flood: it says so to the flood guard after
# every batch for at most this long, and after every snapshot or link change at any time.
SETTLE_S = 120.0
DETAIL_QUEUE = 20000  # queued detail messages at most (a slow loop drops the oldest)


class _Waker(Protocol):
    def wake(self) -> None: ...
    def own_growth(self, hold_s: float = 0.0) -> None: ...


class _Health(Protocol):
    rules: HealthRules

    def active(self) -> list[Alert]: ...


class _Access(Protocol):
    def run_as(self, caller: Caller, requested: str | None) -> str: ...


class RelayHost(Protocol):
    """What the relay needs of the daemon it lives in."""

    node: str
    inventory: NodeInventory

    @property
    def sockets(self) -> _Waker: ...  # read-only here, so the daemon's DaemonSockets fits
    @property
    def health(self) -> _Health: ...
    @property
    def access(self) -> _Access: ...
    def publish(self, make: Callable[[int], StreamMsg]) -> None: ...
    def emit(self, item: Event | JobInfo) -> None: ...
    def all_jobs(self, active_only: bool = False) -> list[JobInfo]: ...


@dataclasses.dataclass(frozen=True)
class Route:
    """How to reach a node: the followed link's endpoint, and the relays on the way."""

    node: str
    endpoint: str
    server_key: str
    via: tuple[str, ...]  # child relays between this relay and the node, nearest first
    role: str  # the least role this relay's path holds at the node


class Relay:
    """Follows the cluster file's nodes and serves their subtree through its daemon."""

    capabilities: ClassVar[list[str]] = ["relay"]

    def __init__(self, host: RelayHost, cluster: ClusterFile, keys_dir: Path | None = None) -> None:
        self.host = host
        self.pool = LinkPool(keys_dir)
        self._lock = threading.Lock()
        self.followed: dict[str, FollowedNode] = {}  # by endpoint
        for n in cluster.node:
            if n.name == host.node:
                continue  # the relay's own node: served by its daemon directly
            self.followed[n.endpoint] = FollowedNode(n.name, n.endpoint, n.server_key)
        self._detail: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=DETAIL_QUEUE)
        # node -> {(verified caller, client name): lease end (monotonic)}; _follow_until holds the
        # latest end per node, so the link thread's check per message is one dict lookup.
        self._leases: dict[str, dict[tuple[str, str], float]] = {}
        self._follow_until: dict[str, float] = {}
        self._own: tuple[NodeSample | None, NodeSample | None] = (None, None)
        self._ticks = 0  # summary phases rotate with it (SummaryMsg)
        # node_stale for the nodes (and child relays) followed directly; a child relay runs its
        # own for the nodes behind it, and its summaries carry them up.
        self.liveness = NodeLiveness(host.health.rules, observer=f"relay {host.node}")
        self._stale: dict[str, Alert] = {}  # by node, for the summaries (loop thread writes, whole-dict swap)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentd-relay-links", daemon=True)
        self._thread.start()

    # ---- the link thread ---------------------------------------------------------------
    def _run(self) -> None:
        # The daemon's flood guard reads unexplained memory growth as a flood of requests and
        # cuts every client: the relay's own growth (its links, the nodes' snapshots) is not.
        self.host.sockets.own_growth(hold_s=5.0)
        for f in self.followed.values():
            self.pool.add(f.endpoint, f.server_key)
        not_live = set(self.followed)
        settle_until = time.monotonic() + SETTLE_S
        last_poll = 0.0
        while not self._stop.is_set():
            gap = last_poll + POLL_GAP_S - time.monotonic()
            if gap > 0:
                self._stop.wait(gap)
            last_poll = time.monotonic()
            if not_live and last_poll < settle_until:
                self.host.sockets.own_growth(hold_s=1.0)  # this batch (hellos, snapshots) and the next
            try:
                events = self.pool.poll(0.1)
            except Exception:  # a link that cannot be polled must not stop the others
                log.exception("relay poll failed")
                time.sleep(0.5)
                continue
            if not events:
                continue
            queued = False
            grew = False
            with self._lock:
                for ev in events:
                    got = self.followed.get(ev.endpoint)
                    if got is None:
                        continue
                    f = got
                    if isinstance(ev, LinkSnapshot):
                        f.on_snapshot(ev.hello, ev.reply)
                        not_live.discard(ev.endpoint)
                        grew = True
                    elif isinstance(ev, LinkState):
                        grew = True
                        f.on_link(ev.state, ev.detail)
                    elif isinstance(ev, LinkMessage):
                        msg = ev.msg
                        if isinstance(msg, RelayedMsg):
                            if self._is_followed(msg.origin):
                                self._detail.append((msg.origin, msg.body))
                                queued = True
                            continue
                        if isinstance(msg, SummaryMsg):  # a child relay's subtree: new nodes are new memory
                            known = len(f.subtree)
                            f.on_message(msg)
                            grew = grew or len(f.subtree) > known
                        else:
                            f.on_message(msg)
                        if not isinstance(msg, SummaryMsg) and self._is_followed(f.name):
                            self._detail.append((f.name, msgspec.msgpack.encode(msg)))
                            queued = True
            if grew:
                self.host.sockets.own_growth(hold_s=POLL_GAP_S)
            if queued:
                self.host.sockets.wake()
        self.pool.close()

    def _is_followed(self, node: str) -> bool:
        return self._follow_until.get(node, 0.0) > time.monotonic()

    def _set_lease(self, node: str, key: tuple[str, str], end: float | None) -> None:
        """Renew (``end``) or drop (None) one client's lease on ``node``; expired ones go too.
        Called with the lock held."""
        now = time.monotonic()
        leases = {k: e for k, e in self._leases.get(node, {}).items() if e > now and k != key}
        if end is not None:
            leases[key] = end
        if leases:
            self._leases[node] = leases
            self._follow_until[node] = max(leases.values())
        else:
            self._leases.pop(node, None)
            self._follow_until.pop(node, None)

    def leases(self, node: str) -> list[tuple[str, str]]:
        """Who holds an unexpired lease on ``node``'s detail: (caller, client name)."""
        now = time.monotonic()
        with self._lock:
            return sorted(k for k, e in self._leases.get(node, {}).items() if e > now)

    # ---- the daemon's loop thread --------------------------------------------------------
    def flush(self) -> None:
        """Publish the detail queued by the link thread (loop thread)."""
        while True:
            try:
                origin, body = self._detail.popleft()
            except IndexError:
                return
            self.host.publish(self._relayed(origin, body))

    def _relayed(self, origin: str, body: bytes) -> Callable[[int], StreamMsg]:
        return lambda seq: RelayedMsg(node=self.host.node, seq=seq, origin=origin, body=body)

    def _summaries(self, batch: list[NodeSummary], phase: int) -> Callable[[int], StreamMsg]:
        return lambda seq: SummaryMsg(node=self.host.node, seq=seq, nodes=batch, phase=phase)

    def on_tick(self, sample: NodeSample) -> None:
        """Once per daemon tick: the whole subtree's summaries, in batches (loop thread)."""
        self._own = (sample, self._own[0])
        self._observe_liveness()
        nodes, _ = self.subtree()
        self._ticks += 1
        for i in range(0, len(nodes), SUMMARY_BATCH):
            batch = nodes[i:i + SUMMARY_BATCH]
            self.host.publish(self._summaries(batch, (i // SUMMARY_BATCH + self._ticks) % SUMMARY_PHASES))

    def _observe_liveness(self) -> None:
        with self._lock:
            heard = {f.name: f.last_heard_s for f in self.followed.values()}
        try:
            changes = self.liveness.observe(heard, time.time())
        except Exception:  # a rule's bug must not stop the summaries
            log.exception("node_stale rule failed this tick")
            return
        self._stale = {a.node: a for a in self.liveness.active()}
        for change in changes:
            self.host.emit(alert_event(change, time.time()))

    def alerts(self) -> list[Alert]:
        """Every alert firing in the subtree: this node's, each node's own, node_stale."""
        out = {a.key: a for a in self.host.health.active()}
        nodes, _ = self.subtree()
        for n in nodes:
            out.update((a.key, a) for a in n.alerts)
        return sorted(out.values(), key=lambda a: (a.since_s, a.key))

    # ---- what the relay serves -----------------------------------------------------------
    def subtree(self) -> tuple[list[NodeSummary], dict[str, Route]]:
        """Every node served (this one first), and how to reach each. A node reachable directly
        and through a child relay is reached directly; one behind two child relays through
        the one whose link to it is live (failover when a relay dies)."""
        newer, older = self._own
        own = summarise(self.host.node, newer, older, self.host.inventory, self.host.all_jobs(active_only=True),
                        link="live", relay_role="admin", capabilities=list(self.capabilities))
        out: dict[str, NodeSummary] = {own.node: own}
        routes: dict[str, Route] = {}
        with self._lock:
            followed = list(self.followed.values())
            stale = self._stale
            for f in followed:
                if f.name in out:
                    continue
                summary = f.summary
                if summary is None and f.name in stale:  # never answered: still listed, as stale
                    summary = NodeSummary(node=f.name, endpoint=f.endpoint, link=f.link, detail=f.detail)
                if summary is not None:
                    if f.name in stale:
                        summary = msgspec.structs.replace(summary, alerts=[*summary.alerts, stale[f.name]])
                    out[f.name] = summary
                    routes[f.name] = Route(f.name, f.endpoint, f.server_key, (), f.role)
            for f in followed:
                if not f.is_relay:
                    continue
                for s in f.subtree.values():
                    role = least_role(f.role, s.relay_role)
                    s2 = msgspec.structs.replace(s, via=[f.name, *s.via], relay_role=role)
                    if f.link != "live":
                        s2 = msgspec.structs.replace(s2, link="stale" if s2.link == "live" else s2.link,
                                                     detail=f"relay {f.name} is {f.link}")
                    held = out.get(s.node)
                    if held is None or (held.via and held.link != "live" and s2.link == "live"):
                        out[s.node] = s2
                        routes[s.node] = Route(s.node, f.endpoint, f.server_key, (f.name, *s.via), role)
        return list(out.values()), routes

    def _route_to(self, node: str) -> Route:
        _, routes = self.subtree()
        r = routes.get(node)
        if r is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"node {node!r} is not served by relay {self.host.node!r}; "
                                "`agentctl --node RELAY nodes` lists the nodes it serves", "node")
        return r

    def route(self, req: Request, caller: Caller) -> Reply | None:
        """The reply to a request the relay answers, or None for the daemon's own node."""
        if isinstance(req, Nodes):
            nodes, _ = self.subtree()
            return NodesReply(relay=self.host.node, nodes=nodes)
        if isinstance(req, Jobs):
            return self._jobs(req, caller)
        if isinstance(req, Alerts):
            return AlertsReply(alerts=self.alerts())
        if isinstance(req, Submit):
            return self._submit(req, caller)
        if isinstance(req, Follow):
            return self._follow(req, caller)
        if isinstance(req, Unfollow):
            return self._unfollow(req, caller)
        if isinstance(req, FORWARDED):
            job_id: str = req.job  # type: ignore[attr-defined]
            node = job_id.rpartition(".")[0]
            if not node or node == self.host.node:
                return None
            return self._forward_job(req, job_id, self._route_to(node), caller)
        return None

    def _jobs(self, req: Jobs, caller: Caller) -> JobsReply:
        jobs = [without_env_values(j) if caller.may_see_private(j.owner) else public_job(j)
                for j in self.host.all_jobs(active_only=req.active_only)]
        children: list[FollowedNode] = []
        with self._lock:
            for f in self.followed.values():
                if f.is_relay:
                    children.append(f)
                    continue
                jobs += [j for j in f.jobs.values() if not req.active_only or j.state in ("queued", "running", "paused",
                                                                                          "checkpointing", "migrating")]
        omitted = 0
        for f in children:  # a child relay lists its own subtree (Slurm's fan-out)
            try:
                reply = self._call(f.endpoint, f.server_key, Jobs(active_only=req.active_only, actor=caller.name))
            except ProtocolError as exc:
                log.info("jobs of relay %s left out: %s", f.name, exc.message)
                continue
            assert isinstance(reply, JobsReply)
            jobs += reply.jobs
            omitted += reply.omitted
        return JobsReply(jobs=jobs, omitted=omitted)

    def _follow(self, req: Follow, caller: Caller) -> FollowReply:
        if req.node == self.host.node:
            raise ProtocolError(ErrorCode.INVALID, f"{req.node!r} is this relay's own node: its detail is on this "
                                "stream already (subscribe to it and ask for `snapshot`)", "node")
        r = self._route_to(req.node)
        with self._lock:  # before the snapshot: nothing between it and the stream is lost
            self._set_lease(req.node, (caller.name, req.client), time.monotonic() + req.lease_s)
        if r.via:  # the child relay follows it for us (a lease of ours per client of ours)
            reply = self._call(r.endpoint, r.server_key, Follow(node=req.node, actor=caller.name,
                                                                 client=self._child_client(caller, req.client),
                                                                 lease_s=req.lease_s))
            assert isinstance(reply, FollowReply)
            return msgspec.structs.replace(reply, id=0, topic=detail_topic(req.node), lease_s=req.lease_s)
        snap = self._call(r.endpoint, r.server_key, Snapshot(history=2, actor=caller.name))
        assert isinstance(snap, SnapshotReply)
        snap = msgspec.structs.replace(snap, jobs=[public_job(j) for j in snap.jobs])
        return FollowReply(node=req.node, topic=detail_topic(req.node), snapshot=snap, lease_s=req.lease_s)

    @staticmethod
    def _child_client(caller: Caller, client: str) -> str:
        """The client name a parent relay's lease at a child relay carries: one per client of
        the parent, so each one's unfollow ends only its own lease there too."""
        return f"{caller.name}/{client}"[-64:]

    def _unfollow(self, req: Unfollow, caller: Caller) -> OkReply:
        with self._lock:
            self._set_lease(req.node, (caller.name, req.client), None)
            left = len(self._leases.get(req.node, {}))
        r = self._route_to(req.node) if req.node != self.host.node else None
        if r is not None and r.via:  # end our lease for this client at the child relay too
            try:
                self._call(r.endpoint, r.server_key, Unfollow(node=req.node, actor=caller.name,
                                                             client=self._child_client(caller, req.client)))
            except ProtocolError as exc:  # its lease expires by itself
                log.info("unfollow of %s at relay %s: %s", req.node, r.via[0], exc.message)
        return OkReply(message=f"your lease on {req.node}'s detail has ended; {left} other lease(s) on it left")

    def _submit(self, req: Submit, caller: Caller) -> Reply | None:
        """A submit names the node that runs the job (``--on``); the relay's own runs here."""
        if req.node == self.host.node or (not req.node and not self.followed):
            return None
        if not req.node:
            nodes, _ = self.subtree()
            raise ProtocolError(ErrorCode.INVALID, f"relay {self.host.node!r} serves {len(nodes)} nodes; say which one "
                                "runs the job: `agentctl --node RELAY submit --on NODE -- CMD` (`--on "
                                f"{self.host.node}` runs it on the relay's own node; `agentctl --node RELAY nodes` "
                                "lists them)", "node")
        r = self._route_to(req.node)
        role = least_role(caller.role, r.role)
        eff = dataclasses.replace(caller, role=role)
        if not eff.at_least(req.role):
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"{caller.name} has role {caller.role} at relay {self.host.node!r}, "
                                f"and the relay holds role {r.role} at node {r.node!r}, so through it {caller.name} is a "
                                f"{role}; 'submit' needs {req.role} (authorise the relay's key there with a higher role, "
                                "or submit to the node directly)")
        # The job runs as the client (never as the relay's own user): the relay decides who
        # that is with the client's effective role, and the node then checks that the relay
        # may submit as that user (only a relay that is admin there may run jobs as others).
        user = self.host.access.run_as(eff, req.spec.user)
        spec = msgspec.structs.replace(req.spec, user=user)
        note = f"{caller.name} via relay {self.host.node}" + (f" ({caller.note})" if caller.note else "")
        fwd = msgspec.structs.replace(req, spec=spec, node="" if not r.via else req.node, actor=note[:200])
        reply = self._call(r.endpoint, r.server_key, fwd)
        if isinstance(reply, JobReply) and not eff.may_see_private(reply.job.owner or user):
            reply = msgspec.structs.replace(reply, job=public_job(reply.job))
        return reply

    def _known_job(self, job_id: str) -> JobInfo | JobSummary | None:
        with self._lock:
            for f in self.followed.values():
                if job_id in f.jobs:
                    return f.jobs[job_id]
                for s in f.subtree.values():
                    for j in s.jobs:
                        if j.id == job_id:
                            return j
        return None

    def _forward_job(self, req: Request, job_id: str, r: Route, caller: Caller) -> Reply:
        cmd = str(type(req).__struct_config__.tag)
        role = least_role(caller.role, r.role)
        # Who the client is here, with no more than this relay holds at the node.
        eff = dataclasses.replace(caller, role=role)
        if not eff.at_least(req.role):
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"{caller.name} has role {caller.role} at relay {self.host.node!r}, "
                                f"and the relay holds role {r.role} at node {r.node!r}, so through it {caller.name} is a "
                                f"{role}; {cmd!r} needs {req.role} (authorise the relay's key there with a higher role, "
                                "or ask the node directly)")
        if isinstance(req, Priority) and req.priority > 0 and not eff.at_least("operator"):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"priority {req.priority}: {caller.name} (role {role} through relay "
                                f"{self.host.node!r}) may set priorities up to 0; raising a job above 0 needs an operator",
                                "priority")
        owner: str | None = None
        if isinstance(req, (*CONTROL, Logs)) and not eff.at_least("operator"):
            known = self._known_job(job_id)
            if known is None:  # not seen yet: ask the node who owns it
                shown = self._call(r.endpoint, r.server_key, Show(job=job_id, actor=caller.name))
                assert isinstance(shown, JobReply)
                known = shown.job
            owner = known.owner if isinstance(known, JobSummary) else (known.owner or known.spec.user or "")
            if not (eff.role == "user" and eff.user and eff.user == owner):
                raise ProtocolError(ErrorCode.FORBIDDEN, f"job {job_id} belongs to {owner or 'another user'}; "
                                    f"{caller.name} (role {role} through relay {self.host.node!r}) may "
                                    f"{cmd} only its own jobs", "job")
        note = f"{caller.name} via relay {self.host.node}" + (f" ({caller.note})" if caller.note else "")
        reply = self._call(r.endpoint, r.server_key, msgspec.structs.replace(req, actor=note[:200]),
                           timeout_s=FORWARD_TIMEOUT_S + (req.grace_s if isinstance(req, Cancel) else 0.0))
        if isinstance(reply, JobReply) and not eff.may_see_private(owner if owner is not None else reply.job.owner):
            reply = msgspec.structs.replace(reply, job=public_job(reply.job))
        return reply

    def _call(self, endpoint: str, server_key: str, req: Request, timeout_s: float = FORWARD_TIMEOUT_S) -> Reply:
        """One request to a followed node, from the calling (pool) thread; its refusal
        becomes ours, with the node named."""
        client = self.pool.client(endpoint, server_key, timeout_s=timeout_s)
        try:
            return client.call(req)
        except RemoteError as exc:
            raise ProtocolError(ErrorCode(exc.code) if exc.code in ErrorCode._value2member_map_ else ErrorCode.FAILED,
                                exc.message, exc.field) from None
        except Unreachable:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"{endpoint} did not answer relay {self.host.node!r} within "
                                f"{timeout_s:g} s; the action may or may not have happened (see `agentctl jobs`)") from None
        except ClientError as exc:
            raise ProtocolError(ErrorCode.FAILED, f"relay {self.host.node!r} to {endpoint}: {exc}") from None
        finally:
            client.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
