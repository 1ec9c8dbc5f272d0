"""Report intake: match a report datagram to the job that sent it, and apply it to that job's
metrics and tool calls. Functions of their arguments; the manager records the result.

Reports come from the report socket (:mod:`agentd.control.reports`), which adds the sender's
pid, session and cgroups as the kernel gave them. A report is believed only for the job its
sender belongs to: a job cannot forge another job's metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from agentd.control.job import Job
from agentd.kernel.procfs import parse_cgroup_membership
from agentd.protocol.jobs import Event, ToolCall
from agentd.protocol.limits import (
    MAX_METRIC_NAME_CHARS,
    MAX_METRICS_PER_JOB,
    MAX_NAME_CHARS,
)

MAX_TOOL_CALLS = 100
MAX_REPORT_CLOCK_SKEW_S = 7 * 86400.0  # a report's wall_s further than this from now is malformed


@dataclass
class ReportEffect:
    """What applying one report did: events to publish, whether the job's record changed (its
    JobInfo should be published), and how many metric names were refused."""

    events: list[Event] = field(default_factory=list)
    changed: bool = False
    refused: int = 0


def sent_by_job(job: Job, msg: dict[str, Any], members: dict[str, set[int]], node: str,
                pids_of: Callable[[Job], set[int]]) -> bool:
    """Did the sender of ``msg`` (the kernel says its pid) belong to ``job``? Judged by the
    sender's cgroups and session as the inbox read them when the datagram arrived; what cannot
    be verified is refused. ``members`` caches each job's pids for one drain."""
    pid = msg.get("sender_pid")
    if not pid:
        return False
    if pid == job.shim_pid:
        return True
    if job.id not in members:
        members[job.id] = pids_of(job)
    if pid in members[job.id]:
        return True
    text = msg.get("sender_cgroup")
    if job.cgroup is not None:
        if not isinstance(text, str):
            return False
        mine = f"/agentd-{node}/job-{job.n}/"
        # "/job-1/" must not match ".../job-12"
        return any(mine in path + "/" for path in parse_cgroup_membership(text).values())
    sid = msg.get("sender_sid")
    return sid is not None and sid == job.pid


def job_of_report(jobs: Mapping[str, Job], msg: dict[str, Any], members: dict[str, set[int]], node: str,
                  pids_of: Callable[[Job], set[int]]) -> Job | None:
    """The job a report is from: the one it names, if its sender belongs to it; else the live
    job the sender's process is in. A job restored from a CRIU image elsewhere keeps the
    environment it was started with, so it names its job id on that node."""
    pid = msg.get("sender_pid")
    named = jobs.get(msg.get("job", ""))
    if named is not None and sent_by_job(named, msg, members, node, pids_of):
        return named
    if not pid:
        return None
    for job in jobs.values():
        if job is not named and job.live:
            if job.id not in members:
                members[job.id] = pids_of(job)
            if pid in members[job.id]:
                return job
    return None


def apply_report(job: Job, msg: dict[str, Any], now: float, node: str) -> ReportEffect:
    """Apply one report to ``job``. Raises ValueError/TypeError for a malformed one."""
    out = ReportEffect()
    if not job.live:
        return out
    wall = msg.get("wall_s")
    if wall is None:
        wall = now
    elif not finite_number(wall) or abs(float(wall) - now) > MAX_REPORT_CLOCK_SKEW_S:
        raise ValueError(f"job {job.id}: report timestamp {str(wall)[:40]!r} is not a time near now")
    wall = float(wall)
    if msg.get("t") == "metric":
        values = msg.get("values") or {}
        if not isinstance(values, dict):
            raise TypeError(f"job {job.id}: metric values must be a name -> number table")
        for k, v in values.items():
            if not finite_number(v):
                continue
            name = str(k)
            if not name or len(name) > MAX_METRIC_NAME_CHARS:
                out.refused += 1
                continue
            if name not in job.metrics and len(job.metrics) >= MAX_METRICS_PER_JOB:
                out.refused += 1
                continue
            job.metrics[name] = float(v)
        counters = msg.get("counters") or []
        if not isinstance(counters, list):
            raise TypeError(f"job {job.id}: counters must be a list of metric names")
        job.counters.update(c for c in counters if isinstance(c, str) and c in job.metrics)
    elif msg.get("t") == "tool":
        name, call_id = str(msg.get("name", "?"))[:MAX_NAME_CHARS], str(msg.get("id", ""))[:MAX_NAME_CHARS]
        if msg.get("phase") == "start":
            if call_id not in job.open_tools and len(job.open_tools) >= MAX_TOOL_CALLS:
                raise ValueError(f"job {job.id}: more than {MAX_TOOL_CALLS} tool calls open at once")
            job.open_tools[call_id] = ToolCall(name=name, started_s=wall)
            out.events.append(Event(wall_s=wall, node=node, kind="tool_call", job_id=job.id,
                                    message=f"{job.id} tool call {name} started", data={"phase": "start", "name": name}))
        elif msg.get("phase") == "end":
            start = job.open_tools.pop(call_id, None)
            call = ToolCall(name=name, started_s=start.started_s if start else wall, ended_s=wall,
                            exit_code=_opt_int(msg.get("exit_code")), cpu_s=_opt_float(msg.get("cpu_s")),
                            mem_peak_bytes=_opt_int(msg.get("mem_peak_bytes")))
            job.tool_calls.append(call)
            del job.tool_calls[:-MAX_TOOL_CALLS]
            out.events.append(Event(wall_s=wall, node=node, kind="tool_call", job_id=job.id,
                                    message=f"{job.id} tool call {name} ended", ok=call.exit_code in (0, None),
                                    data={"phase": "end", **msgspec.structs.asdict(call)}))
            out.changed = True
    return out


def finite_number(v: Any) -> bool:
    """A real int or float that is finite and within float range (not bool, NaN or inf)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:  # a huge JSON integer
        return False


def _opt_int(v: Any) -> int | None:
    return int(v) if finite_number(v) and abs(v) < 1 << 63 else None


def _opt_float(v: Any) -> float | None:
    return float(v) if finite_number(v) else None
