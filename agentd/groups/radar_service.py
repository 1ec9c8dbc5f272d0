"""The live radar in the daemon: a node leads the groups whose rank 0 runs here.

The daemon owns one :class:`RadarService`. Each tick it hands over this node's active jobs
(:meth:`RadarService.on_tick`); a running job with ``spec.group.rank == 0`` makes this node the
group's *leader*. The service's one thread then finds the group's ranks (the ``jobs`` reply of
every node the group names: rank 0's label ``fleetdeck.group.nodes`` = ``NAME=ENDPOINT,...``,
plus this node), follows those nodes' streams on one pool of links (``LinkPool``, as a relay
does), feeds a :class:`~agentd.groups.watch.GroupWatcher` per group and runs the radar every
``ANALYSE_EVERY_S``. Each rank's status change becomes:

- an event of kind ``"radar"`` (data: ``group``, ``rank``, ``node``, ``job_id``, ``status``,
  ``class``, ``reason``, ``evidence``, ``evidence_file``);
- for straggler and hung, an alert (rules ``straggler`` and ``rank_hung``, subject ``job ID``)
  that fires, and clears when the rank is ok again or the group ends, in ``alerts``, the
  snapshot and as ``"alert"`` events, so ``agentctl alerts`` and the app's Health tab show it;
- for straggler and hung, first an evidence capture on the rank's node (``capture_evidence``),
  whose file the event names.

It also answers ``group_health`` (for groups led here) and ``capture_evidence`` (for jobs here).
When rank 0's job ends, the group's watcher stops and its alerts clear.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import msgspec

from agentd.groups.evidence import capture
from agentd.groups.radar import RadarConfig
from agentd.groups.ranks import group_peers
from agentd.groups.watch import GroupWatcher, Member
from agentd.metrics.samples import NodeSample
from agentd.protocol.alerts import Alert, AlertState, alert_data
from agentd.protocol.errors import ErrorCode, ProtocolError
from agentd.protocol.jobs import Event, JobInfo
from agentd.protocol.messages import Jobs, JobsReply, Reply, Request
from agentd.protocol.radar import (
    CaptureEvidence,
    EvidenceReply,
    GroupHealth,
    GroupHealthReply,
    RankHealth,
)
from agentd.transport.client import ClientError
from agentd.transport.fanout import LinkPool

log = logging.getLogger(__name__)
NODES_LABEL = "fleetdeck.group.nodes"
ANALYSE_EVERY_S = 2.0
DISCOVER_EVERY_S = 3.0
EVIDENCE_WINDOW_S = 60.0
ALERT_RULES: dict[str, tuple[str, Literal["warning", "critical"]]] = {
    "straggler": ("straggler", "warning"), "hung": ("rank_hung", "critical")}
Handler = Callable[[Any, str], Reply]


def parse_nodes_label(text: str) -> dict[str, str]:
    """``a=tcp://h:1,b=tcp://h:2`` -> {name: endpoint}; malformed items are skipped."""
    out: dict[str, str] = {}
    for item in text.split(","):
        name, sep, endpoint = item.strip().partition("=")
        if sep and name and endpoint:
            out[name.strip()] = endpoint.strip()
    return out


def radar_config(values: dict[str, int | float]) -> RadarConfig:
    """The daemon config's ``[agentd.radar]`` table as a RadarConfig; ValueError names the field."""
    known = [f.name for f in msgspec.structs.fields(RadarConfig)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"[agentd.radar]: unknown field {unknown[0]!r}; the fields are {', '.join(known)} (docs/groups.md)")
    try:
        return msgspec.convert(values, RadarConfig)
    except msgspec.ValidationError as exc:
        raise ValueError(f"[agentd.radar]: {exc}; the fields are those of RadarConfig (docs/groups.md)") from None


class RadarService:
    """The radar of the groups this node leads (see the module docstring)."""

    def __init__(self, node: str, state_dir: Path, own_endpoint: str, emit: Callable[[Event], None],
                 get_job: Callable[[str], JobInfo], config: RadarConfig | None = None, own_key: str = "") -> None:
        self.node = node
        self.state_dir = state_dir
        self.own_endpoint = own_endpoint.replace("tcp://0.0.0.0:", "tcp://127.0.0.1:").replace("tcp://*:", "tcp://127.0.0.1:")
        self.own_key = own_key  # this daemon's CURVE server key where it listens with CURVE
        self.emit = emit
        self.get_job = get_job
        self.config = config or RadarConfig()
        self._lock = threading.Lock()
        self._leading: dict[str, JobInfo] = {}  # group id -> rank 0's job here (set by on_tick)
        self._watchers: dict[str, GroupWatcher] = {}
        self._alerts: dict[tuple[str, str, str], Alert] = {}
        self._recent: deque[NodeSample] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentd-radar", daemon=True)
        self._thread.start()

    # ---- the daemon's side ---------------------------------------------------------------
    def handlers(self) -> dict[type[Request], Handler]:
        return {GroupHealth: self._group_health, CaptureEvidence: self._capture}

    def on_tick(self, sample: NodeSample, active_jobs: list[JobInfo]) -> None:
        """This node's newest sample and active jobs (the daemon's tick)."""
        self._recent.append(sample)
        while self._recent and self._recent[0].wall_s < sample.wall_s - EVIDENCE_WINDOW_S:
            self._recent.popleft()
        leading = {j.spec.group.id: j for j in active_jobs
                   if j.spec.group is not None and j.spec.group.rank == 0 and j.state in ("running", "paused")}
        with self._lock:
            self._leading = leading

    def active(self) -> list[Alert]:
        """The radar's alerts firing now."""
        with self._lock:
            return list(self._alerts.values())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    # ---- requests ------------------------------------------------------------------------
    def _group_health(self, req: GroupHealth, actor: str) -> GroupHealthReply:
        group = req.group if "." in req.group else f"{self.node}.{req.group}"
        with self._lock:
            watcher = self._watchers.get(group)
            led = group in self._leading
        if watcher is not None:
            return GroupHealthReply(group=group, leader=self.node, ranks=watcher.health())
        if led:
            return GroupHealthReply(group=group, leader=self.node,
                                    message="the radar is still finding the group's ranks on their nodes; ask again shortly")
        raise ProtocolError(ErrorCode.NOT_FOUND, f"group {req.group!r} is not led by node {self.node!r} (its rank 0 "
                            "does not run here); ask the node of rank 0, or check the id with `agentctl jobs`", "group")

    def _capture(self, req: CaptureEvidence, actor: str) -> EvidenceReply:
        job = self.get_job(req.job)
        if job.state not in ("running", "paused") or not job.pids:
            raise ProtocolError(ErrorCode.CONFLICT, f"job {job.id} is {job.state} with no processes; evidence is "
                                "captured from a running job", "job")
        n = job.id.rpartition(".")[2]
        try:
            path, summary = capture(job.id, job.pids, job.gpus, list(self._recent), self.state_dir / "jobs" / n,
                                    reason=req.reason)
        except OSError as exc:
            raise ProtocolError(ErrorCode.FAILED, f"cannot save evidence for job {job.id}: {exc}") from None
        return EvidenceReply(job_id=job.id, path=str(path), summary=summary)

    # ---- the radar's thread --------------------------------------------------------------
    def _run(self) -> None:
        pool = LinkPool(keys_dir=self.state_dir / "keys")  # the daemon's own client key, as the gang leader's
        next_discover = next_analyse = 0.0
        try:
            while not self._stop.is_set():
                # Idle (no group led here) it looks for new groups only: a wake-up a second.
                for ev in pool.poll(0.25 if self._watchers else 1.0):
                    for w in list(self._watchers.values()):
                        if ev.endpoint in w.endpoints:
                            w.feed(ev)
                now = time.monotonic()
                if now >= next_discover:
                    next_discover = now + DISCOVER_EVERY_S
                    self._sync_groups(pool)
                if now >= next_analyse:
                    next_analyse = now + ANALYSE_EVERY_S
                    for w in list(self._watchers.values()):
                        self._analyse(pool, w)
        except Exception:
            log.exception("the radar stopped")
        finally:
            pool.close()

    def _sync_groups(self, pool: LinkPool) -> None:
        with self._lock:
            leading = dict(self._leading)
        for group in [g for g in self._watchers if g not in leading]:
            self._end_group(group)
        for group, job in leading.items():
            if group not in self._watchers:
                members = self._discover(pool, group, job)
                if members is not None:
                    watcher = GroupWatcher(group, members, self.config)
                    with self._lock:
                        self._watchers[group] = watcher
                    for m in watcher.members:
                        pool.add(m.endpoint, server_key=m.key)
                    log.info("radar: following group %s (%d ranks)", group, len(members))
        wanted = {ep for w in self._watchers.values() for ep in w.endpoints}
        for ep in [e for e in pool.links if e not in wanted]:
            pool.links.pop(ep).close()

    def _discover(self, pool: LinkPool, group: str, job: JobInfo) -> list[Member] | None:
        """The group's members from its nodes' job lists; None until every rank is found."""
        assert job.spec.group is not None
        # The member nodes: what gang submit put in the group (its nodes' endpoints), else the
        # label of hand-made groups; this node always (its ranks are asked here too).
        keys = dict.fromkeys(parse_nodes_label(job.spec.labels.get(NODES_LABEL, "")).values(), "")
        keys.update(group_peers(job.spec.group))
        keys[self.own_endpoint] = self.own_key
        found: dict[int, Member] = {}
        for endpoint in sorted(keys):
            try:
                with pool.client(endpoint, server_key=keys[endpoint], timeout_s=5.0) as client:
                    reply = client.call(Jobs(active_only=True))
            except ClientError as exc:
                log.info("radar: group %s: node %s did not list its jobs: %s", group, endpoint, exc)
                continue
            assert isinstance(reply, JobsReply)
            for j in reply.jobs:
                g = j.spec.group
                if g is not None and g.id == group:
                    found[g.rank] = Member(rank=g.rank, node=j.node, endpoint=endpoint, job_id=j.id,
                                           role=g.role, gpus=tuple(j.gpus), key=keys[endpoint])
        return [found[r] for r in sorted(found)] if len(found) >= job.spec.group.world_size else None

    def _analyse(self, pool: LinkPool, watcher: GroupWatcher) -> None:
        try:
            changes = watcher.check()
        except Exception:  # a radar bug must not stop the follower
            log.exception("radar: analysing group %s failed", watcher.group)
            return
        for h in changes:
            if h.status in ALERT_RULES:
                h = self._collect_evidence(pool, watcher, h)
            self._announce(h)

    def _collect_evidence(self, pool: LinkPool, watcher: GroupWatcher, h: RankHealth) -> RankHealth:
        member = next(m for m in watcher.members if m.rank == h.rank)
        reason = f"radar: rank {h.rank} of {h.group} is {h.status}: {h.reason}"
        try:
            with pool.client(member.endpoint, server_key=member.key, timeout_s=30.0) as client:
                reply = client.call(CaptureEvidence(job=h.job_id, reason=reason[:500]))
        except ClientError as exc:
            log.warning("radar: no evidence for rank %d of %s on %s: %s", h.rank, h.group, h.node, exc)
            return h
        assert isinstance(reply, EvidenceReply)
        return watcher.set_evidence_file(h.rank, f"{h.node}:{reply.path}")

    def _announce(self, h: RankHealth) -> None:
        data: dict[str, Any] = {"group": h.group, "rank": h.rank, "node": h.node, "job_id": h.job_id,
                                "status": h.status, "class": h.likely, "reason": h.reason,
                                "evidence": dict(h.evidence), "evidence_file": h.evidence_file}
        what = f"{h.status} ({h.likely})" if h.likely else h.status
        self.emit(Event(wall_s=time.time(), node=self.node, kind="radar", job_id=h.job_id,
                        ok=h.status in ("ok", "waiting"), data=data,
                        message=f"group {h.group} rank {h.rank} on {h.node}: {what}" + (f": {h.reason}" if h.reason else "")))
        subject = f"job {h.job_id}"
        for status, (rule, severity) in ALERT_RULES.items():
            key = (rule, h.node, subject)
            if h.status == status:
                evidence: dict[str, float | str] = {**h.evidence, "group": h.group, "rank": float(h.rank)}
                if h.evidence_file:
                    evidence["evidence_file"] = h.evidence_file
                alert = Alert(rule=rule, node=h.node, subject=subject, severity=severity, since_s=h.since_s,
                              message=f"rank {h.rank} of group {h.group} is {what}: {h.reason}", evidence=evidence)
                with self._lock:
                    self._alerts[key] = alert
                self._emit_alert(alert, "firing")
            else:
                with self._lock:
                    old = self._alerts.pop(key, None)
                if old is not None:
                    self._emit_alert(old, "cleared")

    def _emit_alert(self, alert: Alert, state: AlertState) -> None:
        self.emit(Event(wall_s=time.time(), node=self.node, kind="alert", job_id=alert.subject[4:],
                        message=f"{alert.severity} {state}: {alert.message}", ok=state == "cleared",
                        data=alert_data(alert, state)))

    def _end_group(self, group: str) -> None:
        with self._lock:
            watcher = self._watchers.pop(group)
        for h in watcher.health():
            if h.status in ALERT_RULES:
                self._announce(msgspec.structs.replace(h, status="ok", likely="", reason="the group ended",
                                                       evidence={}, evidence_file=""))
        log.info("radar: group %s ended", group)
