"""The cluster as the app knows it: pure Python, no Qt.

:class:`ClusterState` applies snapshots and stream messages (the structs a DataSource emits),
derives rates with :func:`agentd.metrics.derive` (the one derive) and feeds the chart rings in
:mod:`gui.series`. The Qt models read it; a single timer in the window asks ``revision`` whether
anything changed, so a burst of messages costs one redraw, not one per message.

Over 500 lines: every way a message changes the cluster (snapshots, stream messages, relay
summaries, alerts, radar verdicts) is applied here, so the order of those changes is in one place.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections import deque
from dataclasses import dataclass, field

from agentd.metrics.derive import derive
from agentd.metrics.samples import DerivedCgroup, DerivedGpu, DerivedNode, GpuInfo, NodeInventory, NodeSample
from agentd.protocol.jobs import ACTIVE_STATES, TERMINAL_STATES, Event, JobInfo, JobSpec
from agentd.protocol.messages import (
    EventMsg,
    Heartbeat,
    InventoryMsg,
    JobMsg,
    SampleMsg,
    SnapshotReply,
    StreamMsg,
)
from agentd.protocol.relay import JobSummary, NodeSummary
from gui import fmt
from gui.alerts import ActiveAlerts
from gui.radar import RadarBoard
from gui.series import DEFAULT_HISTORY_S, DEFAULT_INTERVAL_S, SeriesStore, smoothed_last

MAX_EVENTS = 5000
# Finished jobs stay visible this long so a person sees how they ended.
KEEP_FINISHED_S = 600.0
# Application rates preferred as "the" throughput of a job, in this order.
THROUGHPUT_PREFERENCE = ("tokens_per_s", "samples_per_s", "steps_per_s", "requests_per_s", "episodes_per_s")
THROUGHPUT_UNITS = {"tokens_per_s": "tok/s", "samples_per_s": "samples/s", "steps_per_s": "steps/s",
                    "requests_per_s": "req/s", "episodes_per_s": "ep/s"}


@dataclass(frozen=True)
class Metric:
    """A chartable metric: where it lives (node, gpu or job), its label and unit."""

    scope: str  # "node", "gpu" or "job"
    name: str
    label: str
    unit: str  # "%", "B", "B/s", "W", "°C", "" (plain number), "/s"

    @property
    def smoothed(self) -> bool:
        """Application rates (tokens/s of a bursty agent) are shown as a mean over a window
        (:func:`gui.series.smooth_rate_rows`), in the charts and the jobs table alike."""
        return self.scope == "job" and (self.name == "throughput" or (self.name.startswith("app:") and self.name.endswith("_per_s")))


METRICS: tuple[Metric, ...] = (
    Metric("node", "cpu_pct", "CPU", "%"),
    Metric("node", "mem_used_pct", "Memory", "%"),
    Metric("node", "iowait_pct", "IO wait", "%"),
    Metric("node", "net_rx_bytes_per_s", "Network in", "B/s"),
    Metric("node", "net_tx_bytes_per_s", "Network out", "B/s"),
    Metric("node", "disk_read_bytes_per_s", "Disk read", "B/s"),
    Metric("node", "disk_write_bytes_per_s", "Disk write", "B/s"),
    Metric("node", "load_1", "Load (1 min)", ""),
    Metric("gpu", "sm_util_pct", "GPU utilisation", "%"),
    Metric("gpu", "mem_used_pct", "GPU memory", "%"),
    Metric("gpu", "power_w", "GPU power", "W"),
    Metric("gpu", "temp_c", "GPU temperature", "°C"),
    Metric("gpu", "pcie_rx_bytes_per_s", "PCIe in", "B/s"),
    Metric("gpu", "pcie_tx_bytes_per_s", "PCIe out", "B/s"),
    Metric("gpu", "nvlink_rx_bytes_per_s", "NVLink in", "B/s"),
    Metric("gpu", "nvlink_tx_bytes_per_s", "NVLink out", "B/s"),
    Metric("job", "cpu_pct", "Job CPU", "%"),
    Metric("job", "mem_current_bytes", "Job memory", "B"),
    Metric("job", "io_read_bytes_per_s", "Job disk read", "B/s"),
    Metric("job", "io_write_bytes_per_s", "Job disk write", "B/s"),
    Metric("job", "throughput", "Job throughput (headline rate)", "/s"),
    # One unit per chart: tokens/s of agents and samples/s of trainers do not share an axis.
    Metric("job", "app:samples_per_s", "Samples/s", ""),
    Metric("job", "app:tokens_per_s", "Tokens/s", ""),
    Metric("job", "app:steps_per_s", "Steps/s", ""),
    # Gauges of async RL runs (AGENTD_METRIC queue_depth=… policy_version=…), shown as reported.
    Metric("job", "app:queue_depth", "Queue depth", ""),
    Metric("job", "app:policy_version", "Policy version", ""),
)
CHARTED_GAUGES = ("queue_depth", "policy_version")  # application gauges kept in the chart rings
METRIC_BY_KEY = {(m.scope, m.name): m for m in METRICS}
_NODE_FIELDS = [m.name for m in METRICS if m.scope == "node"]
_GPU_FIELDS = [m.name for m in METRICS if m.scope == "gpu"]
_JOB_FIELDS = [m.name for m in METRICS if m.scope == "job" and m.name != "throughput" and not m.name.startswith("app:")]


def gpu_scope(index: int) -> str:
    return f"gpu{index}"


@dataclass(frozen=True)
class ChartScope:
    """What a chart shows: every node ("all"), one node ("node"), one GPU of a node ("gpu",
    ``item`` its index), one job of a node ("job", ``item`` its id) or a group's ranks ("group",
    ``item`` the group id, ``node`` a role or "" for all; gui/groups.py). Typed, never a string
    split on ":": a node keyed by its endpoint (``tcp://h:7710``) is as chartable as any."""

    kind: str = "all"  # "all", "node", "gpu", "job" or "group"
    node: str = ""
    item: str = ""

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "node": self.node, "item": self.item}

    @classmethod
    def from_json(cls, raw: object) -> ChartScope:
        """From settings: the dict :meth:`to_json` wrote, or the "*" / "node:K" / "gpu:K:I" /
        "job:K:ID" text of older versions. ValueError for anything else."""
        if isinstance(raw, dict):
            kind, node, item = str(raw.get("kind", "all")), str(raw.get("node", "")), str(raw.get("item", ""))
        elif raw == "*":
            return cls()
        elif isinstance(raw, str) and raw.startswith("node:"):
            kind, node, item = "node", raw[len("node:"):], ""
        elif isinstance(raw, str) and raw.startswith(("gpu:", "job:")) and raw.count(":") >= 2:
            kind, rest = raw.split(":", 1)
            node, item = rest.rsplit(":", 1)
        else:
            raise ValueError(f"chart scope {raw!r} is not one this version knows")
        if kind not in ("all", "node", "gpu", "job", "group") or (kind == "gpu" and not item.isdigit()):
            raise ValueError(f"chart scope {raw!r} is not one this version knows")
        return cls(kind, node, item)


def throughput_of(app: dict[str, float]) -> tuple[float, str] | None:
    """A job's headline application rate and its unit, or None when it reports none."""
    for name in THROUGHPUT_PREFERENCE:
        if name in app:
            return app[name], THROUGHPUT_UNITS[name]
    for name, value in sorted(app.items()):
        if name.endswith("_per_s"):
            return value, name[: -len("_per_s")] + "/s"
    return None


@dataclass
class NodeState:
    """One node: what its daemon told us, and the link health."""

    key: str
    link: str = "connecting"
    link_detail: str = ""
    inventory: NodeInventory | None = None
    last_sample: NodeSample | None = None
    derived: DerivedNode | None = None
    jobs: dict[str, JobInfo] = field(default_factory=dict)
    last_heard_s: float = 0.0
    ever_live: bool = False  # the link has been live at least once (this session)
    failed_once: bool = False  # the link has been stale or down at least once
    summary: NodeSummary | None = None  # the last relay summary applied (summary-level node)
    rev: int = 0  # bumped when anything of this node changed: views redo only changed nodes
    # Bumped when ``jobs`` changed (through a relay ``rev`` moves every second, the jobs rarely):
    # the sorted jobs and the job table's rows are rebuilt on this, not on ``rev``.
    jobs_rev: int = 0

    @property
    def status(self) -> str:
        """One word for the node's state, the same in every view.

        A node that never answered reads "unreachable" for as long as it keeps failing, instead
        of cycling connecting -> stale -> down on every retry; a node that once answered reads its
        link state ("stale", "down", "connecting" while reconnecting)."""
        if self.link == "live":
            return "live"
        if not self.ever_live and self.failed_once and self.inventory is None:
            return "unreachable"
        return self.link

    @property
    def is_stale(self) -> bool:
        """What we know about this node's jobs is old: the node answered once and its link is
        stale or down now."""
        return self.link in ("stale", "down") and (self.ever_live or self.inventory is not None)

    @property
    def name(self) -> str:
        """The daemon's node name (prefix of its job ids), else the key."""
        return self.inventory.node if self.inventory is not None else self.key

    def gpu(self, index: int) -> DerivedGpu | None:
        if self.derived is None:
            return None
        for g in self.derived.gpus:
            if g.index == index:
                return g
        return None

    def job_metrics(self, job_id: str) -> DerivedCgroup | None:
        if self.derived is None:
            return None
        for j in self.derived.jobs:
            if j.job_id == job_id:
                return j
        return None


@dataclass(frozen=True)
class JobRow:
    """One line of the job table: plain values, ready to show and sort."""

    id: str
    name: str
    node: str  # node key
    state: str
    priority: int
    gpus: tuple[int, ...]
    cpu_pct: float | None
    mem_bytes: int | None
    throughput: float | None
    throughput_unit: str
    started_s: float | None
    kind: str
    migration: dict
    backend: str = "local"
    stale: bool = False  # the node is not live: the state and numbers are as last seen
    last_seen_s: float | None = None  # when the node was last heard from (wall clock)
    reason: str = ""  # why a queued job waits (from the daemon)
    queue_position: int | None = None
    origin: str = ""  # the job's first id: one identity across migrations ("" = ``id``)

    @property
    def identity(self) -> str:
        """What stays the same when the job migrates: its first id."""
        return self.origin or self.id


@dataclass
class _NodeRows:
    """A node's job table rows, and what they were built from."""

    tag: tuple  # (jobs_rev, the jobs dict, stale, show_migrated, last heard when stale)
    derived: DerivedNode | None  # the numbers they show (a new DerivedNode: read them again)
    built_s: float = -math.inf  # the clock when built
    expires: float = math.inf  # the clock at which a finished job shown leaves the list
    rows: list[JobRow] = field(default_factory=list)
    live: list[tuple[int, JobInfo]] = field(default_factory=list)  # (row, job) of rows with numbers


class ClusterState:
    """Everything known about the cluster. Not thread-safe: the GUI thread owns it."""

    def __init__(self, history_s: float = DEFAULT_HISTORY_S, interval_s: float = DEFAULT_INTERVAL_S,
                 clock=time.time) -> None:
        self.nodes: dict[str, NodeState] = {}
        self.events: deque[Event] = deque(maxlen=MAX_EVENTS)
        self.events_total = 0  # grows forever; the event log shows what is new since it looked
        self.series = SeriesStore(history_s, interval_s)
        self.clock = clock
        # Bumped on every change; views compare it with what they last drew.
        self.revision = 0
        self.structure_revision = 0  # nodes/GPUs/jobs appeared or vanished
        # Nodes appeared or vanished, or an inventory changed (not jobs: at 1,000 nodes some job
        # starts or ends every second; the map's layout and the GPU/node series lists wait on this).
        self.nodes_revision = 0
        self.live_source = True  # False in a replay: link states are what was recorded
        self.alerts = ActiveAlerts()  # health alerts firing now, from alert events and snapshots
        self.radar = RadarBoard()  # the straggler/hang radar's latest verdict per rank (gui/radar.py)
        self._sorted_jobs: dict[str, tuple[int, dict[str, JobInfo], list[JobInfo]]] = {}  # visible_jobs' cache
        self._job_rows: dict[str, _NodeRows] = {}  # job_rows' cache, per node

    # ---- applying what a source emits ------------------------------------------------

    def add_node(self, key: str) -> NodeState:
        node = self.nodes.get(key)
        if node is None:
            node = self.nodes[key] = NodeState(key)
            self._bump(nodes=True)
        return node

    def remove_node(self, key: str) -> None:
        node = self.nodes.get(key)
        if node is not None and node.inventory is not None:
            self.alerts.forget_node(node.inventory.node)
        self._sorted_jobs.pop(key, None)
        self._job_rows.pop(key, None)
        if self.nodes.pop(key, None) is not None:
            self.series.drop_node(key)
            self._bump(nodes=True)

    def clear(self) -> None:
        self.nodes.clear()
        self._sorted_jobs.clear()
        self._job_rows.clear()
        self.events.clear()
        self.series.clear()
        self.alerts.clear()
        self.radar.clear()
        self._bump(nodes=True)

    def set_link(self, key: str, state: str, detail: str = "") -> None:
        node = self.add_node(key)
        node.rev += 1
        node.link = state
        node.link_detail = detail
        if state == "live":
            node.ever_live = True
        elif state in ("stale", "down"):
            node.failed_once = True
        self._bump()

    def apply_snapshot(self, key: str, snap: SnapshotReply) -> None:
        """Replace what is known about a node with a fresh snapshot."""
        node = self.add_node(key)
        node.rev += 1
        node.inventory = snap.inventory
        node.jobs = {j.id: j for j in snap.jobs}
        node.jobs_rev += 1
        # A new snapshot means a (re)connect: the previous sample may belong to another life
        # of the daemon; derive() refuses to pair samples of different boot ids anyway.
        samples = sorted(snap.samples, key=lambda s: s.mono_s)
        prev = node.last_sample
        if prev is not None and samples and samples[0].boot_id != prev.boot_id:
            prev = None
        for s in samples:
            if prev is not None and s.mono_s <= prev.mono_s and s.boot_id == prev.boot_id:
                continue  # already charted
            self._apply_sample(node, s, prev)
            prev = s
        for ev in snap.events:
            self._add_event(ev)
        # After the events: what the snapshot says is firing is the truth (an alert whose
        # clearing fell out of the snapshot's recent events is not left behind).
        self.alerts.replace_node(snap.inventory.node, snap.alerts)
        node.last_heard_s = self.clock()
        self._bump(nodes=True)

    def apply_message(self, key: str, msg: StreamMsg) -> None:
        node = self.add_node(key)
        node.last_heard_s = self.clock()
        if not isinstance(msg, Heartbeat):
            node.rev += 1
        if isinstance(msg, SampleMsg):
            self._apply_sample(node, msg.sample, node.last_sample)
            self._bump()
        elif isinstance(msg, JobMsg):
            known = node.jobs.get(msg.job.id)
            if known is not None and msg.job.revision < known.revision:
                return  # built before a change a reply already showed (the stream lags the reply)
            node.jobs[msg.job.id] = msg.job
            node.jobs_rev += 1
            self._bump(structure=known is None)
        elif isinstance(msg, EventMsg):
            self._add_event(msg.event)
            self._bump()
        elif isinstance(msg, InventoryMsg):
            node.inventory = msg.inventory
            self._bump(nodes=True)
        elif isinstance(msg, Heartbeat):
            pass

    def apply_summaries(self, batch: list[NodeSummary]) -> None:
        """Summaries of nodes behind a relay (keyed by node name), applied in place: the
        inventory and jobs are rebuilt only when they changed, so a steady fleet costs one
        small derived record and one chart row per node per second, and one redraw."""
        structure = nodes = False
        now = self.clock()
        for s in batch:
            node = self.nodes.get(s.node)
            if node is None:
                node = self.nodes[s.node] = NodeState(s.node)
                nodes = True
            prev, node.summary = node.summary, s
            node.rev += 1
            if s.link != node.link or s.detail != node.link_detail:
                node.link, node.link_detail = s.link, s.detail
                node.ever_live = node.ever_live or s.link == "live"
                node.failed_once = node.failed_once or s.link in ("stale", "down")
            if prev is None or node.inventory is None or _inventory_changed(prev, s):
                node.inventory = _summary_inventory(s)
                nodes = True
            if s.wall_s and (node.derived is None or s.wall_s > node.derived.wall_s):
                self._apply_summary_sample(node, s)
            if prev is None or _jobs_changed(prev.jobs, s.jobs):
                ids = set(node.jobs)
                node.jobs = {j.id: JobInfo(id=j.id, node=s.node, name=j.name, state=j.state,  # type: ignore[arg-type]
                                           spec=JobSpec(argv=[j.name or j.id], name=j.name), owner=j.owner,
                                           priority=j.priority, gpus=list(j.gpus)) for j in s.jobs}
                node.jobs_rev += 1
                structure = structure or ids != set(node.jobs)
            if s.link == "live":
                node.last_heard_s = now
            if prev is None or prev.alerts != s.alerts:
                self.alerts.replace_node(s.node, s.alerts)  # the node's own and the relay's node_stale
        if batch:
            self._bump(structure=structure, nodes=nodes)

    def _apply_summary_sample(self, node: NodeState, s: NodeSummary) -> None:
        gpus = [DerivedGpu(index=g.index, sm_util_pct=g.util_pct, mem_used_bytes=g.mem_used_bytes,
                           mem_total_bytes=g.mem_total_bytes, temp_c=g.temp_c, power_w=g.power_w,
                           mem_used_pct=(100.0 * g.mem_used_bytes / g.mem_total_bytes
                                         if g.mem_used_bytes is not None and g.mem_total_bytes else None))
                for g in s.gpus]
        jobs = [DerivedCgroup(job_id=j.id, app=dict(j.throughput)) for j in s.jobs if j.throughput]
        mem_pct = 100.0 * s.mem_used_bytes / s.mem_total_bytes if s.mem_used_bytes is not None and s.mem_total_bytes else 0.0
        node.derived = DerivedNode(node=s.node, wall_s=s.wall_s, interval_s=1.0, cpu_pct=s.cpu_pct or 0.0,
                                   mem_total_bytes=s.mem_total_bytes, mem_used_bytes=s.mem_used_bytes or 0,
                                   mem_used_pct=mem_pct, gpus=gpus, jobs=jobs)
        values: dict[tuple[str, str], float | None] = {("", "cpu_pct"): s.cpu_pct, ("", "mem_used_pct"): mem_pct}
        for g in gpus:
            scope = gpu_scope(g.index)
            values[(scope, "sm_util_pct")] = g.sm_util_pct
            values[(scope, "mem_used_pct")] = g.mem_used_pct
            values[(scope, "power_w")] = g.power_w
            values[(scope, "temp_c")] = g.temp_c
        for j in jobs:
            tp = throughput_of(j.app)
            values[(j.job_id, "throughput")] = None if tp is None else tp[0]
            for name, value in j.app.items():
                if name.endswith("_per_s"):
                    values[(j.job_id, "app:" + name)] = value
        self.series.append(node.key, s.wall_s, values, summary=True)

    def apply_job(self, key: str, job: JobInfo) -> None:
        """A job as a reply reported it (arrives before the stream says the same)."""
        node = self.add_node(key)
        node.rev += 1
        known = job.id in node.jobs
        node.jobs[job.id] = job
        node.jobs_rev += 1
        self._bump(structure=not known)

    def add_local_event(self, message: str, *, node: str = "", job_id: str = "", ok: bool = True,
                        kind: str = "app") -> None:
        """An event the app itself produced (an action result, a failure)."""
        self._add_event(Event(wall_s=self.clock(), node=node, kind=kind, message=message, job_id=job_id, ok=ok))
        self._bump()

    def _add_event(self, ev: Event) -> None:
        self.events.append(ev)
        self.events_total += 1
        self.alerts.apply(ev)
        self.radar.apply(ev)

    def _apply_sample(self, node: NodeState, sample: NodeSample, prev: NodeSample | None) -> None:
        d = derive(sample, prev)
        node.last_sample = sample
        node.derived = d
        values: dict[tuple[str, str], float | None] = {}
        for f in _NODE_FIELDS:
            values[("", f)] = getattr(d, f)
        for g in d.gpus:
            scope = gpu_scope(g.index)
            for f in _GPU_FIELDS:
                values[(scope, f)] = getattr(g, f)
        for j in d.jobs:
            for f in _JOB_FIELDS:
                values[(j.job_id, f)] = getattr(j, f)
            tp = throughput_of(j.app)
            values[(j.job_id, "throughput")] = None if tp is None else tp[0]
            for name, value in j.app.items():
                if name.endswith("_per_s") or name in CHARTED_GAUGES:
                    values[(j.job_id, "app:" + name)] = value
        self.series.append(node.key, sample.wall_s, values)

    def _bump(self, structure: bool = False, nodes: bool = False) -> None:
        self.revision += 1
        if structure or nodes:
            self.structure_revision += 1
        if nodes:
            self.nodes_revision += 1

    # ---- reading ---------------------------------------------------------------------

    def node_of_job(self, job_id: str) -> str | None:
        # Job ids start with their node's name (the key, through a relay): look there first.
        guess = self.nodes.get(job_id.rsplit(".", 1)[0])
        if guess is not None and job_id in guess.jobs:
            return guess.key
        for key, node in self.nodes.items():
            if job_id in node.jobs:
                return key
        return None

    def job(self, job_id: str) -> JobInfo | None:
        key = self.node_of_job(job_id)
        return None if key is None else self.nodes[key].jobs[job_id]

    def live_hop(self, identity: str) -> JobInfo | None:
        """The hop of a job (by its first id) that is not superseded: where it is now."""
        found = None
        for node in self.nodes.values():
            for j in node.jobs.values():
                if job_identity(j) == identity:
                    if j.state != "migrated":
                        return j
                    found = j
        return found

    def visible_jobs(self, key: str) -> list[JobInfo]:
        """Jobs of a node worth showing: active and queued ones, plus recently finished."""
        now = self.clock()
        node = self.nodes[key]
        cached = self._sorted_jobs.get(key)
        if cached is None or cached[0] != node.jobs_rev or cached[1] is not node.jobs:
            # Sorted once per change of the node's jobs (views ask every refresh, for every node;
            # through a relay every node changes every second, its jobs seldom).
            cached = self._sorted_jobs[key] = (node.jobs_rev, node.jobs,
                                               sorted(node.jobs.values(), key=lambda j: _job_sort_key(j.id)))
        return [j for j in cached[2] if not (j.state in TERMINAL_STATES and j.ended_s is not None
                                             and now - j.ended_s > KEEP_FINISHED_S)]

    def job_rows(self, show_migrated: bool = False) -> list[JobRow]:
        """One row per job shown. A migrated job is one job: its live hop is listed and the
        superseded hops (state ``migrated``) only when ``show_migrated`` asks for them."""
        rows: list[JobRow] = []
        now = self.clock()
        for key, node in self.nodes.items():
            # A node that stopped answering: its jobs keep their last known state, marked stale,
            # and show no live-looking numbers.
            stale = node.is_stale and self.live_source
            # A node's rows are built once per change of its jobs; through a relay a node's
            # numbers change every second but its jobs seldom: then only the numbers of its
            # running jobs are read again, and a row is replaced only where they moved.
            tag = (node.jobs_rev, node.jobs, stale, show_migrated, node.last_heard_s if stale else None)
            cached = self._job_rows.get(key)
            # ... or when a finished job shown leaves, or the clock went back (a replay's seek).
            if cached is None or cached.tag != tag or not cached.built_s <= now <= cached.expires:
                cached = self._job_rows[key] = self._node_job_rows(key, node, stale, show_migrated, tag)
            elif cached.derived is not node.derived:
                self._renumber_rows(key, node, cached)
            rows.extend(cached.rows)
        return rows

    def _job_numbers(self, key: str, node: NodeState, j: JobInfo) -> tuple[float | None, int | None, float | None, str]:
        """A running job's (CPU %, memory, throughput, its unit) for its row, from the node's
        latest numbers."""
        m = node.job_metrics(j.id)
        if m is None:
            return None, None, None, ""
        tp = throughput_of(m.app)
        if tp is not None:  # the windowed mean the charts draw, not the last interval's rate
            ns = self.series.nodes.get(key)
            mean = None if ns is None else smoothed_last(ns, j.id, "throughput")
            tp = (tp[0] if mean is None else mean, tp[1])
        return m.cpu_pct, m.mem_current_bytes, None if tp is None else tp[0], "" if tp is None else tp[1]

    def _node_job_rows(self, key: str, node: NodeState, stale: bool, show_migrated: bool, tag: tuple) -> _NodeRows:
        out = _NodeRows(tag=tag, derived=node.derived, built_s=self.clock())
        shown = self.visible_jobs(key)
        # Rebuilt when the first finished job shown leaves the list (visible_jobs' clock rule).
        out.expires = min((j.ended_s + KEEP_FINISHED_S for j in shown if j.state in TERMINAL_STATES and j.ended_s is not None),
                          default=math.inf)
        for j in shown:
            if j.state == "migrated" and not show_migrated:
                continue
            live = j.state in ACTIVE_STATES and not stale
            cpu, mem, tp, unit = self._job_numbers(key, node, j) if live else (None, None, None, "")
            out.rows.append(JobRow(
                id=j.id, name=j.name or j.spec.name or j.id, node=key, state=j.state,
                priority=j.priority, gpus=tuple(j.gpus), cpu_pct=cpu, mem_bytes=mem,
                throughput=tp, throughput_unit=unit,
                # Age counts from the first submit, so a migration does not make a job young.
                started_s=(j.first_submitted_s or j.submitted_s) if j.lineage else (j.started_s if j.started_s else j.submitted_s or None),
                kind=j.spec.kind, migration=dict(j.migration), backend=j.backend,
                stale=stale and j.state not in TERMINAL_STATES,
                # Shown only on a stale row ("last seen 2 m ago"): a live node's moves every
                # second and would make every row change every second.
                last_seen_s=(node.last_heard_s or None) if stale else None,
                reason=j.reason, queue_position=j.queue_position, origin=job_identity(j),
            ))
            if live:
                out.live.append((len(out.rows) - 1, j))
        return out

    def _renumber_rows(self, key: str, node: NodeState, cached: _NodeRows) -> None:
        """The node's numbers changed, its jobs did not: new numbers into the running jobs'
        rows (a row object is replaced, never changed: the table compares old and new rows)."""
        cached.derived = node.derived
        rows = cached.rows
        for i, j in cached.live:
            r = rows[i]
            nums = self._job_numbers(key, node, j)
            if nums != (r.cpu_pct, r.mem_bytes, r.throughput, r.throughput_unit):
                if rows is cached.rows:
                    rows = list(rows)  # job_rows' earlier lists keep the rows they had
                rows[i] = dataclasses.replace(r, cpu_pct=nums[0], mem_bytes=nums[1], throughput=nums[2],
                                              throughput_unit=nums[3])
        cached.rows = rows

    def jobs_on_gpu(self, key: str, index: int) -> list[JobInfo]:
        return [j for j in self.visible_jobs(key) if index in j.gpus and j.state not in TERMINAL_STATES]

    def summary(self) -> dict[str, int]:
        """Counts for the title bar: nodes, by link state."""
        out = {"nodes": len(self.nodes)}
        for n in self.nodes.values():
            out[n.status] = out.get(n.status, 0) + 1
        return out

    def stale_job(self, job_id: str) -> bool:
        """The job's node is not live (in a live session): what is shown is as last seen."""
        key = self.node_of_job(job_id)
        if key is None or not self.live_source:
            return False
        node = self.nodes[key]
        return node.is_stale and node.jobs[job_id].state not in TERMINAL_STATES

    def last_seen_text(self, key: str) -> str:
        """"last seen 2 m 05 s ago" for a node, or "never seen"."""
        node = self.nodes.get(key)
        if node is None or not node.last_heard_s:
            return "never seen"
        return f"last seen {fmt.duration(max(0.0, self.clock() - node.last_heard_s))} ago"

    def node_display_name(self, key: str) -> str:
        """A node key as people know it: the daemon's node name when known."""
        node = self.nodes.get(key)
        return node.name if node is not None else key


def _jobs_changed(a: list[JobSummary], b: list[JobSummary]) -> bool:
    """The jobs of two summaries differ in what a JobInfo holds (their throughputs move every
    second: those are numbers, read from ``node.derived``, and do not rebuild the jobs)."""
    return len(a) != len(b) or any(
        x.id != y.id or x.state != y.state or x.name != y.name or x.owner != y.owner or x.priority != y.priority
        or x.gpus != y.gpus for x, y in zip(a, b))


def _inventory_changed(a: NodeSummary, b: NodeSummary) -> bool:
    return (len(a.gpus) != len(b.gpus) or a.labels != b.labels or a.cpu_count != b.cpu_count
            or a.mem_total_bytes != b.mem_total_bytes or a.simulated != b.simulated)


def _summary_inventory(s: NodeSummary) -> NodeInventory:
    """What a summary says of a node's hardware, as an inventory (names and models come with
    its full snapshot when a view follows it)."""
    via = " → ".join(s.via) if s.via else ""
    return NodeInventory(
        node=s.node, hostname="simulated" if s.simulated else s.node, cpu_count=s.cpu_count,
        mem_total_bytes=s.mem_total_bytes, gpu_backend="simulated" if s.simulated else "nvml",
        gpu_status="simulated" if s.simulated else "ok",
        gpus=[GpuInfo(index=g.index, name="GPU", uuid="", mem_total_bytes=g.mem_total_bytes or 0, simulated=s.simulated)
              for g in s.gpus],
        agentd_version="summary via relay" + (f" {via}" if via else ""), labels=dict(s.labels))


_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple:
    """Sort key that orders digit runs as numbers: gpu-a.2 < gpu-a.10, node2.1 < node10.1."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in _DIGITS.split(text) if p)


def natural_sort_text(text: str) -> str:
    """``natural_key`` as a string (for Qt's string comparison): digit runs zero-padded."""
    return _DIGITS.sub(lambda m: m.group(1).rjust(12, "0"), text.lower())


def _job_sort_key(job_id: str) -> tuple:
    return natural_key(job_id)


def job_identity(job: JobInfo) -> str:
    """A job's one identity across migrations: its first id (``origin``, else the oldest
    lineage entry, else its own id)."""
    return job.origin or (job.lineage[0] if job.lineage else job.id)


def migration_fraction(migration: dict) -> float | None:
    """0..1 progress of a migration from JobInfo.migration, None when unknown."""
    total = migration.get("bytes_total")
    sent = migration.get("bytes_sent")
    if isinstance(total, (int, float)) and total > 0 and isinstance(sent, (int, float)):
        return max(0.0, min(1.0, sent / total))
    return None
