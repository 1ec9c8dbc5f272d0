"""The cluster map's canvas: every GPU of the cluster as one small tile, nodes grouped by rack, on one screen.

One custom-painted widget, no widget or scene item per tile: the geometry comes from
:mod:`gui.maplayout` (recomputed on resize or when nodes come and go), and the pixels of all
tiles are one image made with numpy: an index image (which tile, node frame or background each
pixel shows) is built once per layout, and each frame looks up a colour table of a few thousand
entries through it. A frame at 1,000 nodes x 8 GPUs is a few milliseconds of numpy, not 8,000
painter calls (``bench/map_frame.py``). Text (rack headers, node names, values on big tiles)
is painted on top.

Tiles are coloured by a chosen metric; job and owner colours come from
:func:`gui.theme.job_colour`, the colour the jobs table and the charts give the same job. A node
whose link is not live keeps its last colours washed out, with a hatched amber (stale) or red
(down) frame. Hover says node/GPU/job; a search dims everything that does not match; a click on
a node asks the window for its card (``node_activated``) and selects its job (``job_clicked``).

Groups (gui/groups.py): hovering a rank's GPU, or selecting a group in the jobs table
(``set_outline_group``), outlines every GPU and node of the group's ranks together; a rank the
radar calls a straggler or hung carries a corner marker (amber, red) wherever it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QImage,
    QPainter,
    QPalette,
    QPen,
    QPolygon,
)
from PySide6.QtWidgets import (
    QSizePolicy,
    QToolTip,
    QWidget,
)

from agentd.protocol.jobs import TERMINAL_STATES, JobInfo
from gui import fmt
from gui.maplayout import VALUE_TEXT_MIN_TILE, Hit, MapLayout, group_of, layout
from gui.radar import RADAR_BAD
from gui.state import ClusterState, NodeState, job_identity, natural_key
from gui.theme import (
    JOB_PALETTE,
    LINK_COLOURS,
    SEVERITY_COLOURS,
    SEVERITY_SYMBOLS,
    is_dark,
    job_palette_index,
    load_colour,
    text_on,
)
from gui.views import mapgroups


@dataclass(frozen=True)
class MapMetric:
    """What a tile's colour says. Numeric metrics map [lo, hi] onto the load ramp."""

    name: str
    label: str
    lo: float = 0.0
    hi: float = 100.0
    unit: str = "%"
    categorical: bool = False


MAP_METRICS = (
    MapMetric("util", "Utilisation"),
    MapMetric("memory", "Memory used"),
    MapMetric("temperature", "Temperature", 30.0, 90.0, "°C"),
    MapMetric("power", "Power (of limit)"),
    MapMetric("job", "Job", categorical=True),
    MapMetric("owner", "Owner", categorical=True),
)
DEFAULT_POWER_LIMIT_W = 700.0  # scale of a GPU that reports no power limit
NO_VALUE = 101  # ramp slot of "no data"
DIM_KEEP = 0.22  # what a dimmed (non-matching) tile keeps of its colour
STALE_KEEP = 0.45  # what a stale node's tiles keep of their colour


def _bgra(c: QColor) -> tuple[int, int, int, int]:
    return (c.blue(), c.green(), c.red(), 255)


def active_jobs_by_gpu(node: NodeState) -> dict[int, JobInfo]:
    """The job on each GPU of a node (the first active one when several share it)."""
    out: dict[int, JobInfo] = {}
    for j in sorted(node.jobs.values(), key=lambda j: natural_key(j.id)):
        if j.state in TERMINAL_STATES or j.state == "migrated":
            continue
        for g in j.gpus:
            out.setdefault(g, j)
    return out


class MapCanvas(QWidget):
    """The painted map. ``refresh()`` after the state changed; the widget does the rest."""

    node_activated = Signal(str)  # node key: show its card
    job_clicked = Signal(str)  # job id under the click
    hit_changed = Signal(object)  # Hit under the mouse, or None
    search_requested = Signal(str)  # a rack header was clicked: search for the rack

    def __init__(self, state: ClusterState, labels_of: Callable[[str], dict[str, str]] | None = None, parent=None) -> None:
        super().__init__(parent)
        self.state = state
        self.labels_of = labels_of or (lambda key: dict(state.nodes[key].inventory.labels)
                                       if key in state.nodes and state.nodes[key].inventory else {})
        self.map_metric = MAP_METRICS[0]
        self.search = ""
        self.layout_: MapLayout | None = None
        self.order: list[str] = []  # node keys in layout order
        self.group: dict[str, str] = {}
        self._grouping: tuple = ()
        self._index: np.ndarray | None = None
        self._image: QImage | None = None
        self._pixels: np.ndarray | None = None
        self._hover: Hit | None = None
        self._max_gpus = 0
        self.matches = 0  # nodes that match the search (all nodes without one)
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._bold = QFont(self.font())
        self._bold.setBold(True)
        self._small = QFont(self.font())
        self._small.setPointSizeF(max(6.5, self.font().pointSizeF() * 0.85))
        self._fit_height: int | None = None
        self._seen_structure = -1
        self.outline_group = ""  # the group selected in the jobs table ("" none)

    # ---- state -> geometry -> pixels ----
    def set_fit_height(self, height: int | None) -> None:
        """The height the layout should fit in (the scroll area's viewport), None: no limit."""
        if height != self._fit_height:
            self._fit_height = height
            self._relayout()

    def refresh(self) -> None:
        # The layout follows nodes and inventories, not jobs (some job starts or ends every
        # second at 1,000 nodes: listing the grouping each time cost ~4 ms a refresh).
        if self._seen_structure == self.state.nodes_revision and self.layout_ is not None:
            self.render()
            return
        self._seen_structure = self.state.nodes_revision
        grouping = tuple((k, n.inventory is not None and len(n.inventory.gpus), tuple(sorted(self.labels_of(k).items())), n.name)
                         for k, n in self.state.nodes.items())
        if grouping != self._grouping:
            self._grouping = grouping
            self.group = {k: group_of(self.state.nodes[k].name, self.labels_of(k)) for k in self.state.nodes}
            self._relayout()
        else:
            self.render()

    def _relayout(self) -> None:
        groups: dict[str, list[str]] = {}
        for k in sorted(self.state.nodes, key=lambda k: natural_key(self.state.node_display_name(k))):
            groups.setdefault(self.group.get(k, "nodes"), []).append(k)
        ordered = sorted(groups.items(), key=lambda kv: natural_key(kv[0]))
        gpus = {k: len(n.inventory.gpus) if n.inventory else 0 for k, n in self.state.nodes.items()}
        self.layout_ = lay = layout(ordered, gpus, max(self.width(), 200), self._fit_height)
        self.order = [k for _, keys in ordered for k in keys]
        self._max_gpus = lay.geo.node_cols * lay.geo.node_rows
        self.setMinimumHeight(lay.height)
        self._build_index()
        self.render()
        self.updateGeometry()

    def _build_index(self) -> None:
        """Which colour-table entry each pixel shows: tile i*G+g, then node frames, box, background."""
        lay = self.layout_
        assert lay is not None
        w, h = max(1, self.width(), lay.width), max(1, lay.height)
        n, G = len(self.order), self._max_gpus
        frame0, box_id, bg_id = n * G, n * G + n, n * G + n + 1
        idx = np.full((h, w), bg_id, dtype=np.int32)
        for box in lay.boxes:
            bw, bh = lay.box_size(box)
            idx[box.y:box.y + bh, box.x:box.x + bw] = box_id
        g = lay.geo
        for i, k in enumerate(self.order):
            x, y, nw, nh = lay.node_rect(k)
            idx[y + g.name_h:y + nh, x:x + nw] = frame0 + i
            for t in range(lay.gpus.get(k, 0)):
                tx, ty, tw, th = lay.tile_rect(k, t)
                idx[ty:ty + th, tx:tx + tw] = i * G + t
        self._index = idx

    def tile_values(self) -> tuple[np.ndarray, np.ndarray]:
        """Per tile (node-major, ``max_gpus`` per node): a ramp slot 0..101 for numeric metrics,
        and a palette index (-1: none) for job/owner."""
        n, G = len(self.order), self._max_gpus
        slots = np.full(n * G, NO_VALUE, dtype=np.int16)
        cats = np.full(n * G, -1, dtype=np.int16)
        m = self.map_metric
        nodes = self.state.nodes
        values: list[float | None]
        if m.categorical:
            for i, k in enumerate(self.order):
                node = nodes.get(k)
                if node is None:
                    continue
                for gi, j in active_jobs_by_gpu(node).items():
                    if gi < G:
                        # A group's ranks are one job: one colour, the group row's in the table.
                        ident = (j.spec.group.id if j.spec.group is not None else job_identity(j)) if m.name == "job" else (j.owner or "?")
                        cats[i * G + gi] = job_palette_index(ident)
            return slots, cats
        # One comprehension over every GPU (8,000 at 1,000 nodes), None read as NaN by numpy: a
        # loop calling _metric_value per GPU cost ~8 ms a refresh.
        derived = [(i * G, n.derived.gpus) for i, n in enumerate(map(nodes.get, self.order))
                   if n is not None and n.derived is not None]
        # Two flat lists of ints and floats (no per-GPU tuple: 8,000 tracked objects a refresh
        # set off the garbage collector's young passes).
        where = [base + g.index for base, gpus in derived for g in gpus if g.index < G]
        attr = _METRIC_ATTR.get(m.name)
        if attr is not None:
            values = [getattr(g, attr) for _base, gpus in derived for g in gpus if g.index < G]
        else:
            values = [_metric_value(m, g) for _base, gpus in derived for g in gpus if g.index < G]
        if values:
            # Scaled, rounded and clamped in one go: 8,000 Python round()/min()/max() calls cost more.
            q = np.rint((np.asarray(values, dtype=np.float64) - m.lo) * (100.0 / (m.hi - m.lo)))
            slots[np.asarray(where, dtype=np.int64)] = np.clip(np.nan_to_num(q, nan=NO_VALUE), 0, NO_VALUE).astype(np.int16)
        return slots, cats

    def node_matches(self) -> np.ndarray:
        """Per tile: does it match the search (True everywhere without one)."""
        n, G = len(self.order), self._max_gpus
        if not self.search:
            self.matches = n
            return np.ones(n * G, dtype=bool)
        terms = self.search.lower().split()
        out = np.zeros(n * G, dtype=bool)
        hit_nodes = 0
        for i, k in enumerate(self.order):
            node = self.state.nodes.get(k)
            if node is None:
                continue
            text = " ".join([k, node.name, self.group.get(k, ""), *self.labels_of(k).values()]).lower()
            if all(t in text for t in terms):
                out[i * G:(i + 1) * G] = True
                hit_nodes += 1
                continue
            found = False
            for gi, j in active_jobs_by_gpu(node).items():
                jt = f"{text} {j.id} {job_identity(j)} {j.name} {j.owner}".lower()
                if gi < G and all(t in jt for t in terms):
                    out[i * G + gi] = found = True
            hit_nodes += found
        self.matches = hit_nodes
        return out

    def render(self) -> None:
        """Recompute every tile's colour and the image (the timed part of a frame)."""
        lay, idx = self.layout_, self._index
        if lay is None or idx is None:
            return
        dark = is_dark()
        pal = self.palette()
        bg = np.array(_bgra(pal.color(QPalette.ColorRole.Window)), dtype=np.float32)
        box = np.array(_bgra(pal.color(QPalette.ColorRole.Base)), dtype=np.float32)
        n, G = len(self.order), self._max_gpus
        slots, cats = self.tile_values()
        if self.map_metric.categorical:
            pal_rgb = np.array([_bgra(QColor(c)) for c in JOB_PALETTE] + [_bgra(load_colour(None, dark))], dtype=np.float32)
            colours = pal_rgb[np.where(cats < 0, len(JOB_PALETTE), cats)]
        else:
            colours = _ramp(dark)[slots]
        # Missing GPU slots (a node with fewer GPUs than the biggest) melt into the box.
        counts = np.array([self.layout_.gpus.get(k, 0) for k in self.order], dtype=np.int32)
        present = (np.arange(G)[None, :] < counts[:, None]).reshape(-1)
        colours[~present] = box
        # Node frames: the link state's colour when not live, a quiet grey when live.
        frames = np.empty((n, 4), dtype=np.float32)
        quiet = np.array(_bgra(pal.color(QPalette.ColorRole.Mid)), dtype=np.float32)
        stale_nodes = np.zeros(n, dtype=bool)
        for i, k in enumerate(self.order):
            node = self.state.nodes.get(k)
            status = node.status if node is not None else "connecting"
            if status == "live":
                frames[i] = quiet
            else:
                frames[i] = _bgra(QColor(LINK_COLOURS.get(status, "#888888")))
                stale_nodes[i] = True
        if stale_nodes.any():
            tiles_stale = np.repeat(stale_nodes, G)
            colours[tiles_stale] = colours[tiles_stale] * STALE_KEEP + box * (1 - STALE_KEEP)
        match = self.node_matches()
        if self.search:
            colours[~match] = colours[~match] * DIM_KEEP + box * (1 - DIM_KEEP)
            node_match = match.reshape(n, G).any(axis=1) if G else np.zeros(n, dtype=bool)
            frames[~node_match] = frames[~node_match] * DIM_KEEP + box * (1 - DIM_KEEP)
            frames[node_match] = _bgra(pal.color(QPalette.ColorRole.Highlight))
        lut = np.vstack([colours.reshape(-1, 4), frames, box[None, :], bg[None, :]]).astype(np.uint8)
        self._tile_colours = colours
        self._match = match
        self._stale_nodes = stale_nodes
        # One 32-bit gather per pixel (BGRA packed), not four byte gathers.
        pixels = np.ascontiguousarray(lut).view(np.uint32).reshape(-1)[idx]
        h, w = idx.shape
        self._pixels = pixels  # the QImage borrows this buffer
        self._image = QImage(pixels.data, w, h, 4 * w, QImage.Format.Format_RGB32)
        self.update()

    # ---- painting ----
    def paintEvent(self, ev) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), self.palette().color(QPalette.ColorRole.Window))
        if self._image is not None:
            p.drawImage(0, 0, self._image)
        lay = self.layout_
        if lay is None:
            p.end()
            return
        if not self.order:
            p.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No nodes yet: connect one (Cluster ▸ Connect to node…)")
            p.end()
            return
        self._paint_text(p, lay, ev.rect())
        p.end()

    def _paint_text(self, p: QPainter, lay: MapLayout, clip: QRect) -> None:
        pal = self.palette()
        text, dim = pal.color(QPalette.ColorRole.Text), pal.color(QPalette.ColorRole.PlaceholderText)
        g = lay.geo
        p.setFont(self._bold)
        fm = p.fontMetrics()
        for box in lay.boxes:
            bw, _ = lay.box_size(box)
            if not clip.intersects(QRect(box.x, box.y, bw, 16)):
                continue
            live = sum(1 for k in box.keys if k in self.state.nodes and self.state.nodes[k].status == "live")
            label = f"{box.name}  ·  {len(box.keys)}" + (f" ({len(box.keys) - live} not live)" if live < len(box.keys) else "")
            if fm.horizontalAdvance(label) > bw - 6:
                label = box.name  # the rack's name before its count
            p.setPen(text)
            p.drawText(QRect(box.x + 3, box.y, bw - 4, 15), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                       fm.elidedText(label, Qt.TextElideMode.ElideRight, bw - 6))
        # Stale and down nodes: hatched in their link colour, so they never pass for live ones.
        for i in np.flatnonzero(self._stale_nodes):
            k = self.order[int(i)]
            node = self.state.nodes.get(k)
            colour = QColor(LINK_COLOURS.get(node.status if node else "connecting", "#888888"))
            colour.setAlpha(150)
            x, y, w, h = lay.node_rect(k)
            p.fillRect(QRect(x, y + g.name_h, w, h - g.name_h), QBrush(colour, Qt.BrushStyle.BDiagPattern))
        self._paint_alerts(p, lay, clip)
        if g.name_h:
            p.setFont(self._small)
            fm = p.fontMetrics()
            for k in self.order:
                x, y, w, _ = lay.node_rect(k)
                if not clip.intersects(QRect(x, y, w, g.name_h)):
                    continue
                node = self.state.nodes.get(k)
                p.setPen(text if node is not None and node.status == "live" else dim)
                p.drawText(QRect(x, y - 1, w, g.name_h), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                           fm.elidedText(self.state.node_display_name(k), Qt.TextElideMode.ElideRight, w))
        if g.tile >= VALUE_TEXT_MIN_TILE and not self.map_metric.categorical:
            p.setFont(self._small)
            G = self._max_gpus
            for i, k in enumerate(self.order):
                node = self.state.nodes.get(k)
                if node is None or node.derived is None:
                    continue
                for gpu in node.derived.gpus:
                    v = _metric_value(self.map_metric, gpu)
                    if v is None or gpu.index >= lay.gpus.get(k, 0):
                        continue
                    r = QRect(*lay.tile_rect(k, gpu.index))
                    if not clip.intersects(r):
                        continue
                    c = self._tile_colours[i * G + gpu.index]
                    p.setPen(text_on(QColor(int(c[2]), int(c[1]), int(c[0]))))
                    p.drawText(r, Qt.AlignmentFlag.AlignCenter, f"{v:.0f}")
        if self._hover is not None and self._hover.key in self.state.nodes and self._hover.key in lay._where:
            x, y, w, h = lay.node_rect(self._hover.key)
            p.setPen(QPen(pal.color(QPalette.ColorRole.Highlight), 2))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(QRect(x - 1, y - 1, w + 1, h + 1))
        mapgroups.paint_group(p, lay, *self.group_tiles(self.shown_group()))
        mapgroups.paint_radar(p, lay, self.radar_marks())

    def shown_group(self) -> str:
        """The group outlined now: the one under the mouse, else the one selected."""
        h = self._hover
        if h is not None and h.key and h.gpu is not None and h.key in self.state.nodes:
            j = active_jobs_by_gpu(self.state.nodes[h.key]).get(h.gpu)
            if j is not None and j.spec.group is not None:
                return j.spec.group.id
        return self.outline_group

    def set_outline_group(self, group_id: str) -> None:
        if group_id != self.outline_group:
            self.outline_group = group_id
            self.update()

    def group_tiles(self, group_id: str) -> tuple[set[tuple[str, int]], set[str]]:
        """The (node key, GPU index) tiles and the node keys of a group's ranks on the map."""
        return mapgroups.group_tiles(self.state, self.layout_, group_id)

    def radar_marks(self) -> list[tuple[str, int, str]]:
        """(node key, GPU index, status) of every tile of a rank the radar flags."""
        return mapgroups.radar_marks(self.state, self.layout_)

    def resizeEvent(self, ev) -> None:
        super().resizeEvent(ev)
        if self.layout_ is not None and ev.size().width() != ev.oldSize().width():
            self._relayout()

    def sizeHint(self) -> QSize:
        return QSize(600, self.layout_.height if self.layout_ else 400)

    # ---- interaction ----
    def hit(self, pos: QPoint) -> Hit | None:
        return self.layout_.hit(pos.x(), pos.y()) if self.layout_ is not None else None

    def alerts_by_key(self) -> dict[str, list]:
        """Active alerts per node key (alerts name the daemon; keys are the app's names)."""
        by_daemon: dict[str, list] = {}
        for alert in self.state.alerts.sorted():
            by_daemon.setdefault(alert.node, []).append(alert)
        if not by_daemon:
            return {}
        out = {}
        for k, node in self.state.nodes.items():
            name = node.inventory.node if node.inventory is not None else k
            if name in by_daemon:
                out[k] = by_daemon[name]
        return out

    def _paint_alerts(self, p: QPainter, lay: MapLayout, clip: QRect) -> None:
        """A node with alerts gets a corner mark in its worst severity's colour; a GPU named by an
        alert gets a frame in that colour, so a throttling or erroring GPU stands out at any zoom."""
        for k, alerts in self.alerts_by_key().items():
            if k not in lay._where:
                continue
            x, y, w, h = lay.node_rect(k)
            if not clip.intersects(QRect(x, y, w, h)):
                continue
            worst = QColor(SEVERITY_COLOURS.get(alerts[0].severity, "#888888"))
            size = max(5, min(10, w // 4))
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(worst)
            p.drawPolygon(QPolygon([QPoint(x + w - size, y), QPoint(x + w, y), QPoint(x + w, y + size)]))
            p.setBrush(Qt.BrushStyle.NoBrush)
            for alert in alerts:
                if alert.subject.startswith("gpu ") and alert.subject[4:].isdigit():
                    index = int(alert.subject[4:])
                    if index < lay.gpus.get(k, 0):
                        p.setPen(QPen(QColor(SEVERITY_COLOURS.get(alert.severity, "#888888")), 2))
                        p.drawRect(QRect(*lay.tile_rect(k, index)).adjusted(0, 0, -1, -1))

    def describe(self, h: Hit) -> str:
        """Tooltip text of what is under the mouse: node, GPU, job."""
        if not h.key:
            keys = next((b.keys for b in self.layout_.boxes if b.name == h.group), []) if self.layout_ else []
            return f"{h.group}: {len(keys)} node{'s' if len(keys) != 1 else ''} (click a node for its card)"
        node = self.state.nodes.get(h.key)
        if node is None:
            return h.key
        lines = [f"{node.name} · {h.group} · {node.status}" + ("" if node.status == "live" else f" ({self.state.last_seen_text(h.key)})")]
        if node.inventory is not None and node.inventory.gpu_status == "simulated":
            lines[0] += " · simulated GPUs"
        d = node.derived
        if h.gpu is None:
            if d is not None:
                lines.append(f"CPU {fmt.pct(d.cpu_pct)} · memory {fmt.pct(d.mem_used_pct)}")
        else:
            g = node.gpu(h.gpu)
            if g is None:
                lines.append(f"GPU{h.gpu}: no sample yet")
            else:
                power = f"{g.power_w:.0f} W" if g.power_w is not None else fmt.DASH
                temp = f"{g.temp_c:.0f} °C" if g.temp_c is not None else fmt.DASH
                lines.append(f"GPU{h.gpu}: {fmt.pct(g.sm_util_pct)} busy · memory {fmt.human_bytes(g.mem_used_bytes)}"
                             f" ({fmt.pct(g.mem_used_pct)}) · {temp} · {power}")
            j = active_jobs_by_gpu(node).get(h.gpu)
            lines.append(f"job {j.name or j.id} ({j.id}) · {j.state}" + (f" · owner {j.owner}" if j.owner else "")
                         if j is not None else "no job on this GPU")
            m = j.spec.group if j is not None else None
            if m is not None:
                v = self.state.radar.verdict(m.id, m.rank)
                lines.append(f"rank {m.rank} of {m.world_size}" + (f" ({m.role})" if m.role else "") + f" in group {m.id}"
                             + (f" · radar: {v.status}" + (f" ({v.cls})" if v.cls else "") if v is not None and v.status in RADAR_BAD else ""))
        for alert in self.alerts_by_key().get(h.key, [])[:5]:
            lines.append(f"{SEVERITY_SYMBOLS.get(alert.severity, '!')} {alert.message}")
        lines.append("Click: the node's card")
        return "\n".join(lines)

    def mouseMoveEvent(self, ev) -> None:
        h = self.hit(ev.position().toPoint())
        if h != self._hover:
            self._hover = h
            self.hit_changed.emit(h)
            self.update()
            if h is None:
                QToolTip.hideText()
            else:
                QToolTip.showText(ev.globalPosition().toPoint(), self.describe(h), self)

    def leaveEvent(self, ev) -> None:
        self._hover = None
        self.update()

    def mousePressEvent(self, ev) -> None:
        if ev.button() != Qt.MouseButton.LeftButton:
            return
        h = self.hit(ev.position().toPoint())
        self.click(h)

    def click(self, h: Hit | None) -> None:
        """What a click on ``h`` does (also the tests' entry point)."""
        if h is None:
            return
        if not h.key:
            self.search_requested.emit(h.group)
            return
        node = self.state.nodes.get(h.key)
        if node is not None and h.gpu is not None:
            j = active_jobs_by_gpu(node).get(h.gpu)
            if j is not None:
                self.job_clicked.emit(j.id)
        self.node_activated.emit(h.key)


# The metrics that are one attribute of a GPU's derived record (power is a share of its limit).
_METRIC_ATTR = {"util": "sm_util_pct", "memory": "mem_used_pct", "temperature": "temp_c"}


def _metric_value(m: MapMetric, gpu) -> float | None:
    if m.name == "util":
        return gpu.sm_util_pct
    if m.name == "memory":
        return gpu.mem_used_pct
    if m.name == "temperature":
        return gpu.temp_c
    if m.name == "power":
        if gpu.power_w is None:
            return None
        return gpu.power_w * 100.0 / (gpu.power_limit_w or DEFAULT_POWER_LIMIT_W)
    return None


_RAMPS: dict[bool, np.ndarray] = {}


def _ramp(dark: bool) -> np.ndarray:
    """The load ramp at whole percents (0..100), then the "no data" colour (slot 101)."""
    r = _RAMPS.get(dark)
    if r is None:
        r = _RAMPS[dark] = np.array([_bgra(load_colour(float(q), dark)) for q in range(101)]
                                    + [_bgra(load_colour(None, dark))], dtype=np.float32)
    return r
