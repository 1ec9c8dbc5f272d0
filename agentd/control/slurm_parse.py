"""Parsing what Slurm prints (squeue --json, the squeue --format fallback, host lists,
listpids): pure functions from text to :class:`SlurmJob`, kept apart from the backend that runs
the commands (agentd/control/slurm.py) so every format quirk is a unit test.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agentd.protocol.jobs import TERMINAL_STATES

log = logging.getLogger("agentd.control.slurm")

STATE_MAP: dict[str, str] = {
    "RUNNING": "running", "COMPLETING": "running", "CONFIGURING": "running",
    "RESIZING": "running", "SIGNALING": "running", "STAGE_OUT": "running",
    "SUSPENDED": "paused",
    "PENDING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued", "REQUEUE_FED": "queued",
    "RESV_DEL_HOLD": "queued",
    "COMPLETED": "succeeded",
    "FAILED": "failed", "TIMEOUT": "failed", "NODE_FAIL": "failed", "OUT_OF_MEMORY": "failed",
    "BOOT_FAIL": "failed", "DEADLINE": "failed", "SPECIAL_EXIT": "failed",
    "CANCELLED": "cancelled", "PREEMPTED": "cancelled", "REVOKED": "cancelled",
}

# squeue --format fallback (Slurm without --json): fields split by the ASCII unit separator,
# which no job name or path contains in practice.
FIELD_SEP = "\x1f"
_FORMAT_FIELDS = [
    ("job_id", "%i"), ("job_state", "%T"), ("state_reason", "%r"), ("nodes", "%N"),
    ("batch_host", "%B"), ("partition", "%P"), ("user_name", "%u"), ("nice", "%y"),
    ("priority", "%Q"), ("submit_time", "%V"), ("start_time", "%S"), ("end_time", "%e"),
    ("current_working_directory", "%Z"), ("command", "%o"), ("name", "%j"),
]


# ---- parsing ---------------------------------------------------------------------------------

@dataclass
class SlurmJob:
    """One job as Slurm reports it, with times in seconds since the epoch."""

    job_id: int
    name: str = ""
    state: str = "PENDING"
    reason: str = ""
    nodes: list[str] = field(default_factory=list)
    batch_host: str = ""
    partition: str = ""
    user: str = ""
    nice: int = 0
    priority: int = 0
    submit_s: float = 0.0
    start_s: float | None = None
    end_s: float | None = None
    exit_code: int | None = None
    restarts: int = 0
    req_nodes: list[str] = field(default_factory=list)
    exc_nodes: list[str] = field(default_factory=list)
    workdir: str = ""
    command: str = ""


def expand_hostlist(text: str) -> list[str]:
    """Slurm's compressed host list (``gpu[01-03,07],cpu-a``) as a list of names."""
    text = (text or "").strip()
    if not text or text in ("(null)", "None", "N/A"):
        return []
    names: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)*", text):
        names.extend(_expand_one(part.strip()))
    return [n for n in names if n]


def _expand_one(item: str) -> list[str]:
    m = re.match(r"^([^\[]*)\[([^\]]*)\](.*)$", item)
    if not m:
        return [item]
    prefix, ranges, rest = m.groups()
    out = []
    for rng in ranges.split(","):
        lo, _, hi = rng.partition("-")
        if hi:
            width = len(lo)
            for i in range(int(lo), int(hi) + 1):
                out.append(f"{prefix}{i:0{width}d}")
        else:
            out.append(prefix + lo)
    return [a + b for a in out for b in _expand_one(rest)] if rest else out


def _num(value: Any) -> int | None:
    """A number from squeue --json, whichever shape the Slurm version uses."""
    if isinstance(value, dict):  # 23.02+: {"set": true, "infinite": false, "number": 5}
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value)
    try:
        return int(str(value))
    except ValueError:
        return None


def _signed32(value: int | None) -> int:
    """22.05's JSON prints a negative nice as an unsigned 32-bit number."""
    if value is None:
        return 0
    return value - (1 << 32) if value >= (1 << 31) else value


def _time_s(value: Any) -> float | None:
    n = _num(value)
    return float(n) if n else None


def _state(value: Any) -> str:
    if isinstance(value, list):  # 23.02+: ["RUNNING"] or ["PENDING", "REQUEUED"]
        value = value[0] if value else "PENDING"
    return str(value or "PENDING").split()[0].upper()


def parse_squeue_json(text: str) -> list[SlurmJob]:
    """Jobs from ``squeue --json`` (Slurm 21.08 and later)."""
    data = json.loads(text)
    out = []
    for j in data.get("jobs", []):
        exit_code = j.get("exit_code")
        if isinstance(exit_code, dict):  # 23.02+: {"status": [...], "return_code": {...}}
            exit_code = exit_code.get("return_code")
        out.append(SlurmJob(
            job_id=int(_num(j.get("job_id")) or 0),
            name=str(j.get("name", "")),
            state=_state(j.get("job_state")),
            reason=str(j.get("state_reason", "") or ""),
            nodes=expand_hostlist(str(j.get("nodes", "") or "")),
            batch_host=str(j.get("batch_host", "") or ""),
            partition=str(j.get("partition", "") or ""),
            user=str(j.get("user_name", "") or ""),
            nice=_signed32(_num(j.get("nice"))),
            priority=int(_num(j.get("priority")) or 0),
            submit_s=_time_s(j.get("submit_time")) or 0.0,
            start_s=_time_s(j.get("start_time")),
            end_s=_time_s(j.get("end_time")),
            exit_code=_num(exit_code),
            restarts=int(_num(j.get("restart_cnt")) or 0),
            req_nodes=expand_hostlist(str(j.get("required_nodes", "") or "")),
            exc_nodes=expand_hostlist(str(j.get("excluded_nodes", "") or "")),
            workdir=str(j.get("current_working_directory", "") or ""),
            command=str(j.get("command", "") or ""),
        ))
    return out


def _fmt_time(text: str) -> float | None:
    text = text.strip()
    if not text or text in ("N/A", "Unknown", "None", "(null)"):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()  # squeue prints local time
    except ValueError:
        return None


def squeue_format() -> str:
    return FIELD_SEP.join(code for _, code in _FORMAT_FIELDS)


def parse_squeue_format(text: str) -> list[SlurmJob]:
    """Jobs from ``squeue -h -o <squeue_format()>`` (Slurm without ``--json``)."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(FIELD_SEP)
        if len(parts) != len(_FORMAT_FIELDS):
            log.debug("squeue line with %d fields ignored: %r", len(parts), line)
            continue
        f = {name: value.strip() for (name, _), value in zip(_FORMAT_FIELDS, parts)}
        start = _fmt_time(f["start_time"])
        state = _state(f["job_state"])
        out.append(SlurmJob(
            job_id=int(f["job_id"].split("_")[0]),
            name=f["name"], state=state, reason=f["state_reason"],
            nodes=expand_hostlist(f["nodes"]) if state != "PENDING" else [],
            batch_host=f["batch_host"] if f["batch_host"] not in ("n/a", "(null)") else "",
            partition=f["partition"], user=f["user_name"],
            nice=_num(f["nice"]) or 0, priority=_num(f["priority"]) or 0,
            submit_s=_fmt_time(f["submit_time"]) or 0.0,
            start_s=start if state != "PENDING" else None,
            end_s=_fmt_time(f["end_time"]) if STATE_MAP.get(state) in TERMINAL_STATES else None,
            workdir=f["current_working_directory"], command=f["command"],
        ))
    return out


def parse_listpids(text: str) -> list[int]:
    """Pids from ``scontrol listpids JOBID`` (header line, then one pid per line)."""
    pids = []
    for line in text.splitlines():
        first = line.split(maxsplit=1)[0] if line.strip() else ""
        if first.isdigit():
            pids.append(int(first))
    return sorted(set(pids))


# ---- Slurm's cgroups -------------------------------------------------------------------------
