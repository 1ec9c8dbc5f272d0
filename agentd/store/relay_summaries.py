"""Record the nodes behind a relay from its 1 Hz summaries, in the recording's own terms.

A relay sends one :class:`~agentd.protocol.relay.NodeSummary` per node per tick (derived
numbers, not raw counters). :class:`SummaryWriter` turns each node's summaries into what
:class:`~agentd.store.recording.Recorder` already records, so replay, ``recording info`` and
the app read them like any node:

- the first summary becomes a snapshot: an inventory built from the summary (labelled
  ``recorded_from = "relay summary via RELAY"``, so nobody mistakes it for the node's own) and
  its job table; a job table that lost jobs is written as a new snapshot too (a summary says a
  job ended, not how);
- each newer summary becomes a sample whose counters are rebuilt so that the one ``derive()``
  gives back the summary's numbers: CPU time grows by ``cpu_pct`` of the node's cores, GPU and
  memory gauges are copied, job counters (``tokens_total``) become counter metrics again;
- a job that appears or changes becomes a job change, an alert that fires or clears an
  ``"alert"`` event, a link state a link state.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

from agentd.metrics.samples import (
    AppMetric,
    CpuTimes,
    GpuInfo,
    GpuSample,
    HostSample,
    NodeInventory,
    NodeSample,
)
from agentd.protocol.alerts import Alert, alert_data
from agentd.protocol.jobs import Event, JobInfo, JobSpec
from agentd.protocol.messages import EventMsg, JobMsg, SampleMsg, SnapshotReply
from agentd.protocol.relay import JobSummary, NodeSummary, SummaryMsg
from agentd.store.recording import Recorder

SUMMARY_BOOT_ID = "relay-summary"  # every rebuilt sample's boot id: its counters start at 0 here


@dataclass
class _Track:
    cpu: CpuTimes = field(default_factory=CpuTimes)
    wall_s: float = 0.0
    jobs: dict[str, JobSummary] = field(default_factory=dict)
    alerts: dict[tuple[str, str, str], Alert] = field(default_factory=dict)


def summary_inventory(s: NodeSummary, relay: str) -> NodeInventory:
    """The inventory a summary tells of (what it does not tell is left at its default)."""
    return NodeInventory(
        node=s.node, hostname=s.node, cpu_count=s.cpu_count, mem_total_bytes=s.mem_total_bytes,
        gpu_backend="simulated" if s.simulated else "", gpu_status="simulated" if s.simulated else "",
        gpus=[GpuInfo(index=g.index, name="", uuid="", mem_total_bytes=g.mem_total_bytes or 0, simulated=s.simulated)
              for g in s.gpus],
        labels={**s.labels, "recorded_from": f"relay summary via {'/'.join([relay, *s.via])}"},
        agentd_version="relay summary",
    )


def summary_job(s: NodeSummary, j: JobSummary) -> JobInfo:
    """A job as a summary tells of it (no argv or env cross a relay's summary)."""
    return JobInfo(id=j.id, node=s.node, name=j.name, state=j.state,  # type: ignore[arg-type]
                   spec=JobSpec(argv=[j.name or j.id], name=j.name, user=j.owner or None),
                   owner=j.owner, priority=j.priority, gpus=list(j.gpus))


def _app(j: JobSummary) -> list[AppMetric]:
    out: list[AppMetric] = []
    for name, value in j.throughput.items():
        if name.endswith("_total"):
            out.append(AppMetric(job_id=j.id, name=name[: -len("_total")], value=value, counter=True))
        elif not name.endswith("_per_s"):
            out.append(AppMetric(job_id=j.id, name=name, value=value, counter=False))
    return out


class SummaryWriter:
    """Feeds a relay's summaries into ``recorder`` (which it does not own). One thread."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._tracks: dict[str, _Track] = {}

    def feed(self, msg: SummaryMsg, skip: Container[str] = ()) -> None:
        """Record one batch; nodes in ``skip`` (their full detail is recorded) get link states only."""
        for s in msg.nodes:
            if s.node == msg.node:
                continue  # the relay's own node: its own samples are on the same link
            self.recorder.link_state(s.node, s.link, s.detail)
            if s.node in skip or s.cpu_pct is None or not s.wall_s:
                continue
            self._node(msg.node, s)

    def _node(self, relay: str, s: NodeSummary) -> None:
        track = self._tracks.get(s.node)
        new = track is None
        if track is None:
            self.recorder.add_node(s.node, endpoint=s.endpoint, name=s.node)
            track = self._tracks[s.node] = _Track()
        elif s.wall_s <= track.wall_s:
            return  # the same tick again (a relay republishes until the node samples)
        jobs = {j.id: j for j in s.jobs}
        lost = any(jid not in jobs for jid in track.jobs)
        sample = self._sample(track, s)
        if new or lost:
            self.recorder.feed(s.node, SnapshotReply(seq=0, inventory=summary_inventory(s, relay), samples=[sample],
                                                     jobs=[summary_job(s, j) for j in s.jobs]))
        else:
            for j in s.jobs:
                if track.jobs.get(j.id) != j:
                    self.recorder.feed(s.node, JobMsg(node=s.node, seq=0, job=summary_job(s, j)))
            self.recorder.feed(s.node, SampleMsg(node=s.node, seq=0, sample=sample))
        track.jobs = jobs
        alerts = {a.key: a for a in s.alerts}
        for key, a in alerts.items():
            if key not in track.alerts:
                self._alert(s.node, a, "firing")
        for key, a in track.alerts.items():
            if key not in alerts:
                self._alert(s.node, a, "cleared")
        track.alerts = alerts

    def _sample(self, track: _Track, s: NodeSummary) -> NodeSample:
        """The next sample of ``s.node`` (advances the track's counters)."""
        dt = max(0.0, s.wall_s - track.wall_s) if track.wall_s else 1.0
        cores = max(1, s.cpu_count)
        busy = min(1.0, max(0.0, (s.cpu_pct or 0.0) / 100.0))
        track.cpu = CpuTimes(user_s=track.cpu.user_s + dt * cores * busy,
                             idle_s=track.cpu.idle_s + dt * cores * (1.0 - busy))
        track.wall_s = s.wall_s
        used = s.mem_used_bytes or 0
        host = HostSample(cpu_total=track.cpu, mem_total_bytes=s.mem_total_bytes, mem_used_bytes=used,
                          mem_available_bytes=max(0, s.mem_total_bytes - used))
        gpus = [GpuSample(index=g.index, sm_util_pct=g.util_pct, mem_used_bytes=g.mem_used_bytes,
                          mem_total_bytes=g.mem_total_bytes, temp_c=g.temp_c,
                          power_mw=int(g.power_w * 1000) if g.power_w is not None else None) for g in s.gpus]
        app = [m for j in s.jobs for m in _app(j)]
        return NodeSample(node=s.node, mono_s=s.wall_s, wall_s=s.wall_s, host=host, gpus=gpus, app=app,
                          boot_id=SUMMARY_BOOT_ID)

    def _alert(self, node: str, alert: Alert, state: str) -> None:
        verb = "firing" if state == "firing" else "cleared"
        event = Event(wall_s=alert.since_s if state == "firing" else self.recorder.clock(), node=node, kind="alert",
                      message=f"{alert.severity} {verb}: {alert.message}", ok=state == "cleared",
                      data=alert_data(alert, "firing" if state == "firing" else "cleared"))
        self.recorder.feed(node, EventMsg(node=node, seq=0, event=event))
