"""Process questions the control layer asks: is a pid still the process we started, who is in
a session, CPU time, what a process does with a signal. The /proc files are read and parsed by
:mod:`agentd.kernel.procfs`; these helpers only decide."""

from __future__ import annotations

import os

from agentd.kernel.procfs import list_pids, read_comm, read_stat, read_status

CLK_TCK = os.sysconf("SC_CLK_TCK")
_DEAD_STATES = ("Z", "X")


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks after boot (None when it is gone)."""
    st = read_stat(pid)
    return st.start_ticks if st else None


def is_alive(pid: int | None, ticks: int | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when ``ticks`` is given, started at that time."""
    if not pid:
        return False
    st = read_stat(pid)
    if st is None or st.state in _DEAD_STATES:
        return False
    return not ticks or st.start_ticks == ticks


def state_of(pid: int) -> str | None:
    """The one-letter state of ``pid`` (R, S, T, Z...), None when it is gone."""
    st = read_stat(pid)
    return st.state if st else None


def cpu_time_s(pid: int) -> float | None:
    """utime + stime of one process, in seconds."""
    st = read_stat(pid)
    return (st.utime_ticks + st.stime_ticks) / CLK_TCK if st else None


def session_pids(sid: int) -> set[int]:
    """Live processes whose process group or session is ``sid`` (pgroup control, no cgroup)."""
    out: set[int] = set()
    for pid in list_pids() or ():
        st = read_stat(pid)
        if st and st.state not in _DEAD_STATES and sid in (st.pgrp, st.session):
            out.add(pid)
    return out


def live(pids: set[int]) -> set[int]:
    """The pids of ``pids`` that are not zombies."""
    return {p for p in pids if is_alive(p)}


def parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` (None when it is gone)."""
    st = read_stat(pid)
    return st.ppid if st else None


def command_name(pid: int) -> str:
    """The kernel's short command name of ``pid`` (``comm``), "" when it is gone."""
    return read_comm(pid) or ""


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
    """The process group of ``pid`` (None when it is gone)."""
    st = read_stat(pid)
    return st.pgrp if st else None


def signal_disposition(pid: int, signum: int) -> str | None:
    """``caught``, ``ignored`` or ``default``: what ``pid`` does on ``signum`` (None when gone)."""
    status = read_status(pid)
    if status is None:
        return None
    try:
        masks = {key: int(status[key], 16) for key in ("SigCgt", "SigIgn") if key in status}
    except ValueError:
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
