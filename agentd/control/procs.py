"""Small /proc helpers: is a pid still the process we started, who is in a session, CPU time,
what a process does with a signal."""

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


def parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` (None when it is gone)."""
    f = _stat_fields(pid)
    return int(f[1]) if f else None


def command_name(pid: int) -> str:
    """The kernel's short command name of ``pid`` (``comm``), "" when it is gone."""
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def outside_tree(root: int, pids: set[int]) -> set[int]:
    """The pids of ``pids`` that are not ``root`` nor descended from it (by parent links)."""
    parents = {p: parent_of(p) for p in pids}
    inside = {root}
    changed = True
    while changed:  # parents may themselves be in ``pids``: grow the tree to a fixed point
        changed = False
        for p, pp in parents.items():
            if p not in inside and pp in inside:
                inside.add(p)
                changed = True
    # A process whose parent chain leaves ``pids`` may still descend from root through
    # processes outside them (not the case for one cgroup, but be exact): walk up.
    out = set()
    for p in pids - inside:
        seen, cur = set(), parent_of(p)
        while cur and cur > 1 and cur not in seen and cur not in inside:
            seen.add(cur)
            cur = parent_of(cur)
        if cur not in inside:
            out.add(p)
    return out


def process_group(pid: int) -> int | None:
    f = _stat_fields(pid)
    return int(f[2]) if f else None


def signal_disposition(pid: int, signum: int) -> str | None:
    """``caught``, ``ignored`` or ``default``: what ``pid`` does on ``signum`` (None when gone)."""
    masks: dict[str, int] = {}
    try:
        with open(PROC / str(pid) / "status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("SigCgt", "SigIgn"):
                    masks[key] = int(value, 16)
    except (OSError, ValueError):
        return None
    bit = 1 << (signum - 1)
    if masks.get("SigCgt", 0) & bit:
        return "caught"
    return "ignored" if masks.get("SigIgn", 0) & bit else "default"


def why_signal_unhandled(pids: set[int], signum: int, name: str) -> str | None:
    """None when one of ``pids`` catches ``signum``; else what they do instead, in words
    (``ignores SIGUSR1`` / ``has not installed a handler for SIGUSR1``)."""
    seen = {signal_disposition(p, signum) for p in pids}
    if "caught" in seen:
        return None
    if seen == {"ignored"}:
        return f"ignores {name}, its checkpoint signal"
    return f"has not installed a handler for {name}, its checkpoint signal"
