"""Groups in the app: the ranks of one gang job (``JobSpec.group``) seen as one thing. Pure, no Qt.

- The radar's latest verdict per rank is :class:`gui.radar.RadarBoard` (``ClusterState.radar``).
- :func:`group_rows` folds the job table's rows of each group's ranks into one :class:`GroupRow`
  (ranks beneath it): "16/16 running", the nodes, summed CPU/memory/throughput, the worst rank.
- :func:`group_curves` is what a chart of scope ``ChartScope("group", ROLE, GROUP_ID)`` draws:
  a metric summed over the ranks (per role when the group has several, so rollout tokens/s and
  trainer samples/s are never added up), and for ``policy_version`` the policy lag (the group's
  newest version minus the oldest one a role still uses), on one time grid for ranks whose
  samples come from different nodes at different instants.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from agentd.groups.gangview import group_reason, group_state
from agentd.protocol.jobs import ACTIVE_STATES, TERMINAL_STATES, GroupMember, JobInfo
from gui.radar import RADAR_BAD, RADAR_ORDER, RadarBoard
from gui.series import RATE_WINDOW_S, smooth_rate_rows
from gui.state import JobRow

POLICY_METRIC = "app:policy_version"
_RANK_SUFFIX = re.compile(r"-r\d+$")  # agentctl submit --nodes names rank K of NAME "NAME-rK"


@dataclass(frozen=True)
class GroupRow(JobRow):
    """One line of the job table for a whole group; ``ranks`` are its ranks' rows, beneath it."""

    ranks: tuple[JobRow, ...] = ()  # in rank order
    rank_numbers: tuple[int, ...] = ()
    roles: tuple[str, ...] = ()  # the role of each rank ("" without roles)
    rank_status: tuple[str, ...] = ()  # the radar status of each rank ("" none yet)
    world_size: int = 0
    node_count: int = 0
    worst: str = ""  # the worst radar status of any rank
    worst_rank: int | None = None  # that rank, when it is a straggler or hung
    role_throughput: tuple[tuple[str, float, str], ...] = ()  # (role, summed rate, unit)

    @property
    def running(self) -> int:
        return sum(1 for r in self.ranks if r.state == "running")


def members(nodes: dict) -> Iterator[tuple[str, JobInfo, GroupMember]]:
    """(node key, job, its group membership) of every rank job the state knows."""
    for key, node in nodes.items():
        for j in node.jobs.values():
            if j.spec.group is not None:
                yield key, j, j.spec.group


def live_ranks(nodes: dict, group_id: str) -> list[tuple[str, JobInfo, GroupMember]]:
    """The group's ranks that hold GPUs now (not ended, not a superseded hop), in rank order."""
    out = [(k, j, m) for k, j, m in members(nodes)
           if m.id == group_id and j.state not in TERMINAL_STATES and j.state != "migrated"]
    return sorted(out, key=lambda x: x[2].rank)


def group_ids(nodes: dict) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Group id -> (its display name, its roles in order of first rank)."""
    seen: dict[str, list[tuple[int, str, str]]] = {}
    for _k, j, m in members(nodes):
        seen.setdefault(m.id, []).append((m.rank, m.role, j.name or j.spec.name))
    out = {}
    for gid, ranks in seen.items():
        ranks.sort()
        roles = tuple(dict.fromkeys(r for _, r, _ in ranks if r))
        names = {n for _, _, n in ranks if n}
        out[gid] = (group_name(gid, list(names)), roles)
    return out


def short_group_id(gid: str) -> str:
    """``gpu-a.run-7`` -> ``run-7`` (the node prefix only says where it was submitted)."""
    return gid.split(".", 1)[-1] if "." in gid else gid


# ---- the job table ------------------------------------------------------------------


def group_name(gid: str, names: list[str]) -> str:
    """The run's name: its ranks' name without the ``-rK`` the gang submit adds (``ring-r3``),
    the short group id when they disagree or have none."""
    bare = {_RANK_SUFFIX.sub("", n) for n in names if n}
    return bare.pop() if len(bare) == 1 else short_group_id(gid)


def group_rows(rows: list, nodes: dict, radar: RadarBoard) -> list:
    """``rows`` (JobRow, as ClusterState.job_rows gives them) with each group's ranks folded
    into one GroupRow where its first rank was; rows of other jobs are returned as they are."""
    member = {j.id: m for _k, j, m in members(nodes)}
    if not member:
        return rows
    info = {j.id: j for _k, j, _m in members(nodes)}
    out: list = []
    ranks: dict[str, list] = {}
    for r in rows:
        m = member.get(r.id)
        if m is None:
            out.append(r)
            continue
        if m.id not in ranks:
            ranks[m.id] = []
            out.append(m.id)  # placeholder: the group's row goes where its first rank was
        ranks[m.id].append((m, r))
    return [make_group_row(x, ranks[x], radar, [info[r.id] for _m, r in ranks[x]]) if isinstance(x, str) else x for x in out]


def make_group_row(gid: str, ranks: list, radar: RadarBoard, jobs: list[JobInfo]) -> GroupRow:
    """One GroupRow from (GroupMember, JobRow) pairs of the ranks of ``gid`` and their jobs;
    its state and reason as agentctl says them (agentd.groups.gangview)."""
    ranks = sorted(ranks, key=lambda mr: (mr[0].rank, mr[1].id))
    rows = tuple(r for _, r in ranks)
    verdicts = radar.of_group(gid)
    status = tuple(verdicts[m.rank].status if m.rank in verdicts else "" for m, _ in ranks)
    worst_i = max(range(len(ranks)), key=lambda i: (RADAR_ORDER.get(status[i], 0), -ranks[i][0].rank), default=None)
    worst = status[worst_i] if worst_i is not None else ""
    live = [r for r in rows if r.state in ACTIVE_STATES and not r.stale]
    by_unit: dict[tuple[str, str], float] = {}
    for (m, r) in ranks:
        if r.throughput is not None:
            k = (m.role, r.throughput_unit)
            by_unit[k] = by_unit.get(k, 0.0) + r.throughput
    units = {u for _, u in by_unit}
    starts = [r.started_s for r in rows if r.started_s is not None]
    return GroupRow(
        id=gid, name=group_name(gid, [r.name for r in rows]),
        node=f"{len({r.node for r in rows})} nodes", state=group_state(jobs) or rows[0].state, reason=group_reason(jobs),
        priority=max(r.priority for r in rows), gpus=tuple(g for r in rows for g in r.gpus),
        cpu_pct=sum(r.cpu_pct for r in live if r.cpu_pct is not None) if any(r.cpu_pct is not None for r in live) else None,
        mem_bytes=sum(r.mem_bytes for r in live if r.mem_bytes is not None) if any(r.mem_bytes is not None for r in live) else None,
        throughput=sum(by_unit.values()) if len(units) == 1 else None,
        throughput_unit=units.pop() if len(units) == 1 else "",
        started_s=min(starts) if starts else None, kind=rows[0].kind, migration={}, backend=rows[0].backend,
        stale=any(r.stale for r in rows), last_seen_s=min((r.last_seen_s for r in rows if r.last_seen_s), default=None),
        ranks=rows, rank_numbers=tuple(m.rank for m, _ in ranks), roles=tuple(m.role for m, _ in ranks),
        world_size=max(m.world_size for m, _ in ranks), rank_status=status, worst=worst,
        worst_rank=ranks[worst_i][0].rank if worst_i is not None and worst in RADAR_BAD else None,
        role_throughput=tuple((role, v, u) for (role, u), v in by_unit.items()),
        node_count=len({r.node for r in rows}),
    )


# ---- charts -------------------------------------------------------------------------


def group_curves(nodes: dict, series, group_id: str, metric: str, role: str, t0: float, t1: float,
                 bins: int, smoothed: bool) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(suffix, label, times, values) of each curve of a group chart over [t0, t1]: ``metric``
    summed over the ranks of each role (one curve per role; plus the total over all ranks when
    the roles' numbers share a unit), or the policy lag for ``app:policy_version``. Each rank's
    series is averaged per time bin first (the ranks' samples are taken at different instants).
    Curves with no value are left out."""
    ranks = [x for x in live_ranks(nodes, group_id) if not role or x[2].role == role]
    if not ranks:
        return []
    edges = np.linspace(t0, t1, bins + 1)
    binned = np.full((len(ranks), bins), np.nan)
    for i, (key, j, _m) in enumerate(ranks):
        ns = series.nodes.get(key)
        if ns is None:
            continue
        lead = RATE_WINDOW_S if smoothed else 0.0
        t, rows = ns.get_rows([(j.id, metric)], t0 - lead, t1)
        if smoothed and t.size:
            rows = smooth_rate_rows(t, rows)
        keep = (t >= t0) & (t <= t1)
        t, v = t[keep], np.asarray(rows[0], dtype=np.float64)[keep]
        fin = np.isfinite(v)
        if not fin.any():
            continue
        b = np.clip(np.searchsorted(edges, t[fin], side="right") - 1, 0, bins - 1)
        sums = np.bincount(b, weights=v[fin], minlength=bins)
        counts = np.bincount(b, minlength=bins)
        binned[i] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    mid = (edges[:-1] + edges[1:]) / 2
    roles = list(dict.fromkeys(m.role for _k, _j, m in ranks))
    out: list[tuple[str, str, np.ndarray, np.ndarray]] = []

    def add(suffix: str, label: str, v: np.ndarray) -> None:
        has = np.isfinite(v)
        if has.any():
            out.append((suffix, label, mid[has], v[has]))

    def nansum(rows: np.ndarray) -> np.ndarray:
        any_ = np.isfinite(rows).any(axis=0)
        return np.where(any_, np.nansum(np.where(np.isfinite(rows), rows, 0.0), axis=0), np.nan)

    if metric == POLICY_METRIC:
        newest = np.fmax.reduce(binned, axis=0)
        for r in roles:
            sel = np.array([m.role == r for _k, _j, m in ranks])
            oldest = np.fmin.reduce(binned[sel], axis=0)
            add(f"lag:{r}", f"{r or 'ranks'}: versions behind", newest - oldest)
        return out
    for r in roles:
        sel = np.array([m.role == r for _k, _j, m in ranks])
        n = int(sel.sum())
        who = f"{r}: " if r else ""
        add(f"role:{r}", f"{who}{n} rank{'s' if n != 1 else ''}", nansum(binned[sel]))
    if len(out) > 1 and metric != "throughput":  # one unit across roles: the total means something
        add("all", f"all {len(ranks)} ranks", nansum(binned))
    return out


def role_unit(nodes: dict, group_id: str, role: str) -> str:
    """The unit of the headline throughput of a role's ranks ("tok/s"), "" when none reports."""
    from gui.state import throughput_of

    for _key, j, m in live_ranks(nodes, group_id):
        if role and m.role != role:
            continue
        node = nodes[_key]
        d = node.job_metrics(j.id)
        tp = throughput_of(d.app) if d is not None else None
        if tp is not None:
            return tp[1]
    return ""


def group_first_time(nodes: dict, series, group_id: str) -> float:
    """The first sample time of any node a rank of the group runs on (inf: none yet)."""
    times = [series.nodes[k].first_time() for k, _j, _m in live_ranks(nodes, group_id) if k in series.nodes]
    times = [t for t in times if t is not None]
    return min(times) if times else math.inf
