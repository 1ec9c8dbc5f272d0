"""The JSON line format of ``agentctl watch --json`` and ``agentctl replay --json``.

One JSON object per line, each with a ``type``:

- ``sample``: one node at one tick: ``node``, ``ts`` (wall clock, seconds) and every derived value;
- ``job``: a job changed (state, priority, migration...): ``node``, ``ts``, ``job`` (as ``agentctl show --json``);
- ``event``: something happened (a state change, a control action and its result): ``node``, ``ts``,
  ``kind``, ``message``, ``job_id``, ``actor``, ``ok``, ``data``;
- ``link``: the link to a node changed state (``live``, ``stale``, ``down``): ``node``, ``ts``, ``state``, ``detail``;
- ``gap`` (replay only): a span without data from a node: ``node``, ``ts`` (its start), ``end``, ``reason``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from agentd.metrics import DerivedNode
from agentd.protocol import JobInfo
from agentd.protocol.jobs import Event
from agentd.protocol.relay import NodeSummary


def derived_to_json(derived: DerivedNode) -> dict[str, Any]:
    """One node at one tick: ``type`` "sample", ``node``, ``ts`` and every derived value."""
    out = {"type": "sample", **msgspec.to_builtins(derived)}
    out["ts"] = derived.wall_s
    return out


def job_json(job: JobInfo) -> dict[str, Any]:
    """A job as ``agentctl show --json`` prints it: every field, optional ones present."""
    out: dict[str, Any] = msgspec.to_builtins(job)
    for key, default in (("pid", None), ("pids", []), ("gpus", []), ("cgroup", None), ("exit_code", None),
                         ("started", job.started_s), ("metrics", {}), ("priority", 0)):
        out.setdefault(key, default)
    return out


def job_to_json(job: JobInfo, ts: float) -> dict[str, Any]:
    """A job's new state, seen at ``ts`` (wall seconds)."""
    return {"type": "job", "node": job.node, "ts": ts, "job": job_json(job)}


def event_to_json(event: Event) -> dict[str, Any]:
    """An event, at its own wall time."""
    out = {"type": "event", "node": event.node, "ts": event.wall_s}
    out.update({k: v for k, v in msgspec.to_builtins(event).items() if k not in ("wall_s", "node")})
    for key, default in (("job_id", ""), ("actor", ""), ("ok", True), ("data", {})):
        out.setdefault(key, default)
    return out


def link_to_json(node: str, ts: float, state: str, detail: str = "") -> dict[str, Any]:
    """The link to ``node`` changed to ``state`` at ``ts``."""
    return {"type": "link", "node": node, "ts": ts, "state": state, "detail": detail}


def gap_to_json(node: str, start_s: float, end_s: float, reason: str) -> dict[str, Any]:
    """A span without data from ``node``."""
    return {"type": "gap", "node": node, "ts": start_s, "end": end_s, "reason": reason}


def summary_to_json(summary: NodeSummary, relay: str) -> dict[str, Any]:
    """One node behind a relay at one tick (``type`` "summary"): its relay's 1 Hz summary."""
    out: dict[str, Any] = {"type": "summary", "relay": relay, **msgspec.to_builtins(summary)}
    out["ts"] = summary.wall_s
    return out
