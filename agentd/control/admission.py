"""Admission: which queued jobs start now, which wait and why. A pure function of the queue and
the node's resources (no processes, no clock, no locks), so every policy is a unit test.

Policy (as the local manager has always scheduled):

- Strict order: priority (higher first), then submission (job number). The head of the queue
  that does not fit blocks everything behind it, so a big job is never starved by a stream of
  small ones.
- GPUs, and the CPUs and memory jobs declare, gate a start. Undeclared amounts are not counted.
- A job that can never start on this node as it is now (asks for more than the node has) is
  reported in ``never`` and does not block the queue.
- Groups (gang admission): jobs that share a ``group`` are admitted all together or not at
  all, at the queue position of their first member. ``group_size`` says how many members the
  group has; until that many are queued, the group waits (and blocks the queue behind it, as
  any head that cannot start). If one member can never start, none of them can.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class QueuedJob:
    """What admission needs to know of one queued job."""

    id: str
    n: int  # submission order
    priority: int = 0
    gpus: int = 0
    cpus: float | None = None
    memory_bytes: int | None = None
    group: str | None = None  # gang: members start all together or not at all
    group_size: int | None = None  # members the group has in all (None: those queued)


@dataclass(frozen=True)
class NodeResources:
    """The node's capacity and what running (and parked) jobs hold of it now."""

    node: str
    gpu_count: int
    free_gpus: tuple[int, ...]
    cpu_count: int | None = None  # None: CPUs are not tracked
    cpus_used: float = 0.0
    mem_total_bytes: int | None = None  # None: memory is not tracked
    mem_used_bytes: int = 0


@dataclass(frozen=True)
class Start:
    job_id: str
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class Wait:
    job_id: str
    reason: str


@dataclass(frozen=True)
class Never:
    job_id: str
    reason: str


@dataclass(frozen=True)
class AdmissionPlan:
    """``start`` in the order to launch them; every other queued job is in ``wait`` or ``never``."""

    start: tuple[Start, ...] = ()
    wait: tuple[Wait, ...] = ()
    never: tuple[Never, ...] = ()


def queue_order(queue: Sequence[QueuedJob]) -> list[QueuedJob]:
    """The order jobs are admitted in: priority (higher first), then submission."""
    return sorted(queue, key=lambda j: (-j.priority, j.n))


def never_fits(job: QueuedJob, res: NodeResources) -> str:
    """Why ``job`` can never start on this node as it is now; "" when it can."""
    if job.gpus > res.gpu_count:
        return (f"asks for {job.gpus} GPUs but node {res.node} now has {res.gpu_count}; "
                f"resubmit it with at most {res.gpu_count} GPUs or on another node")
    if job.cpus and res.cpu_count and job.cpus > res.cpu_count:
        return (f"asks for {job.cpus:g} CPUs but node {res.node} now has {res.cpu_count}; "
                "resubmit it with fewer CPUs or on another node")
    if job.memory_bytes and res.mem_total_bytes and job.memory_bytes > res.mem_total_bytes:
        return (f"asks for {job.memory_bytes} bytes of memory but node {res.node} now has "
                f"{res.mem_total_bytes}; resubmit it with less memory or on another node")
    return ""


def shortfall(jobs: Sequence[QueuedJob], free_gpus: int, cpus_used: float, mem_used: int, res: NodeResources) -> str:
    """What ``jobs`` together lack to start now ("" when they fit)."""
    gpus = sum(j.gpus for j in jobs)
    if gpus > free_gpus:
        return f"needs {gpus} GPUs, {free_gpus} free"
    cpus = [j.cpus for j in jobs if j.cpus]
    if cpus and res.cpu_count and cpus_used + sum(cpus) > res.cpu_count:
        return f"needs {sum(cpus):g} CPUs, {max(0.0, res.cpu_count - cpus_used):g} free"
    mem = [j.memory_bytes for j in jobs if j.memory_bytes]
    if mem and res.mem_total_bytes and mem_used + sum(mem) > res.mem_total_bytes:
        return f"needs {sum(mem)} bytes of memory, {max(0, res.mem_total_bytes - mem_used)} free"
    return ""


def plan_admission(queue: Sequence[QueuedJob], res: NodeResources) -> AdmissionPlan:
    """Decide which of ``queue`` start now (with which GPUs), which wait and which never can."""
    ordered = queue_order(queue)
    groups: dict[str, list[QueuedJob]] = {}
    for job in ordered:
        if job.group is not None:
            groups.setdefault(job.group, []).append(job)
    free = list(res.free_gpus)
    cpus_used, mem_used = res.cpus_used, res.mem_used_bytes
    start: list[Start] = []
    wait: list[Wait] = []
    never: list[Never] = []
    done: set[str] = set()
    blocked_by = ""
    for job in ordered:
        if job.id in done:
            continue
        unit = groups[job.group] if job.group is not None else [job]
        done.update(j.id for j in unit)
        bad = [(j, why) for j in unit if (why := never_fits(j, res))]
        if bad:
            member, why = bad[0]
            for j in unit:
                reason = why if j is member or job.group is None else f"member {member.id} of group {job.group} {why}"
                never.append(Never(j.id, reason))
            continue
        if blocked_by:
            wait.extend(Wait(j.id, f"behind {blocked_by} in the queue") for j in unit)
            continue
        lacking = ""
        if job.group is not None and job.group_size is not None and len(unit) < job.group_size:
            lacking = f"group {job.group} has {len(unit)} of its {job.group_size} members queued"
        lacking = lacking or shortfall(unit, len(free), cpus_used, mem_used, res)
        if lacking:
            wait.extend(Wait(j.id, lacking) for j in unit)
            blocked_by = job.id if job.group is None else f"group {job.group}"
            continue
        for j in unit:
            mine, free = free[: j.gpus], free[j.gpus:]
            start.append(Start(j.id, tuple(mine)))
            cpus_used += j.cpus or 0
            mem_used += j.memory_bytes or 0
    return AdmissionPlan(start=tuple(start), wait=tuple(wait), never=tuple(never))
