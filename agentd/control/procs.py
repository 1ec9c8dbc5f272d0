"""Small /proc helpers: is a pid still the process we started, who is in a session, CPU time."""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3, the state, is index 0)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> int | None:
    f = _stat_fields(pid)
    return int(f[19]) if f else None


def is_alive(pid: int | None, ticks: int | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when ``ticks`` is given, started at that time."""
    if not pid:
        return False
    f = _stat_fields(pid)
    if f is None or f[0] in ("Z", "X"):
        return False
    return not ticks or int(f[19]) == ticks


def state_of(pid: int) -> str | None:
    f = _stat_fields(pid)
    return f[0] if f else None


def cpu_time_s(pid: int) -> float | None:
    """utime + stime of one process, in seconds."""
    f = _stat_fields(pid)
    return (int(f[11]) + int(f[12])) / CLK_TCK if f else None


def session_pids(sid: int) -> set[int]:
    """Live processes whose process group or session is ``sid`` (pgroup control, no cgroup)."""
    out: set[int] = set()
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        f = _stat_fields(int(entry.name))
        if f and f[0] not in ("Z", "X") and (int(f[2]) == sid or int(f[3]) == sid):
            out.add(int(entry.name))
    return out


def live(pids: set[int]) -> set[int]:
    """The pids of ``pids`` that are not zombies."""
    return {p for p in pids if is_alive(p)}
