"""A group's state and line from its ranks (pure)."""

from __future__ import annotations

from agentd.groups.gangview import failed_rank, group_rows, group_state
from agentd.protocol.jobs import GroupMember, JobInfo, JobSpec


def _job(rank: int, state: str, *, ended: float | None = None, reason: str = "", gid: str = "a.run-1") -> JobInfo:
    spec = JobSpec(argv=["x"], name=f"train-r{rank}", group=GroupMember(id=gid, rank=rank, world_size=3))
    return JobInfo(id=f"n{rank}.{rank + 1}", node=f"n{rank}", name=spec.name, state=state, spec=spec,  # type: ignore[arg-type]
                   ended_s=ended, reason=reason)


def test_state_from_ranks():
    assert group_state([_job(0, "queued"), _job(1, "queued")]) == "queued"
    assert group_state([_job(0, "running"), _job(1, "paused")]) == "running"
    assert group_state([_job(0, "paused"), _job(1, "paused")]) == "paused"
    assert group_state([_job(0, "succeeded"), _job(1, "succeeded")]) == "succeeded"
    assert group_state([_job(0, "cancelled"), _job(1, "succeeded")]) == "cancelled"
    assert group_state([_job(0, "running"), _job(1, "failed")]) == "failed"


def test_the_first_rank_to_fail_is_the_culprit():
    ranks = [_job(0, "failed", ended=12.0), _job(1, "failed", ended=10.0), _job(2, "cancelled", ended=13.0)]
    assert failed_rank(ranks) is ranks[1]


def test_rows_fold_ranks_and_keep_other_jobs():
    plain = JobInfo(id="n0.9", node="n0", name="solo", state="running", spec=JobSpec(argv=["y"]))  # type: ignore[arg-type]
    rows, single = group_rows([_job(0, "running"), plain, _job(1, "paused"), _job(2, "running")])
    assert single == [plain] and len(rows) == 1
    row = rows[0]
    assert (row.id, row.name, row.state, row.ranks, row.world_size, row.partial) == ("a.run-1", "train", "running", 3, 3, True)
    assert row.nodes == ["n0", "n1", "n2"]
