"""A SIMULATED cluster state for the map's benchmark, its screenshots and its tests.

No daemons: node samples come from :class:`agentd.store.recording_synth.SyntheticNode` (the
recorder benchmark's realistic counters) and go through the one ``derive()`` like live ones;
jobs, racks, owners and a few stale or down nodes are added so the map has something to show.
Every node's inventory says ``gpu_status = "simulated"``, which the views print; nothing here can
pass for a real cluster. Deterministic for a given seed.
"""

from __future__ import annotations

import random

import msgspec

from agentd.metrics.samples import NodeSample
from agentd.protocol.jobs import JobInfo, JobSpec
from agentd.protocol.messages import SnapshotReply
from agentd.store.recording_synth import SyntheticNode
from gui.state import ClusterState

OWNERS = ("alice", "bob", "carol", "dan", "erin", "farid", "grace", "hiro")
NODES_PER_RACK = 32
START_WALL_S = 1_700_000_000.0


def _idle(sample: NodeSample, busy: set[int]) -> NodeSample:
    """GPUs without a job read idle: no utilisation, a little memory, cooler, low power."""
    gpus = [g if g.index in busy else msgspec.structs.replace(g, sm_util_pct=0.0, mem_used_bytes=512 * 1024**2,
                                                                temp_c=min(g.temp_c or 35.0, 36.0))
            for g in sample.gpus]
    return msgspec.structs.replace(sample, gpus=gpus)


def simulated_state(nodes: int, gpus: int = 8, seed: int = 0, clock=None) -> ClusterState:
    """``nodes`` simulated nodes of ``gpus`` GPUs in racks of 32 (label ``rack``), with jobs."""
    rng = random.Random(seed)
    now = START_WALL_S + 2.0
    st = ClusterState(clock=clock or (lambda: now))
    job_no = 0
    for n in range(nodes):
        rack = n // NODES_PER_RACK + 1
        name = f"r{rack:02d}-n{n % NODES_PER_RACK + 1:02d}"
        synth = SyntheticNode(name, gpus=gpus, jobs=0, cores=8, start_wall_s=START_WALL_S, seed=seed)
        inv = msgspec.structs.replace(synth.inventory(), labels={"rack": f"r{rack:02d}"})
        # One job over all GPUs, two halves, a mix, or none (an idle node).
        shape = rng.choices(("whole", "halves", "mixed", "idle"), weights=(55, 20, 10, 15))[0]
        spans: list[list[int]] = {"whole": [list(range(gpus))], "idle": [],
                                  "halves": [list(range(gpus // 2)), list(range(gpus // 2, gpus))],
                                  "mixed": [[0, 1], [2], [4, 5, 6]]}[shape]
        jobs = []
        for span in spans:
            span = [g for g in span if g < gpus]
            if not span:
                continue
            job_no += 1
            state = rng.choices(("running", "paused", "queued"), weights=(92, 5, 3))[0]
            owner = rng.choice(OWNERS)
            jobs.append(JobInfo(id=f"{name}.{job_no}", node=name, name=f"{owner}-train-{job_no % 97}", state=state,
                                owner=owner, spec=JobSpec(argv=["python", "train.py"]), gpus=span,
                                submitted_s=START_WALL_S - 3600, started_s=START_WALL_S - 3000))
        busy = {g for j in jobs if j.state == "running" for g in j.gpus}
        samples = [_idle(synth.next(), busy) for _ in range(2)]
        st.apply_snapshot(name, SnapshotReply(seq=1, inventory=inv, samples=samples, jobs=jobs))
        roll = rng.random()
        st.set_link(name, "stale" if roll < 0.01 else "down" if roll < 0.015 else "live")
    return st
