"""A group as one thing, derived from its ranks' jobs (pure: the CLI, the leader and the app).

The group's state comes from its ranks' states:

- ``failed`` when any rank failed (the failure policy then cancels the rest);
- ``succeeded`` when every rank succeeded; ``cancelled`` when every rank ended and some were
  cancelled (none failed);
- otherwise, among the unfinished ranks: ``running`` if any runs, else ``paused`` if any is
  paused, else ``queued`` (held for the gang), else the state they share (checkpointing, migrating).

A group whose ranks are partly running and partly paused is ``running`` (``partial`` in
:class:`GroupRow` says so), so a half-applied pause never hides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from agentd.protocol.jobs import TERMINAL_STATES, JobInfo


class RankRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where one rank of a group is: what the radar needs to follow it."""

    rank: int
    endpoint: str  # the request endpoint of the rank's node daemon
    job_id: str
    node: str = ""
    role: str = ""
    state: str = ""


class GroupRow(msgspec.Struct, frozen=True, kw_only=True):
    """One line of ``agentctl jobs`` for a whole group."""

    id: str
    name: str
    state: str
    ranks: int
    world_size: int
    nodes: list[str]
    gpus: int
    reason: str = ""
    partial: bool = False  # unfinished ranks are not all in one state


def rank_of(job: JobInfo) -> int:
    return job.spec.group.rank if job.spec.group is not None else -1


def failed_rank(ranks: Iterable[JobInfo]) -> JobInfo | None:
    """The rank that failed first (then the lowest-numbered), or None. First: when one rank
    dies, the others often fail soon after on their own (a lost peer); the cause is the first."""
    failed = [j for j in ranks if j.state == "failed"]
    return min(failed, key=lambda j: (j.ended_s or 0.0, rank_of(j))) if failed else None


def group_state(ranks: Sequence[JobInfo]) -> str:
    """The group's state from its ranks' (see the module docstring); "" for no ranks."""
    states = [j.state for j in ranks]
    if not states:
        return ""
    if "failed" in states:
        return "failed"
    if all(s in TERMINAL_STATES for s in states):
        if all(s == "succeeded" for s in states):
            return "succeeded"
        return "cancelled" if "cancelled" in states else states[0]
    live = [s for s in states if s not in TERMINAL_STATES]
    for s in ("running", "paused", "queued"):
        if s in live:
            return s
    return live[0]


def group_reason(ranks: Sequence[JobInfo]) -> str:
    """Why the group is as it is: the failed rank's reason, else a held rank's reason."""
    culprit = failed_rank(ranks)
    if culprit is not None:
        return f"rank {rank_of(culprit)} ({culprit.id}) failed: {culprit.reason}"
    return next((j.reason for j in sorted(ranks, key=rank_of) if j.state == "queued" and j.reason), "")


def group_rows(jobs: Iterable[JobInfo]) -> tuple[list[GroupRow], list[JobInfo]]:
    """Jobs that are ranks, folded into one row per group (ordered by group id), and the other
    jobs unchanged (in the order given)."""
    groups: dict[str, list[JobInfo]] = {}
    single: list[JobInfo] = []
    for j in jobs:
        if j.spec.group is None:
            single.append(j)
        else:
            groups.setdefault(j.spec.group.id, []).append(j)
    rows = []
    for gid, ranks in sorted(groups.items()):
        ranks.sort(key=rank_of)
        first = ranks[0]
        unfinished = {j.state for j in ranks if j.state not in TERMINAL_STATES}
        name = first.name.rsplit("-r", 1)[0] if first.name else gid
        rows.append(GroupRow(id=gid, name=name, state=group_state(ranks), ranks=len(ranks),
                             world_size=first.spec.group.world_size if first.spec.group else len(ranks),
                             nodes=list(dict.fromkeys(j.node for j in ranks)), gpus=sum(len(j.gpus) for j in ranks),
                             reason=group_reason(ranks), partial=len(unfinished) > 1))
    return rows, single


def rank_refs(ranks: Iterable[tuple[str, JobInfo]]) -> list[RankRef]:
    """(node endpoint, rank job) pairs as RankRefs, by rank."""
    out = [RankRef(rank=rank_of(j), endpoint=ep, job_id=j.id, node=j.node,
                   role=j.spec.group.role if j.spec.group else "", state=j.state) for ep, j in ranks]
    return sorted(out, key=lambda r: r.rank)
