"""Groups on the cluster map: which tiles and nodes a group's ranks hold, which ranks the radar
flags, and painting both over the map's image (gui/views/mapcanvas.py calls these)."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRect, Qt
from PySide6.QtGui import QColor, QPainter, QPen, QPolygonF

from agentd.protocol.jobs import TERMINAL_STATES
from gui.groups import live_ranks
from gui.maplayout import MapLayout
from gui.state import ClusterState

GROUP_OUTLINE = "#00b8d4"  # a group's GPUs and nodes: cyan, apart from the load ramp and the job palette
RADAR_MARK_COLOURS = {"straggler": "#ff9800", "hung": "#e53935"}


def group_tiles(state: ClusterState, lay: MapLayout | None, group_id: str) -> tuple[set[tuple[str, int]], set[str]]:
    """The (node key, GPU index) tiles and the node keys of a group's ranks on the map."""
    tiles: set[tuple[str, int]] = set()
    keys: set[str] = set()
    if lay is None or not group_id:
        return tiles, keys
    for key, j, _m in live_ranks(state.nodes, group_id):
        if key not in lay._where:
            continue
        keys.add(key)
        tiles.update((key, g) for g in j.gpus if g < lay.gpus.get(key, 0))
    return tiles, keys


def radar_marks(state: ClusterState, lay: MapLayout | None) -> list[tuple[str, int, str]]:
    """(node key, GPU index, status) of every tile of a rank the radar calls straggler or hung."""
    out: list[tuple[str, int, str]] = []
    if lay is None:
        return out
    for v in state.radar.bad():
        key = state.node_of_job(v.job_id)
        if key is None or key not in lay._where:
            continue
        j = state.nodes[key].jobs[v.job_id]
        if j.state in TERMINAL_STATES or j.state == "migrated":
            continue
        out.extend((key, g, v.status) for g in j.gpus if g < lay.gpus.get(key, 0))
    return out


def paint_group(p: QPainter, lay: MapLayout, tiles: set[tuple[str, int]], keys: set[str]) -> None:
    """One outline around each node of the group and one around each of its GPUs."""
    if not keys:
        return
    colour = QColor(GROUP_OUTLINE)
    p.setBrush(Qt.BrushStyle.NoBrush)
    pen = QPen(colour, 2)
    pen.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
    p.setPen(pen)
    for key in keys:
        x, y, w, h = lay.node_rect(key)
        p.drawRect(QRect(x - 2, y - 2, w + 3, h + 3))
    p.setPen(QPen(colour, 1 if lay.geo.tile < 10 else 2))
    for key, g in tiles:
        x, y, w, h = lay.tile_rect(key, g)
        p.drawRect(QRect(x, y, w - 1, h - 1))


def paint_radar(p: QPainter, lay: MapLayout, marks: list[tuple[str, int, str]]) -> None:
    """A corner flag (a triangle in the tile's top right, outlined, visible at any tile size) on
    each GPU of a flagged rank: amber for a straggler, red for a hang."""
    if not marks:
        return
    p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    for key, g, status in marks:
        x, y, w, h = lay.tile_rect(key, g)
        s = max(5, min(w, h) // 2 + 1)
        p.setPen(QPen(QColor("#000000"), 1))
        p.setBrush(QColor(RADAR_MARK_COLOURS.get(status, "#e53935")))
        p.drawPolygon(QPolygonF([QPointF(x + w - s, y), QPointF(x + w, y), QPointF(x + w, y + s)]))
    p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
