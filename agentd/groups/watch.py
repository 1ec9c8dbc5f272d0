"""Feed the radar live: one group's ranks observed from their nodes' streams.

A :class:`GroupWatcher` knows a group's members (rank, role, node, the node's request endpoint,
job id, GPU indexes) and is fed the link events of those nodes (``agentd.protocol.link``: the
follower that owns the sockets, ``agentd.groups.radar_service``, polls one pool of links for all
groups and hands each watcher the events of its nodes). From every node sample it builds one
:class:`~agentd.groups.radar.RankPoint` per rank on that node: the rank's cgroup CPU time (the
raw cumulative counter; the radar takes differences), its reported ``step``,
``step_compute_s`` and ``step_wait_s``, and its GPUs' utilisation (mean), SM clock (mean),
power (sum) and throttle reasons (OR) — except on nodes whose GPUs are simulated (their
inventory says so): a simulated GPU's load follows who holds it, not the job's work. Points are stamped with the watcher's clock when they
arrive (one clock for all ranks, as the radar requires; the nodes' own clocks are not
comparable). :meth:`GroupWatcher.check` runs :func:`~agentd.groups.radar.analyse` and returns
the ranks whose status changed.

No sockets and no threads here: the owner calls ``feed`` and ``check`` from its one thread and
``health`` from any (it copies under a lock).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from agentd.groups.radar import RadarConfig, RankPoint, RankSeries, RankVerdict, analyse
from agentd.metrics.samples import NodeSample
from agentd.protocol.link import LinkEvent, LinkMessage, LinkSnapshot
from agentd.protocol.messages import InventoryMsg, SampleMsg
from agentd.protocol.radar import RankHealth

STEP_METRICS = ("step", "step_compute_s", "step_wait_s")


@dataclass(frozen=True)
class Member:
    """One rank of a group and where it runs."""

    rank: int
    node: str
    endpoint: str  # the node's request endpoint (tcp://HOST:PORT)
    job_id: str
    role: str = ""
    gpus: tuple[int, ...] = ()
    key: str = ""  # the node's CURVE server key ("": reached without CURVE, on loopback)


def rank_point(sample: NodeSample, member: Member, t_s: float, gpus_measure_job: bool = True) -> RankPoint | None:
    """The observation of ``member`` in one sample of its node; None when the sample has neither
    its cgroup nor its metrics (not started yet, or ended). ``gpus_measure_job`` False (simulated
    GPUs: their load follows who holds them, not what the job does) leaves the GPU fields out."""
    cg = next((c for c in sample.jobs if c.job_id == member.job_id), None)
    app = {m.name: m.value for m in sample.app if m.job_id == member.job_id and m.name in STEP_METRICS}
    if cg is None and not app:
        return None
    gpus = [g for g in sample.gpus if g.index in member.gpus] if gpus_measure_job else []
    utils = [g.sm_util_pct for g in gpus if g.sm_util_pct is not None]
    clocks = [float(g.sm_clock_mhz) for g in gpus if g.sm_clock_mhz is not None]
    powers = [g.power_mw for g in gpus if g.power_mw is not None]
    throttle = 0
    for g in gpus:
        throttle |= g.throttle_reasons
    step = app.get("step")
    return RankPoint(
        t_s=t_s, step=int(step) if step is not None else None,
        step_compute_s=app.get("step_compute_s"), step_wait_s=app.get("step_wait_s"),
        cpu_s=cg.cpu_usage_us / 1e6 if cg is not None else None,
        gpu_util_pct=statistics.fmean(utils) if utils else None,
        gpu_sm_clock_mhz=statistics.fmean(clocks) if clocks else None,
        gpu_power_w=sum(powers) / 1000.0 if powers else None,
        gpu_throttle_reasons=throttle if gpus else None,
    )


@dataclass
class GroupWatcher:
    """The live radar of one group. ``keep_s``: points older than this are dropped (it must
    cover the radar's ``sustain_s`` and ``hang_history_s`` plus the longest stall to measure)."""

    group: str
    members: Sequence[Member]
    config: RadarConfig = field(default_factory=RadarConfig)
    keep_s: float = 600.0
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    trust_simulated_gpus: bool = False  # tests of the GPU rules on simulated nodes set it
    confirm_checks: int = 2  # checks in a row that must agree on a rank's new status

    def __post_init__(self) -> None:
        self._points: dict[int, deque[RankPoint]] = {m.rank: deque() for m in self.members}
        self._by_node: dict[str, list[Member]] = {}
        for m in self.members:
            self._by_node.setdefault(m.node, []).append(m)
        self._health: dict[int, RankHealth] = {
            m.rank: RankHealth(group=self.group, rank=m.rank, node=m.node, job_id=m.job_id, role=m.role)
            for m in self.members}
        self._lock = threading.Lock()
        self._simulated: set[str] = set()
        self._pending: dict[int, tuple[str, int, float]] = {}  # rank -> (new status seen, checks in a row, since)

    @property
    def endpoints(self) -> set[str]:
        return {m.endpoint for m in self.members}

    def feed(self, event: LinkEvent) -> None:
        """Take in one link event of a member's node (others are ignored)."""
        # No points arrive while a node is away: a long gap reads as a stall, as it should.
        if isinstance(event, LinkSnapshot):
            self._note_backend(event.node, event.reply.inventory.gpu_backend)
        elif isinstance(event, LinkMessage) and isinstance(event.msg, InventoryMsg):
            self._note_backend(event.msg.node, event.msg.inventory.gpu_backend)
        elif isinstance(event, LinkMessage) and isinstance(event.msg, SampleMsg):
            self.observe(event.msg.sample)

    def _note_backend(self, node: str, backend: str) -> None:
        # A simulated GPU's utilisation, power and clocks follow who holds it, not the job's
        # work: fed to the radar they would make stragglers and hangs out of noise.
        if backend == "simulated" and not self.trust_simulated_gpus:
            self._simulated.add(node)
        else:
            self._simulated.discard(node)

    def observe(self, sample: NodeSample, t_s: float | None = None) -> None:
        """Take in one sample of a node (``sample.node`` names it)."""
        now = self.clock() if t_s is None else t_s
        for m in self._by_node.get(sample.node, []):
            p = rank_point(sample, m, now, gpus_measure_job=sample.node not in self._simulated)
            if p is None:
                continue
            pts = self._points[m.rank]
            pts.append(p)
            while pts and pts[0].t_s < now - self.keep_s:
                pts.popleft()

    def verdicts(self, now: float | None = None) -> list[RankVerdict]:
        """The radar's verdicts now (ranks with no point yet are left out)."""
        t = self.clock() if now is None else now
        series = [RankSeries(rank=m.rank, node=m.node, role=m.role, points=list(self._points[m.rank]))
                  for m in self.members if self._points[m.rank]]
        return analyse(series, t, self.config) if series else []

    def check(self, now: float | None = None) -> list[RankHealth]:
        """Run the radar; the ranks whose status changed since the last check, as they are now.

        A new status counts once ``confirm_checks`` checks in a row agree: the nodes' samples
        reach the leader at different moments, so at the edge of a threshold the radar may see
        only some ranks of a stalled group past it for one check. A straggler call must also
        have held for the config's ``straggler_hold_s``. A rank's first ok (from ``unknown``)
        counts at once and is not announced: it is no news."""
        changed: list[RankHealth] = []
        wall = self.wall()
        t = self.clock() if now is None else now
        for v in self.verdicts(t):
            with self._lock:
                old = self._health[v.rank]
                if v.status != old.status and old.status != "unknown":
                    seen, count, since = self._pending.get(v.rank, (v.status, 0, t))
                    if seen != v.status:
                        count, since = 0, t
                    self._pending[v.rank] = (v.status, count + 1, since)
                    if count + 1 < self.confirm_checks or (
                            v.status == "straggler" and t - since < self.config.straggler_hold_s):
                        continue
                self._pending.pop(v.rank, None)
                new = msgspec.structs.replace(
                    old, status=v.status, likely=v.likely or "", reason=v.reason, evidence=dict(v.evidence),
                    since_s=wall if v.status != old.status else old.since_s,
                    evidence_file=old.evidence_file if v.status == old.status else "")
                self._health[v.rank] = new
            # A rank's first verdict of ok is no news; anything else new is.
            if new.status != old.status and not (old.status == "unknown" and new.status == "ok"):
                changed.append(new)
        return changed

    def set_evidence_file(self, rank: int, where: str) -> RankHealth:
        """Record where the evidence about ``rank`` was saved; the rank's health now."""
        with self._lock:
            self._health[rank] = msgspec.structs.replace(self._health[rank], evidence_file=where)
            return self._health[rank]

    def health(self) -> list[RankHealth]:
        """Every rank's current health, by rank (thread-safe)."""
        with self._lock:
            return [self._health[r] for r in sorted(self._health)]
