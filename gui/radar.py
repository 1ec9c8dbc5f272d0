"""The straggler and hang radar as the app sees it: the latest verdict per rank. Pure, no Qt.

Verdicts arrive as events of kind ``"radar"`` with data {group, rank, node, job_id, status:
ok|straggler|hung|waiting, class, evidence} (agentd.groups' radar); :class:`RadarBoard` keeps the
newest per (group, rank), which the jobs table, the map and the group rows show.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentd.protocol.jobs import Event

RADAR_KIND = "radar"
# Worse is bigger: a group's worst rank is the one with the highest order (ties: the lowest rank).
RADAR_ORDER = {"": 0, "ok": 0, "waiting": 1, "straggler": 2, "hung": 3}
RADAR_BAD = frozenset({"straggler", "hung"})


@dataclass(frozen=True)
class RankVerdict:
    """The radar's latest word on one rank."""

    group: str
    rank: int
    node: str
    job_id: str
    status: str  # ok, straggler, hung, waiting
    cls: str = ""  # the likely class: slow GPU, slow host, extra work ...
    evidence: str = ""
    wall_s: float = 0.0


class RadarBoard:
    """Latest radar verdict per (group, rank). A verdict older than the one held is ignored."""

    def __init__(self) -> None:
        self._latest: dict[tuple[str, int], RankVerdict] = {}

    def apply(self, ev: Event) -> bool:
        """Take a radar event; False for any other event or one without a group and rank."""
        if ev.kind != RADAR_KIND:
            return False
        d = ev.data
        group, rank, status = d.get("group"), d.get("rank"), d.get("status")
        if not isinstance(group, str) or not isinstance(rank, int) or status not in RADAR_ORDER:
            return False
        key = (group, rank)
        held = self._latest.get(key)
        if held is not None and held.wall_s > ev.wall_s:
            return False
        evidence = d.get("evidence", "")
        if isinstance(evidence, dict):  # {"busy_vs_median": "+12%", ...}: one readable line
            evidence = ", ".join(f"{k} {v}" for k, v in evidence.items())
        self._latest[key] = RankVerdict(
            group=group, rank=rank, node=str(d.get("node", ev.node)), job_id=str(d.get("job_id", ev.job_id)),
            status=str(status), cls=str(d.get("class", "")), evidence=str(evidence),
            wall_s=ev.wall_s)
        return True

    def verdict(self, group: str, rank: int) -> RankVerdict | None:
        return self._latest.get((group, rank))

    def of_group(self, group: str) -> dict[int, RankVerdict]:
        return {r: v for (g, r), v in self._latest.items() if g == group}

    def bad(self) -> list[RankVerdict]:
        """Ranks the radar flags now (straggler or hung), for markers."""
        return [v for v in self._latest.values() if v.status in RADAR_BAD]

    def clear(self) -> None:
        self._latest.clear()
