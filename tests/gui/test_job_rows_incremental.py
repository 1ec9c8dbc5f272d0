"""The job table's rows kept per node and renumbered in place (through a relay every node's
numbers change every second, its jobs seldom) equal rows built from nothing, after random
changes of every kind; the map and the GPU series lists follow nodes, not jobs."""

from __future__ import annotations

import random

import msgspec
import pytest

from agentd.protocol.messages import JobMsg, SampleMsg
from agentd.protocol.relay import GpuSummary, JobSummary, NodeSummary
from tests.gui.gui_factories import job, sample, snapshot

pytestmark = [pytest.mark.gui]

T0 = 1_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def _summary(rng: random.Random, node: str, t: float, jobs: list[JobSummary], link: str = "live") -> NodeSummary:
    return NodeSummary(node=node, link=link, wall_s=t, cpu_count=8, cpu_pct=rng.uniform(0, 100), mem_total_bytes=64 << 30,
                       mem_used_bytes=rng.randrange(1 << 30, 60 << 30), simulated=True,
                       gpus=[GpuSummary(index=i, util_pct=rng.choice([None, rng.uniform(0, 100)]), mem_used_bytes=1 << 30,
                                        mem_total_bytes=80 << 30, temp_c=50.0, power_w=200.0) for i in range(4)],
                       jobs=jobs)


def _relay_jobs(rng: random.Random, node: str, n: int) -> list[JobSummary]:
    out = []
    for j in range(n):
        state = rng.choice(["running", "running", "queued", "paused"])
        tp = {"tokens_per_s": rng.uniform(100, 200)} if state == "running" and rng.random() < 0.7 else {}
        out.append(JobSummary(id=f"{node}.{j}", name=f"train-{j}", state=state, gpus=[j % 4], throughput=tp))
    return out


def _fresh_rows(st, show_migrated: bool) -> list:
    """Rows built from nothing (every cache dropped), the caches put back after."""
    saved = dict(st._job_rows), dict(st._sorted_jobs)
    st._job_rows.clear()
    st._sorted_jobs.clear()
    try:
        return st.job_rows(show_migrated=show_migrated)
    finally:
        st._job_rows.clear()
        st._sorted_jobs.clear()
        st._job_rows.update(saved[0])
        st._sorted_jobs.update(saved[1])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rows_kept_per_node_equal_rows_built_from_nothing(seed):
    from gui.state import KEEP_FINISHED_S, ClusterState

    rng = random.Random(seed)
    clock = Clock()
    st = ClusterState(clock=clock)
    relayed = [f"r{i}" for i in range(12)]
    direct = [f"d{i}" for i in range(4)]
    relay_jobs = {n: _relay_jobs(rng, n, rng.randrange(0, 5)) for n in relayed}
    for n in direct:
        st.apply_snapshot(n, snapshot(n, samples=[sample(n, 0.0, jobs={f"{n}.1": 0})], jobs=[job(f"{n}.1"), job(f"{n}.2", state="queued")]))
        st.set_link(n, "live")
    t = T0
    checked = 0
    for step in range(120):
        t += 1.0
        clock.t = t
        # Every relayed node's numbers move (a new summary); now and then its jobs or its link.
        batch = []
        for n in relayed:
            jobs = relay_jobs[n]
            if rng.random() < 0.1:
                jobs = relay_jobs[n] = _relay_jobs(rng, n, rng.randrange(0, 5))
            elif jobs and rng.random() < 0.1:  # one job's state or priority, nothing else
                k = rng.randrange(len(jobs))
                jobs = relay_jobs[n] = [msgspec.structs.replace(j, state=rng.choice(["running", "paused", "queued"]),
                                                                priority=rng.randrange(3)) if i == k else j
                                        for i, j in enumerate(jobs)]
            elif jobs and rng.random() < 0.3:  # throughputs move, the jobs stay
                jobs = relay_jobs[n] = [msgspec.structs.replace(j, throughput={"tokens_per_s": rng.uniform(100, 200)})
                                        if j.throughput else j for j in jobs]
            link = "stale" if rng.random() < 0.05 else "live"
            batch.append(_summary(rng, n, t, jobs, link))
        st.apply_summaries(batch)
        # Directly followed nodes: samples, job changes, finished jobs (that leave after a while).
        for n in direct:
            st.apply_message(n, SampleMsg(node=n, seq=step + 2, sample=sample(n, float(step + 1), busy_s=step * rng.uniform(0, 4),
                                                                        jobs={f"{n}.1": step * 400_000})))
            r = rng.random()
            if r < 0.08:
                old = st.nodes[n].jobs[f"{n}.2"]
                st.apply_job(n, msgspec.structs.replace(old, priority=rng.randrange(-3, 4)))
            elif r < 0.12:
                jid = f"{n}.{rng.randrange(3, 9)}"
                st.apply_message(n, JobMsg(node=n, seq=step + 2, job=job(jid, state="succeeded", ended_s=t - rng.uniform(0, KEEP_FINISHED_S),
                                                                  revision=step + 1)))
            elif r < 0.15:
                st.apply_message(n, JobMsg(node=n, seq=step + 2, job=job(f"{n}.{rng.randrange(9, 12)}", state="migrated", revision=step + 1)))
            if rng.random() < 0.03:
                st.set_link(n, rng.choice(["stale", "live"]))
        if rng.random() < 0.1:
            clock.t = t = t + rng.uniform(0, KEEP_FINISHED_S / 3)  # finished jobs leave the list
        for show_migrated in (False, True):
            got = st.job_rows(show_migrated=show_migrated)
            want = _fresh_rows(st, show_migrated)
            assert got == want, f"seed {seed} step {step}"
            # ... and both say what the relay said (a change that never reached node.jobs would
            # leave them equal and wrong).
            assert {(r.id, r.state, r.priority) for r in got if r.node in relay_jobs} == \
                {(j.id, j.state, j.priority) for n in relayed for j in relay_jobs[n]}
            checked += len(got)
    # Quiet nodes whose finished jobs' time is up: those leave without any other change.
    finished = [r.id for r in st.job_rows() if r.state == "succeeded"]
    assert finished
    clock.t = t + KEEP_FINISHED_S + 1
    assert st.job_rows() == _fresh_rows(st, False)
    assert not any(r.state == "succeeded" for r in st.job_rows())
    assert checked > 1000
    # The rows kept did follow the numbers (not a cache that never changed).
    tps = {r.throughput for r in st.job_rows() if r.throughput is not None}
    assert len(tps) > 1


def test_a_row_changes_only_when_its_numbers_did():
    """A node's new numbers replace the rows whose numbers moved; the others stay the very
    same objects (the table compares old and new rows: identity is its cheap case)."""
    from gui.state import ClusterState

    rng = random.Random(5)
    st = ClusterState(clock=lambda: T0 + 10)
    jobs = [JobSummary(id="r0.1", name="a", state="running", throughput={"tokens_per_s": 100.0}),
            JobSummary(id="r0.2", name="b", state="queued")]
    st.apply_summaries([_summary(rng, "r0", T0 + 1, jobs)])
    first = st.job_rows()
    st.apply_summaries([_summary(rng, "r0", T0 + 2, [msgspec.structs.replace(jobs[0], throughput={"tokens_per_s": 300.0}), jobs[1]])])
    second = st.job_rows()
    assert [r.id for r in second] == ["r0.1", "r0.2"]
    assert second[0] is not first[0] and second[0].throughput != first[0].throughput
    assert second[1] is first[1]
    assert first[0].throughput == 100.0  # the earlier list kept its row
    # A live node's rows carry no "last seen" (it moves every second; shown only when stale).
    assert all(r.last_seen_s is None for r in second)
    st.apply_summaries([_summary(rng, "r0", T0 + 3, jobs, link="stale")])
    assert all(r.last_seen_s is not None for r in st.job_rows() if r.stale)


def test_jobs_coming_and_going_do_not_move_the_nodes_revision():
    from gui.state import ClusterState

    rng = random.Random(7)
    st = ClusterState(clock=lambda: T0)
    st.apply_summaries([_summary(rng, "r0", T0 + 1, [])])
    nrev, srev = st.nodes_revision, st.structure_revision
    st.apply_summaries([_summary(rng, "r0", T0 + 2, _relay_jobs(random.Random(1), "r0", 3))])
    assert st.structure_revision > srev and st.nodes_revision == nrev
    st.apply_job("r0", job("r0.9"))
    assert st.nodes_revision == nrev
    st.apply_summaries([_summary(rng, "r1", T0 + 2, [])])  # a new node
    assert st.nodes_revision > nrev
    nrev = st.nodes_revision
    st.apply_summaries([msgspec.structs.replace(_summary(rng, "r1", T0 + 3, []), labels={"rack": "b"})])  # its inventory
    assert st.nodes_revision > nrev
    nrev = st.nodes_revision
    st.remove_node("r1")
    assert st.nodes_revision > nrev
