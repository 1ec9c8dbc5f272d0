"""plan_admission: a pure function of the queue and the node's resources (no processes)."""

from __future__ import annotations

from agentd.control.admission import NodeResources, QueuedJob, plan_admission


def _res(gpus: int = 2, free: tuple[int, ...] | None = None, **kw: object) -> NodeResources:
    return NodeResources(node="n1", gpu_count=gpus, free_gpus=tuple(range(gpus)) if free is None else free, **kw)  # type: ignore[arg-type]


def test_strict_order_by_priority_then_submission() -> None:
    queue = [QueuedJob("a", 1, gpus=1), QueuedJob("b", 2, priority=5, gpus=1), QueuedJob("c", 3, gpus=1)]
    plan = plan_admission(queue, _res(2))
    assert [(s.job_id, s.gpus) for s in plan.start] == [("b", (0,)), ("a", (1,))]
    assert [(w.job_id, w.reason) for w in plan.wait] == [("c", "needs 1 GPUs, 0 free")]


def test_a_head_that_does_not_fit_blocks_the_jobs_behind_it() -> None:
    queue = [QueuedJob("big", 1, gpus=2), QueuedJob("small", 2, gpus=0)]
    plan = plan_admission(queue, _res(2, free=(1,)))
    assert plan.start == ()
    assert {w.job_id: w.reason for w in plan.wait} == {"big": "needs 2 GPUs, 1 free", "small": "behind big in the queue"}


def test_declared_cpus_and_memory_gate_starts() -> None:
    queue = [QueuedJob("a", 1, cpus=3), QueuedJob("b", 2, cpus=2), QueuedJob("m", 3, memory_bytes=10)]
    plan = plan_admission(queue, _res(0, cpu_count=4, cpus_used=0.5, mem_total_bytes=100, mem_used_bytes=95))
    assert [s.job_id for s in plan.start] == ["a"]
    assert plan.wait[0].job_id == "b" and "CPUs" in plan.wait[0].reason


def test_a_job_that_never_fits_is_reported_and_does_not_block() -> None:
    queue = [QueuedJob("huge", 1, priority=9, gpus=8), QueuedJob("ok", 2, gpus=1)]
    plan = plan_admission(queue, _res(2))
    assert [n.job_id for n in plan.never] == ["huge"] and "asks for 8 GPUs but node n1 now has 2" in plan.never[0].reason
    assert [s.job_id for s in plan.start] == ["ok"]


def test_a_group_starts_all_together_or_not_at_all() -> None:
    group = [QueuedJob(f"r{i}", 1 + i, gpus=1, group="ring") for i in range(3)]
    plan = plan_admission([*group, QueuedJob("solo", 9, gpus=1)], _res(2))
    assert plan.start == (), "two free GPUs must not start two of three ranks (nor the job behind them)"
    assert {w.job_id for w in plan.wait} == {"r0", "r1", "r2", "solo"}
    plan = plan_admission(group, _res(3))
    assert [(s.job_id, s.gpus) for s in plan.start] == [("r0", (0,)), ("r1", (1,)), ("r2", (2,))]


def test_a_group_waits_for_all_its_members_and_fails_as_one() -> None:
    partial = [QueuedJob("r0", 1, group="g", group_size=2)]
    plan = plan_admission(partial, _res(2))
    assert plan.start == () and "1 of its 2 members" in plan.wait[0].reason
    bad = [QueuedJob("r0", 1, gpus=1, group="g"), QueuedJob("r1", 2, gpus=9, group="g")]
    plan = plan_admission(bad, _res(2))
    assert plan.start == () and {n.job_id for n in plan.never} == {"r0", "r1"}
    assert "member r1 of group g" in next(n.reason for n in plan.never if n.job_id == "r0")
