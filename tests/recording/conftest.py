"""Fixtures of the recording tests: fresh database paths and synthetic recordings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentd.metrics.derive import derive
from agentd.metrics.samples import DerivedNode, NodeSample
from agentd.protocol.jobs import Event, JobInfo, JobSpec
from agentd.protocol.messages import EventMsg, JobMsg, SampleMsg, SnapshotReply
from agentd.store.recording import Recorder
from agentd.store.recording_synth import SyntheticNode

START_S = 1_700_000_000.0


class FakeClock:
    """Wall clock the test moves by hand (the recorder time-stamps job changes with it)."""

    def __init__(self, t: float = START_S) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Made:
    """A recording written by :func:`make_recording` and what live views showed meanwhile."""

    path: Path
    live: list[DerivedNode]
    samples: dict[str, list[NodeSample]] = field(default_factory=dict)


def job(node: str, n: int, state: str = "running") -> JobInfo:
    return JobInfo(id=f"{node}.{n}", node=node, name=f"train-{n}", state=state, spec=JobSpec(argv=["python", "train.py"]))


def make_recording(path: Path, nodes: int = 2, seconds: int = 40, cores: int = 4, gpus: int = 2, jobs: int = 2,
                   title: str = "test session", drop: dict[str, tuple[int, int]] | None = None) -> Made:
    """Record ``seconds`` ticks of ``nodes`` synthetic nodes as a live watcher sees them.

    Each node starts with a snapshot holding two history samples; then one SampleMsg per
    tick. ``drop`` = {node: (first, last)} leaves out ticks (a link that went down)."""
    clock = FakeClock()
    gens = [SyntheticNode(f"n{i}", cores=cores, gpus=gpus, jobs=jobs, start_wall_s=START_S - 2) for i in range(nodes)]
    made = Made(path=path, live=[])
    last: dict[str, NodeSample] = {}
    seq = {g.node: 0 for g in gens}
    with Recorder(path, title=title, clock=clock) as rec:
        for g in gens:
            hist = [g.next(), g.next()]
            rec.link_state(g.node, "connecting")
            rec.feed(g.node, SnapshotReply(seq=0, inventory=g.inventory(), samples=hist, jobs=[job(g.node, 1)],
                                           events=[Event(wall_s=START_S - 5, node=g.node, kind="job.state", message="started")]))
            rec.link_state(g.node, "live")
            last[g.node] = hist[-1]
            made.samples[g.node] = list(hist)
        for tick in range(seconds):
            clock.t = START_S + tick + 1
            for g in gens:
                s = g.next()
                lo, hi = (drop or {}).get(g.node, (-1, -2))
                if lo <= tick <= hi:
                    if tick == lo:
                        rec.link_state(g.node, "down", "no answer")
                    continue
                if tick == hi + 1:
                    rec.link_state(g.node, "live")
                seq[g.node] += 1
                rec.feed(g.node, SampleMsg(node=g.node, seq=seq[g.node], sample=s))
                made.live.append(derive(s, last.get(g.node)))
                last[g.node] = s
                made.samples[g.node].append(s)
            if tick == 10:
                seq["n0"] += 1
                rec.feed("n0", JobMsg(node="n0", seq=seq["n0"], job=job("n0", 1, "paused")))
                seq["n0"] += 1
                rec.feed("n0", EventMsg(node="n0", seq=seq["n0"], event=Event(
                    wall_s=clock.t, node="n0", kind="action", message="paused n0.1", job_id="n0.1", actor="alice")))
            if tick == 20:
                seq["n0"] += 1
                rec.feed("n0", EventMsg(node="n0", seq=seq["n0"], event=Event(
                    wall_s=clock.t, node="n0", kind="action", message="cannot resume n0.9: no such job",
                    job_id="n0.9", actor="bob", ok=False)))
    return made


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "session.db"


@pytest.fixture
def recording(db_path: Path) -> Made:
    return make_recording(db_path)
