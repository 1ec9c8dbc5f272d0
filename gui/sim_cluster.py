"""A SIMULATED cluster state for the map's benchmark, its screenshots and its tests.

No daemons: node samples come from :class:`agentd.store.recording_synth.SyntheticNode` (the
recorder benchmark's realistic counters) and go through the one ``derive()`` like live ones;
jobs, racks, owners and a few stale or down nodes are added so the map has something to show.
Every node's inventory says ``gpu_status = "simulated"``, which the views print; nothing here can
pass for a real cluster. Deterministic for a given seed.

From 10 nodes on, two groups (gang jobs, ``JobSpec.group``) run with 5 minutes of history: a
16-rank ``trainer`` gang on two nodes (one rank per GPU; the radar calls rank 11 a straggler), and
an async-RL-shaped run: role ``trainer`` on 2 nodes, role ``rollout`` on 6 nodes (one rank per
node over its 8 GPUs) reporting ``tokens``, ``queue_depth`` and ``policy_version``.
"""

from __future__ import annotations

import math
import random

import msgspec

from agentd.metrics.samples import AppMetric, CgroupSample, NodeSample
from agentd.protocol.jobs import Event, GroupMember, JobInfo, JobSpec
from agentd.protocol.messages import EventMsg, SnapshotReply
from agentd.store.recording_synth import SyntheticNode
from gui.state import ClusterState

OWNERS = ("alice", "bob", "carol", "dan", "erin", "farid", "grace", "hiro")
NODES_PER_RACK = 32
START_WALL_S = 1_700_000_000.0
GROUP_HISTORY_S = 300  # seconds of samples the groups' nodes have (the others: two samples)
GROUPS_MIN_NODES = 10
# node index -> (group, role, first rank); the gang on nodes 2-3, the RL run on 5-6 and 8-13
GANG_NODES = (2, 3)
RL_TRAINER_NODES = (5, 6)
RL_ROLLOUT_NODES = (8, 9, 10, 11, 12, 13)
STRAGGLER_RANK = 11
GiB = 1024**3


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
        ranks = _group_ranks(n, name, gpus) if nodes >= GROUPS_MIN_NODES and gpus >= 2 else []
        if ranks:
            jobs = ranks
            synth = SyntheticNode(name, gpus=gpus, jobs=0, cores=8, start_wall_s=START_WALL_S - GROUP_HISTORY_S, seed=seed)
            busy = {g for j in jobs for g in j.gpus}
            samples = [_group_metrics(_idle(synth.next(), busy), jobs, k) for k in range(GROUP_HISTORY_S + 2)]
        else:
            busy = {g for j in jobs if j.state == "running" for g in j.gpus}
            samples = [_idle(synth.next(), busy) for _ in range(2)]
        st.apply_snapshot(name, SnapshotReply(seq=1, inventory=inv, samples=samples, jobs=jobs))
        roll = rng.random()
        st.set_link(name, "stale" if roll < 0.01 or ranks else "down" if roll < 0.015 else "live")
        if ranks:
            st.set_link(name, "live")
    if nodes >= GROUPS_MIN_NODES and gpus >= 2:
        straggler = next((j for node in st.nodes.values() for j in node.jobs.values()
                          if j.spec.group is not None and j.spec.group.id.endswith(".run-7") and j.spec.group.rank == STRAGGLER_RANK), None)
        if straggler is not None and straggler.spec.group is not None:
            st.apply_message(straggler.node, EventMsg(node=straggler.node, seq=0, event=Event(
                wall_s=START_WALL_S + 1.0, node=straggler.node, kind="radar", job_id=straggler.id, ok=False,
                                message=f"rank {STRAGGLER_RANK} of {straggler.spec.group.id}: straggler (slow GPU)",
                                data={"group": straggler.spec.group.id, "rank": STRAGGLER_RANK, "node": straggler.node,
                                      "job_id": straggler.id, "status": "straggler", "class": "slow GPU",
                                      "evidence": "busy +12% over the group median for 45 s; SM clock 1.41 GHz vs 1.98 GHz"})))
    return st


def _node_name(n: int) -> str:
    return f"r{n // NODES_PER_RACK + 1:02d}-n{n % NODES_PER_RACK + 1:02d}"


def _group_ranks(n: int, name: str, gpus: int) -> list[JobInfo]:
    """The rank jobs node ``n`` runs for the simulated groups (none for most nodes)."""
    def rank_job(gid: str, jname: str, role: str, rank: int, world: int, node_rank: int, local: int, span: list[int]) -> JobInfo:
        spec = JobSpec(argv=["python", f"{role}.py"], name=jname,
                       group=GroupMember(id=gid, rank=rank, world_size=world, role=role, node_rank=node_rank,
                                         local_rank=local, gpu_indexes=span))
        return JobInfo(id=f"{name}.{700 + rank}" if gid.endswith("run-7") else f"{name}.{800 + rank}", node=name, name=jname,
                       state="running", owner="erin" if gid.endswith("run-7") else "hiro", spec=spec, gpus=span,
                       submitted_s=START_WALL_S - 3600, started_s=START_WALL_S - 3000)

    if n in GANG_NODES:
        nr = GANG_NODES.index(n)
        world = gpus * len(GANG_NODES)
        gid = f"{_node_name(GANG_NODES[0])}.run-7"
        return [rank_job(gid, "pretrain-8b", "trainer", nr * gpus + g, world, nr, g, [g]) for g in range(gpus)]
    world = gpus * len(RL_TRAINER_NODES) + len(RL_ROLLOUT_NODES)
    gid = f"{_node_name(RL_TRAINER_NODES[0])}.run-8"
    if n in RL_TRAINER_NODES:
        nr = RL_TRAINER_NODES.index(n)
        return [rank_job(gid, "grpo-async", "trainer", nr * gpus + g, world, nr, g, [g]) for g in range(gpus)]
    if n in RL_ROLLOUT_NODES:
        nr = RL_ROLLOUT_NODES.index(n)
        rank = gpus * len(RL_TRAINER_NODES) + nr
        return [rank_job(gid, "grpo-async", "rollout", rank, world, len(RL_TRAINER_NODES) + nr, 0, list(range(gpus)))]
    return []


def _group_metrics(sample: NodeSample, jobs: list[JobInfo], k: int) -> NodeSample:
    """What the ranks of the simulated groups report at second ``k`` of the history: their
    cgroup counters and their own metrics (counters ``samples``/``tokens``, gauges
    ``queue_depth``/``policy_version``), as AGENTD_METRIC lines would bring them."""
    cg, app = [], []
    version = k // 45 + 120  # the trainer publishes a new policy every 45 s
    for j in jobs:
        m = j.spec.group
        assert m is not None
        cg.append(CgroupSample(job_id=j.id, cpu_usage_us=int(k * 3.2e6), mem_current_bytes=(24 + m.rank % 5) * GiB))
        if m.role == "rollout":
            app += [AppMetric(job_id=j.id, name="tokens", value=_tokens(k, m.rank), counter=True),
                    AppMetric(job_id=j.id, name="queue_depth", value=float(max(0, round(14 + 10 * math.sin(k / 50 + (m.rank % 8) / 10))))),
                    # A rollout picks up a new policy some seconds after it is published.
                    AppMetric(job_id=j.id, name="policy_version", value=float((max(0, k - 12 - 4 * m.rank)) // 45 + 120))]
        elif m.id.endswith("run-7"):
            app.append(AppMetric(job_id=j.id, name="samples", value=22.0 * k + 3 * math.sin(k / 20), counter=True))
        else:
            app.append(AppMetric(job_id=j.id, name="samples", value=_RL_TRAINED[k], counter=True))
            if not m.id.endswith("run-7"):
                app.append(AppMetric(job_id=j.id, name="policy_version", value=float(version)))
    return msgspec.structs.replace(sample, jobs=cg, app=app)


def _rl_trained(seconds: int) -> list[float]:
    """Samples an RL trainer rank has consumed by each second: 48/s while the rollouts' queue
    holds work, down to a third of that as it runs dry (the consumer waits on the producers)."""
    out, total = [], 0.0
    for k in range(seconds):
        out.append(total)
        queue = 14 + 10 * math.sin(k / 50 + 0.25)  # about the rollouts' mean queue depth
        total += 48.0 * (0.35 + 0.65 * min(1.0, max(0.0, queue / 14)))
    return out


_RL_TRAINED = _rl_trained(GROUP_HISTORY_S + 3)


def _tokens(k: int, rank: int) -> float:
    """Tokens generated by a rollout rank by second ``k``: about 5,200/s, slower while the
    trainer's queue is full (seconds 55-105: back-pressure)."""
    return 5200.0 * k + 1300.0 * 37 * (math.cos(rank) - math.cos(k / 37 + rank)) - (2340.0 * max(0, min(k, 105) - 55))
