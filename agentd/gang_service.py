"""Gang jobs in the daemon: the group verbs of clients, the daemon verbs of gang admission, and
the leader that coordinates a group's nodes (docs/groups.md).

The leader of a group is the daemon of rank 0's node (``GroupMember.node_rank == 0``); it knows
the group's nodes from the rank's spec (``GroupMember.nodes``, request endpoints by node rank).
A thread runs, every :data:`LEADER_PERIOD_S`, for each group it leads:

- **Admission round** while its ranks are held: ``gang_prepare`` to every node *in node-rank
  order* (each reserves its ranks' resources for at most :data:`RESERVATION_TTL_S`, all or none).
  All ready: ``gang_start`` to every node. One not ready: ``gang_release`` to every node with
  the reason (``gang run-7: waiting for node b: needs 2 GPUs, 1 free``) and the next round after
  a growing, jittered back-off. A reservation lives only from prepare to start or release,
  milliseconds; the TTL only bounds it if the leader dies in between. So two groups that each
  could hold half of the GPUs never deadlock: neither keeps anything between rounds, and the
  jitter lets one of them win a round.
- **Watch** once started: ``gang_status`` to every node. With the ``cancel`` policy (default), a
  rank that failed makes the leader ``gang_cancel`` every other unfinished rank, recording
  ``group G failed: rank R (JOB) on NODE failed: <its reason>``; the group's state, derived from
  its ranks (agentd.groups.gangview), is then ``failed``. With ``ignore`` the others run on.

A start that fails on one node after others started (its reservation lapsed and the ranks no
longer fit, which needs a round slower than the TTL) cancels the ranks that started: never a
partial run. The daemon verbs act only on ranks users submitted themselves.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentd.control.manager import JobManager
from agentd.groups.gangview import RankRef, failed_rank, rank_refs
from agentd.groups.ranks import Peer, group_peers, make_group_id
from agentd.protocol.errors import ProtocolError
from agentd.protocol.gang import (
    GangCancel,
    GangJobsReply,
    GangPrepare,
    GangPrepareReply,
    GangRelease,
    GangStart,
    GangStatus,
    GroupAction,
    GroupActionReply,
    GroupOpen,
    GroupOpenReply,
)
from agentd.protocol.jobs import TERMINAL_STATES, JobInfo
from agentd.protocol.messages import OkReply, Reply, Request
from agentd.transport.client import ClientError, NodeClient
from agentd.transport.ports import free_listen_port

log = logging.getLogger(__name__)

LEADER_PERIOD_S = 0.5  # how often the leader looks at the groups it leads
RESERVATION_TTL_S = 20.0  # the longest a node holds resources for a group that has not started
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 8.0  # between failed admission rounds (jittered, doubling)
CALL_TIMEOUT_S = 5.0

Connect = Callable[[str, str], NodeClient]  # (request endpoint, CURVE server key or "") -> client


@dataclass
class _Led:
    """What the leader keeps about one group between rounds."""

    rank0: str = ""  # the job id of rank 0 here: a group that moved back here is a new lead
    next_round: float = 0.0
    backoff_s: float = BACKOFF_MIN_S
    started: bool = False
    done: bool = False
    failed_handled: bool = False
    refs: list[RankRef] = field(default_factory=list)


class GangService:
    """The gang extension of one daemon: ``handlers()`` are its requests, ``start()`` its leader."""

    def __init__(self, node: str, state_dir: Path, jobs: JobManager, *, connect: Connect | None = None) -> None:
        self.node = node
        self.jobs = jobs
        # Peers off loopback listen with CURVE: this daemon's own client key (STATE_DIR/keys),
        # which each peer authorises with the role daemon (docs/groups.md, "Security").
        self._connect = connect or (lambda ep, key: NodeClient(
            ep, server_key=key.encode() if key else None, keys_dir=state_dir / "keys", timeout_s=CALL_TIMEOUT_S,
            actor=f"agentd {node} (gang leader)"))
        self._led: dict[str, _Led] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gang-leader", daemon=True)

    def handlers(self) -> dict[type[Request], Callable[[Any, str], Reply]]:
        """Request type -> handler (request, caller name) -> reply."""
        return {GroupOpen: self._open, GroupAction: self._group_action, GangPrepare: self._prepare,
                GangStart: self._start, GangRelease: self._release, GangStatus: self._status,
                GangCancel: self._cancel}

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(CALL_TIMEOUT_S * 2)

    def members(self, group: str) -> list[RankRef]:
        """Every rank of a group this node leads: (rank, node endpoint, job id, state), from the
        leader's last look (empty for a group it does not lead or has not looked at yet)."""
        with self._lock:
            led = self._led.get(group)
            return list(led.refs) if led else []

    # ---- client verbs ----------------------------------------------------------------
    def _open(self, r: GroupOpen, actor: str) -> GroupOpenReply:
        return GroupOpenReply(group_id=make_group_id(self.node, self.jobs.next_group_number()), master_port=_free_port())

    def _group_action(self, r: GroupAction, actor: str) -> GroupActionReply:
        members = [j for j in self.jobs.group_members(r.group) if j.state not in TERMINAL_STATES]
        done: dict[str, float] = {}
        notes: list[str] = []
        for j in members:
            try:
                if r.action == "pause":
                    self.jobs.pause(j.id, actor=actor)
                elif r.action == "resume":
                    self.jobs.resume(j.id, actor=actor)
                elif r.action == "priority":
                    self.jobs.set_priority(j.id, r.priority, actor=actor)
                else:
                    self.jobs.cancel(j.id, grace_s=r.grace_s, actor=actor)
                done[j.id] = time.time()
            except ProtocolError as e:
                notes.append(e.message)
        return GroupActionReply(jobs=self.jobs.group_members(r.group), done_wall_s=done, message="; ".join(notes))

    # ---- daemon verbs ----------------------------------------------------------------
    def _prepare(self, r: GangPrepare, actor: str) -> GangPrepareReply:
        ready, members, expected, reason = self.jobs.gang_prepare(r.group, r.ttl_s)
        return GangPrepareReply(ready=ready, members=members, expected=expected, reason=reason)

    def _start(self, r: GangStart, actor: str) -> GangJobsReply:
        return GangJobsReply(jobs=self.jobs.gang_start(r.group, actor=actor))

    def _release(self, r: GangRelease, actor: str) -> OkReply:
        self.jobs.gang_release(r.group, r.reason)
        return OkReply()

    def _status(self, r: GangStatus, actor: str) -> GangJobsReply:
        return GangJobsReply(jobs=self.jobs.group_members(r.group))

    def _cancel(self, r: GangCancel, actor: str) -> GangJobsReply:
        return GangJobsReply(jobs=self.jobs.gang_cancel(r.group, r.reason, r.grace_s))

    # ---- the leader --------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(LEADER_PERIOD_S):
            try:
                self.lead_once()
            except Exception:  # one bad round must not end the leader
                log.exception("gang leader round failed")

    def lead_once(self) -> None:
        """One look at every group this node leads (the leader thread calls it)."""
        for group in self.jobs.led_groups():
            mine = self.jobs.group_members(group)
            rank0 = next((j for j in mine if j.spec.group is not None and j.spec.group.rank == 0), None)
            if rank0 is None or rank0.spec.group is None:
                continue
            with self._lock:
                led = self._led.get(group)
                if led is None or led.rank0 != rank0.id:
                    led = self._led[group] = _Led(rank0=rank0.id)
            if led.done:
                continue
            nodes = group_peers(rank0.spec.group)
            if not nodes:
                continue
            if rank0.state == "queued" and not led.started:
                if time.monotonic() >= led.next_round:
                    self._admission_round(group, nodes, led)
                continue
            led.started = True
            self._watch(group, nodes, rank0.spec.group.on_rank_failure, led)

    def _call(self, peer: Peer, req: Request) -> Reply:
        with self._connect(peer.endpoint, peer.key) as c:
            return c.call(req, timeout_s=CALL_TIMEOUT_S)

    def _admission_round(self, group: str, nodes: list[Peer], led: _Led) -> None:
        prepared: list[Peer] = []
        reason = ""
        for i, peer in enumerate(nodes):  # node-rank order: every leader reserves in one order
            try:
                reply = self._call(peer, GangPrepare(group=group, ttl_s=RESERVATION_TTL_S))
            except ClientError as e:
                reason = f"waiting for node {i} ({peer.endpoint}): {e}"
                break
            assert isinstance(reply, GangPrepareReply)
            if not reply.ready:
                reason = f"waiting for {reply.reason}" if reply.reason else f"waiting for node {peer.endpoint}"
                break
            prepared.append(peer)
        if len(prepared) == len(nodes):
            for peer in nodes:
                try:
                    self._call(peer, GangStart(group=group))
                except ClientError as e:
                    ep = peer.endpoint
                    log.warning("group %s: start on %s failed: %s; cancelling the ranks that started", group, ep, e)
                    for other in nodes:
                        self._quiet(other, GangCancel(group=group, reason=f"group {group} could not start on {ep}: {e}",
                                                      grace_s=1.0))
                    led.done = True
                    return
            led.started = True
            log.info("group %s started on %d node(s)", group, len(nodes))
            return
        for peer in nodes:
            self._quiet(peer, GangRelease(group=group, reason=reason))
        led.next_round = time.monotonic() + led.backoff_s * random.uniform(0.5, 1.5)
        led.backoff_s = min(BACKOFF_MAX_S, led.backoff_s * 2)

    def _quiet(self, peer: Peer, req: Request) -> None:
        try:
            self._call(peer, req)
        except ClientError as e:
            log.warning("group %s: %s to %s failed: %s", getattr(req, "group", "?"), type(req).__name__,
                        peer.endpoint, e)

    def _watch(self, group: str, nodes: list[Peer], policy: str, led: _Led) -> None:
        ranks: list[tuple[str, JobInfo]] = []
        for peer in nodes:
            try:
                reply = self._call(peer, GangStatus(group=group))
            except ClientError:
                return  # a node out of reach: look again next period
            assert isinstance(reply, GangJobsReply)
            ranks += [(peer.endpoint, j) for j in reply.jobs]
        with self._lock:
            led.refs = rank_refs(ranks)
        if ranks and all(j.state in TERMINAL_STATES for _, j in ranks):
            led.done = True
            return
        culprit = failed_rank([j for _, j in ranks])
        if culprit is None or policy != "cancel" or led.failed_handled:
            return
        led.failed_handled = True
        rank = culprit.spec.group.rank if culprit.spec.group else -1
        reason = f"group {group} failed: rank {rank} ({culprit.id}) on {culprit.node} failed: {culprit.reason}"
        log.warning("%s; cancelling the other ranks", reason)
        for peer in nodes:
            self._quiet(peer, GangCancel(group=group, reason=reason, grace_s=2.0))


def _free_port() -> int:
    """A TCP port free on every address of this node now (the rendezvous port of rank 0),
    below the ephemeral range: the other ranks retry connecting before rank 0 listens."""
    return free_listen_port("")

