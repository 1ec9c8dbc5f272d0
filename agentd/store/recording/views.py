"""What a recording reader returns (plain frozen records), and the partial sample views it decodes
to skip the parts of a sample a query does not need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from agentd.metrics.derive import derive
from agentd.metrics.samples import (
    AppMetric,
    CgroupSample,
    DerivedNode,
    GpuSample,
    NodeInventory,
    NodeSample,
)
from agentd.protocol.jobs import Event, JobInfo
from agentd.protocol.messages import SnapshotReply

__all__ = [
    "SQL_COLUMNS", "Damage", "Gap", "LinkChange", "RecordedNode", "RecordedNodeState", "RecordingInfo",
    "SnapshotMark", "pair_interval",
]

@dataclass(frozen=True)
class LinkChange:
    """A recorded change of a node's link state."""

    state: str
    detail: str = ""


@dataclass(frozen=True)
class SnapshotMark:
    """The recorder received a snapshot here (a (re)connect): the node's state was replaced."""

    seq: int


@dataclass(frozen=True)
class RecordedNode:
    id: int
    key: str
    name: str
    endpoint: str


@dataclass(frozen=True)
class Gap:
    """A span with no data from a node: ``reason`` is "link <state>" or "no samples"."""

    node: str
    start_s: float
    end_s: float
    reason: str

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class RecordingInfo:
    path: str
    schema_version: int
    title: str
    notes: str
    app_version: str
    created_s: float | None
    start_s: float | None
    end_s: float | None
    nodes: list[str]
    samples: dict[str, int]
    events: int
    actions: int
    gaps: list[Gap]
    size_bytes: int

    @property
    def duration_s(self) -> float:
        if self.start_s is None or self.end_s is None:
            return 0.0
        return max(0.0, self.end_s - self.start_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path, "schema_version": self.schema_version, "title": self.title, "notes": self.notes,
            "app_version": self.app_version, "created_s": self.created_s, "start_s": self.start_s,
            "end_s": self.end_s, "duration_s": self.duration_s, "nodes": self.nodes, "samples": self.samples,
            "samples_total": sum(self.samples.values()), "events": self.events, "actions": self.actions,
            "gaps": [{"node": g.node, "start_s": g.start_s, "end_s": g.end_s, "duration_s": g.duration_s,
                      "reason": g.reason} for g in self.gaps],
            "size_bytes": self.size_bytes,
        }


@dataclass
class RecordedNodeState:
    """Everything known about one node at a moment of the recording (what
    :meth:`RecordingReader.state_at` returns; not the app's live ``gui.state.NodeState``)."""

    node: str
    inventory: NodeInventory | None
    jobs: list[JobInfo]
    older: NodeSample | None  # the sample before ``newer`` (for derive)
    newer: NodeSample | None  # the last sample at or before the moment
    link: str  # "live", "stale", "down", "connecting" or "" when never recorded
    snapshot_seq: int = 0

    def derived(self) -> DerivedNode | None:
        return None if self.newer is None else derive(self.newer, self.older)

    def as_snapshot(self, events: list[Event] = ()) -> SnapshotReply | None:  # type: ignore[assignment]
        """This state in the shape a live source hands the views (for replay)."""
        if self.inventory is None:
            return None
        samples = [s for s in (self.older, self.newer) if s is not None]
        return SnapshotReply(seq=self.snapshot_seq, inventory=self.inventory, samples=samples, jobs=self.jobs,
                             events=list(events))


# ---- recorder --------------------------------------------------------------------------------


class GpuView(msgspec.Struct, kw_only=True):
    """Only what derive_gpu needs: decoding skips the rest of the sample (much faster)."""

    node: str
    mono_s: float
    wall_s: float
    boot_id: str = ""
    gpus: list[GpuSample] = []


class JobView(msgspec.Struct, kw_only=True):
    node: str
    mono_s: float
    wall_s: float
    boot_id: str = ""
    jobs: list[CgroupSample] = []
    app: list[AppMetric] = []


gpu_view_dec = msgspec.msgpack.Decoder(GpuView)
job_view_dec = msgspec.msgpack.Decoder(JobView)

#: Raw columns of the samples table that :meth:`RecordingReader.series` reads without decoding.
SQL_COLUMNS = ("load_1", "mem_used_bytes", "gpu_count", "gpu_mem_used_bytes", "gpu_power_mw", "job_count",
               "cpu_busy_s", "cpu_total_s")


def pair_interval(new: Any, old: Any | None) -> float:
    """The interval derive() would use for this pair, 0 when it would not pair them."""
    if old is None or old.boot_id != new.boot_id or old.node != new.node:
        return 0.0
    return max(0.0, float(new.mono_s - old.mono_s))


@dataclass(frozen=True)
class Damage:
    """Samples n0..n1 of ``node`` could not be read (a damaged chunk or tail row): skipped."""

    node: str
    n0: int
    n1: int
    reason: str

