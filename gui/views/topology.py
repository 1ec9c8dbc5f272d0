"""Topology canvas: node cards with GPU tiles, GPU links, and job chips you can drag to migrate.

One QGraphicsItem per node card paints its own tiles and links (hundreds of GPUs stay cheap);
job chips are separate items so they can be dragged onto another card. Cards keep their slot
while they exist and new nodes take the first free slot, so the picture stays put as nodes
come and go.

Over 500 lines: one QGraphicsScene with its card, chip and drag-to-migrate items, which share
the scene's coordinates and hit-testing; split, each half would reach into the other.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QMimeData, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QDrag, QFont, QFontMetricsF, QPainter, QPalette, QPen, QStaticText, QTransform
from PySide6.QtWidgets import QApplication, QGraphicsItem, QGraphicsObject, QGraphicsScene, QGraphicsView

from gui import fmt
from gui.state import ClusterState, NodeState, migration_fraction
from gui.theme import LINK_COLOURS, STATE_COLOURS, is_dark, link_text, load_colour, text_on

JOB_MIME = "application/x-fleetdeck-job"
TILE_W, TILE_H, GAP = 104, 76, 8
COLS = 4
HEADER_H = 40
CHIP_H = 18
CPU_STRIP_H = 26
PAD = 10
CARD_GAP = 28
CARD_W = PAD * 2 + COLS * TILE_W + (COLS - 1) * GAP
LOD_TEXT = 0.55  # below this zoom, cards and chips drop their small text
JOBS_RECHECK_S = 5.0  # finished jobs drop off the cards on the clock, not on a message
CHIPS_ALL_CARDS = 64  # up to this many cards every chip is kept up to date; past it, the ones on screen
STATIC_TEXT_CACHE = 4096  # laid-out strings kept (GPU names, percentages, sizes repeat a lot)


class PaintCache:
    """What every card paint would otherwise rebuild: tile colours per whole percent, and
    laid-out text (QStaticText) per (string, font). Text layout was most of a card's paint."""

    def __init__(self, fonts: list[QFont]) -> None:
        self.fonts = fonts  # text() takes an index into these
        self.dark = is_dark()
        self._colours: dict[int | None, tuple[QColor, QColor, QColor]] = {}
        self._text: dict[tuple[str, int], QStaticText] = {}

    def tile_colours(self, util: float | None) -> tuple[QColor, QColor, QColor]:
        """(background, stale background, text colour) of a tile at ``util`` percent."""
        q = None if util is None else round(max(0.0, min(100.0, util)))
        c = self._colours.get(q)
        if c is None:
            bg = load_colour(None if q is None else float(q), self.dark)
            c = self._colours[q] = (bg, QColor(bg.red(), bg.green(), bg.blue(), 110), text_on(bg))
        return c

    def text(self, s: str, font_id: int) -> QStaticText:
        st = self._text.get((s, font_id))
        if st is None:
            if len(self._text) >= STATIC_TEXT_CACHE:
                self._text.clear()
            st = self._text[(s, font_id)] = QStaticText(s)
            st.setTextFormat(Qt.TextFormat.PlainText)
            st.setPerformanceHint(QStaticText.PerformanceHint.AggressiveCaching)
            st.prepare(QTransform(), self.fonts[font_id])  # lay out now, so size() is right
        return st


class NodeCard(QGraphicsItem):
    """A node: header (name, link, CPU, memory) and its GPU tiles with their links."""

    def __init__(self, canvas: TopologyCanvas, key: str) -> None:
        super().__init__()
        self.canvas = canvas
        self.key = key
        self.node: NodeState | None = None
        self.n_gpus = 0
        self.has_cpu_jobs = False
        self.drop_highlight = False
        self._drawn: tuple = ()
        self.jobs_seen: tuple = ()  # the JobInfo objects the chips were last built from
        self.has_cpu_jobs_now = False
        self._tile_rects: list[QRectF] = []
        self._rect_for: tuple = ()
        self._rect = QRectF()
        self.setAcceptDrops(True)
        # The card is repainted only when its node changed; chips moving over it, a migration
        # ring turning or the view scrolling reuse the cached pixels.
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)

    def set_node(self, node: NodeState, has_cpu_jobs: bool) -> None:
        n = len(node.inventory.gpus) if node.inventory else 0
        if n != self.n_gpus or has_cpu_jobs != self.has_cpu_jobs:
            self.prepareGeometryChange()
            self.n_gpus, self.has_cpu_jobs = n, has_cpu_jobs
        self.node = node
        # What the paint shows comes from these objects; a new sample replaces ``derived``.
        drawn = (node.link, node.inventory, node.derived, n, has_cpu_jobs)
        if len(drawn) != len(self._drawn) or any(a is not b for a, b in zip(drawn, self._drawn)):
            self._drawn = drawn
            self.update()

    def rows(self) -> int:
        return max(1, math.ceil(self.n_gpus / COLS))

    def height(self) -> float:
        return HEADER_H + self.rows() * (TILE_H + GAP) + (CPU_STRIP_H if self.has_cpu_jobs else 0) + PAD

    def boundingRect(self) -> QRectF:
        # Qt asks for this several times per item per frame: computed when the shape changes.
        if self._rect_for != (self.n_gpus, self.has_cpu_jobs):
            self._rect_for = (self.n_gpus, self.has_cpu_jobs)
            self._rect = QRectF(0, 0, CARD_W, self.height())
        return self._rect

    def tile_rect(self, i: int) -> QRectF:
        r, c = divmod(i, COLS)
        return QRectF(PAD + c * (TILE_W + GAP), HEADER_H + r * (TILE_H + GAP), TILE_W, TILE_H)

    def cpu_strip_rect(self) -> QRectF:
        y = HEADER_H + self.rows() * (TILE_H + GAP)
        return QRectF(PAD, y, CARD_W - 2 * PAD, CPU_STRIP_H - 4)

    def paint(self, p: QPainter, option, widget=None) -> None:  # long on purpose: one picture
        lod = option.levelOfDetailFromTransform(p.worldTransform()) if option is not None else 1.0
        if lod < LOD_TEXT:
            self._paint_overview(p)
            return
        pal = self.canvas.palette()
        node = self.node
        link = node.status if node else "connecting"
        rect = self.boundingRect()
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        border = QColor(LINK_COLOURS.get(link, "#888"))
        p.setPen(QPen(QColor("#3d7eff") if self.drop_highlight else border, 3 if self.drop_highlight else 1.5))
        p.setBrush(pal.color(QPalette.ColorRole.Base))
        p.drawRoundedRect(rect.adjusted(1, 1, -1, -1), 8, 8)
        text = pal.color(QPalette.ColorRole.Text)
        dim = pal.color(QPalette.ColorRole.PlaceholderText)
        # header
        f = QFont(self.canvas.font())
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() * 1.1)
        p.setFont(f)
        p.setPen(text)
        name = self.key if node is None or node.name == self.key else f"{self.key} · {node.name}"
        p.drawText(QRectF(PAD, 4, CARD_W * 0.55, 20), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, name)
        p.setFont(self.canvas.font())
        p.setPen(border)
        p.drawText(QRectF(CARD_W * 0.55, 4, CARD_W * 0.45 - PAD, 20), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                   link_text(link, self.canvas.state.live_source))
        d = node.derived if node else None
        p.setPen(dim)
        if d is not None:
            sub = f"CPU {fmt.pct(d.cpu_pct)} · mem {fmt.pct(d.mem_used_pct)} · net ↓{fmt.rate(d.net_rx_bytes_per_s)} ↑{fmt.rate(d.net_tx_bytes_per_s)}"
        elif node is not None and node.inventory is not None:
            sub = "waiting for the first sample"
        else:
            sub = "connecting…"
        if node and node.inventory and node.inventory.gpu_status == "simulated":
            sub += " · simulated GPUs"  # the demo backend: never let it pass for real hardware
        elif node and node.inventory and node.inventory.gpu_status not in ("", "ok") and not self.n_gpus:
            sub += " · " + node.inventory.gpu_status
        p.drawText(QRectF(PAD, 22, CARD_W - 2 * PAD, 16), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, sub)
        if not self.n_gpus:
            r = self.tile_rect(0).adjusted(0, 0, CARD_W - 2 * PAD - TILE_W, 0)
            p.drawText(r, Qt.AlignmentFlag.AlignCenter, "no GPUs")
        stale = link != "live"
        # links behind the tiles: NVLink thick, PCIe thin dashed
        if node and node.inventory:
            for lk in node.inventory.gpu_links:
                if lk.a >= self.n_gpus or lk.b >= self.n_gpus:
                    continue
                a, b = self.tile_rect(lk.a).center(), self.tile_rect(lk.b).center()
                if lk.kind == "nvlink":
                    p.setPen(QPen(QColor("#76b900"), 2 + min(lk.links, 6), Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
                else:
                    p.setPen(QPen(dim, 1.5, Qt.PenStyle.DashLine))
                p.drawLine(a, b)
        cache = self.canvas.paint_cache
        font, small = self.canvas.font(), self.canvas.small_font
        inner_w = TILE_W - 12
        for i in range(self.n_gpus):
            r = self.tile_rect(i)
            g = node.gpu(i) if node else None
            util = None if g is None else g.sm_util_pct
            bg, bg_stale, fg = cache.tile_colours(util)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(bg_stale if stale else bg)
            p.drawRoundedRect(r, 5, 5)
            p.setPen(fg)
            p.setFont(font)
            x0, y0 = r.left() + 6, r.top() + 3
            p.drawStaticText(QPointF(x0, y0), cache.text(f"GPU{i}", 0))
            pct = cache.text(fmt.pct(util), 0)
            p.drawStaticText(QPointF(r.right() - 6 - pct.size().width(), y0), pct)
            if g is not None:
                p.setFont(small)
                line = f"{fmt.human_bytes(g.mem_used_bytes)}"
                if g.temp_c is not None:
                    line += f" · {g.temp_c:.0f}°C"
                nv = (g.nvlink_tx_bytes_per_s or 0) + (g.nvlink_rx_bytes_per_s or 0)
                pcie = (g.pcie_tx_bytes_per_s or 0) + (g.pcie_rx_bytes_per_s or 0)
                p.drawStaticText(QPointF(x0, r.top() + 18), self.canvas.elided(line, inner_w))
                if nv or pcie:  # link throughput, where the driver reports it
                    # NVLink when it carries traffic (the fast path), else PCIe.
                    links = f"NVL {fmt.rate(nv)}" if nv else f"PCIe {fmt.rate(pcie)}"
                    p.drawStaticText(QPointF(x0, r.top() + 31), self.canvas.elided(links, inner_w))
                # memory bar along the bottom edge
                if g.mem_used_pct is not None:
                    bar = QRectF(r.left() + 4, r.bottom() - 5, (r.width() - 8), 3)
                    p.setPen(Qt.PenStyle.NoPen)
                    p.setBrush(QColor(0, 0, 0, 60))
                    p.drawRect(bar)
                    p.setBrush(fg)
                    p.drawRect(QRectF(bar.left(), bar.top(), bar.width() * g.mem_used_pct / 100.0, bar.height()))
        if self.has_cpu_jobs:
            p.setPen(dim)
            p.setFont(small)
            p.drawText(self.cpu_strip_rect(), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, "CPU")

    def _paint_overview(self, p: QPainter) -> None:
        """Zoomed far out, text is unreadable: the card is its outline, name and load colours."""
        node = self.node
        link = node.status if node else "connecting"
        border = QColor(LINK_COLOURS.get(link, "#888"))
        p.setPen(QPen(QColor("#3d7eff") if self.drop_highlight else border, 3))
        p.setBrush(self.canvas.palette().color(QPalette.ColorRole.Base))
        p.drawRect(self.boundingRect())
        p.setFont(self.canvas.overview_font)
        p.setPen(self.canvas.palette().color(QPalette.ColorRole.Text))
        name = self.canvas.paint_cache.text(self.key, 2)
        p.drawStaticText(QPointF(PAD, (HEADER_H - name.size().height()) / 2), name)
        p.setPen(Qt.PenStyle.NoPen)
        colours = self.canvas.paint_cache.tile_colours
        gpus = {g.index: g.sm_util_pct for g in node.derived.gpus} if node is not None and node.derived is not None else {}
        for i, r in enumerate(self.tile_rects()):
            p.setBrush(colours(gpus.get(i))[0])
            p.drawRect(r)

    def tile_rects(self) -> list[QRectF]:
        """Every tile's rectangle, computed once per GPU count."""
        if len(self._tile_rects) != self.n_gpus:
            self._tile_rects = [self.tile_rect(i) for i in range(self.n_gpus)]
        return self._tile_rects

    # ---- drop target for job chips ----
    def dragEnterEvent(self, ev) -> None:
        job = bytes(ev.mimeData().data(JOB_MIME)).decode() if ev.mimeData().hasFormat(JOB_MIME) else ""
        ok = bool(job) and self.canvas.state.node_of_job(job) not in (None, self.key)
        ev.setAccepted(ok)
        self.drop_highlight = ok
        self.update()

    def dragLeaveEvent(self, ev) -> None:
        self.drop_highlight = False
        self.update()

    def dropEvent(self, ev) -> None:
        self.drop_highlight = False
        self.update()
        job = bytes(ev.mimeData().data(JOB_MIME)).decode()
        self.canvas.drop_job(job, self.key)


class JobChip(QGraphicsObject):
    """A job on a GPU tile (or in a node's CPU strip). Drag it onto another card to migrate."""

    def __init__(self, canvas: TopologyCanvas, job_id: str) -> None:
        super().__init__()
        self.canvas = canvas
        self.job_id = job_id
        self.label = job_id
        self.state = "running"
        self.fraction: float | None = None
        self.chip_w = TILE_W - 12
        self._rect = QRectF()
        self._press: QPointF | None = None
        self.setCursor(Qt.CursorShape.OpenHandCursor)
        self.setZValue(2)
        # A chip repaints only when its job changes (set_job calls update()).
        self.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)

    def set_job(self, label: str, state: str, fraction: float | None, width: float) -> None:
        if (label, state, fraction, width) == (self.label, self.state, self.fraction, self.chip_w) and self.toolTip():
            return  # nothing to repaint
        if width != self.chip_w:
            self.prepareGeometryChange()
            self.chip_w = width
        self.label, self.state, self.fraction = label, state, fraction
        self.setToolTip(f"{label} ({self.job_id}) — {state}" + (f", {fraction * 100:.0f}% transferred" if fraction is not None else "")
                        + "\nDrag onto another node to migrate.")
        self.update()

    def boundingRect(self) -> QRectF:
        if self._rect.width() != self.chip_w:
            self._rect = QRectF(0, 0, self.chip_w, CHIP_H)
        return self._rect

    def paint(self, p: QPainter, option, widget=None) -> None:
        colour = QColor(STATE_COLOURS.get(self.state, "#888"))
        lod = option.levelOfDetailFromTransform(p.worldTransform()) if option is not None else 1.0
        if lod < LOD_TEXT:
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QBrush(colour, Qt.BrushStyle.BDiagPattern) if self.state == "paused" else colour)
            p.drawRect(self.boundingRect())
            return
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        r = self.boundingRect().adjusted(0.5, 0.5, -0.5, -0.5)
        paused = self.state == "paused"
        moving = self.state in ("migrating", "checkpointing")
        p.setPen(QPen(colour.darker(140), 2 if moving else 1))
        # A job on the move is tinted with its state colour, so it stands out among running chips.
        p.setBrush(QColor(240, 228, 246, 240) if moving else QColor(225, 230, 245, 235) if paused else QColor(255, 255, 255, 230))
        p.drawRoundedRect(r, 8, 8)
        if paused:
            p.setBrush(QBrush(colour, Qt.BrushStyle.BDiagPattern))
            p.drawRoundedRect(r, 8, 8)
        x = 5.0
        if paused:
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(colour)
            p.drawRect(QRectF(x, 4, 3, CHIP_H - 8))
            p.drawRect(QRectF(x + 5, 4, 3, CHIP_H - 8))
            x += 12
        elif self.state in ("migrating", "checkpointing"):
            ring = QRectF(x, 2, CHIP_H - 4, CHIP_H - 4)
            p.setPen(QPen(QColor(0, 0, 0, 50), 2.5))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawEllipse(ring)
            p.setPen(QPen(colour.darker(160), 2.5))  # dark enough to read on the tinted chip
            span = int(360 * 16 * (self.fraction if self.fraction is not None else 0.1))
            p.drawArc(ring, 90 * 16, -span)
            x += CHIP_H
        else:
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(colour)
            p.drawEllipse(QRectF(x, CHIP_H / 2 - 3, 6, 6))
            x += 10
        p.setPen(QColor("#222222"))
        f = QFont(self.canvas.font())
        f.setPointSizeF(max(6.5, f.pointSizeF() * 0.85))
        p.setFont(f)
        # The phase in words beside the name: a ring alone does not say what is happening.
        suffix = ""
        if self.state == "checkpointing":
            suffix = " saving"
        elif self.state == "migrating":
            suffix = f" {self.fraction * 100:.0f}%" if self.fraction is not None else " moving"
        avail = int(self.chip_w - x - 4)
        fm = p.fontMetrics()
        if suffix and fm.horizontalAdvance(suffix) < avail - 20:
            text = fm.elidedText(self.label, Qt.TextElideMode.ElideRight, avail - fm.horizontalAdvance(suffix)) + suffix
        else:
            text = fm.elidedText(self.label, Qt.TextElideMode.ElideRight, avail)
        p.drawText(QRectF(x, 0, self.chip_w - x - 3, CHIP_H), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, text)

    def mousePressEvent(self, ev) -> None:
        if ev.button() == Qt.MouseButton.LeftButton:
            self._press = ev.screenPos()
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
            ev.accept()
        else:
            ev.ignore()

    def mouseMoveEvent(self, ev) -> None:
        if self._press is None or (ev.screenPos() - self._press).manhattanLength() < QApplication.startDragDistance():
            return
        self._press = None
        drag = QDrag(ev.widget())
        mime = QMimeData()
        mime.setData(JOB_MIME, self.job_id.encode())
        drag.setMimeData(mime)
        drag.exec(Qt.DropAction.MoveAction)
        self.setCursor(Qt.CursorShape.OpenHandCursor)

    def mouseReleaseEvent(self, ev) -> None:
        self._press = None
        self.setCursor(Qt.CursorShape.OpenHandCursor)
        self.canvas.job_clicked.emit(self.job_id)

    def mouseDoubleClickEvent(self, ev) -> None:
        self.canvas.job_activated.emit(self.job_id)


class TopologyCanvas(QGraphicsView):
    """The cluster as cards. ``migrate_requested(job_id, source_key, target_key)`` when a chip
    is dropped on another node; the window asks for confirmation."""

    migrate_requested = Signal(str, str, str)
    job_clicked = Signal(str)
    job_activated = Signal(str)

    def __init__(self, state: ClusterState, parent=None) -> None:
        super().__init__(parent)
        self.state = state
        self.setScene(QGraphicsScene(self))
        self.cards: dict[str, NodeCard] = {}
        self.slots: dict[str, int] = {}
        self.chips: dict[tuple[str, int | None], JobChip] = {}
        self._columns = 0
        self._seen_structure = -1
        self._jobs_bucket = -1
        self._chips_pending: set[str] = set()  # cards off screen whose chips wait until shown
        self.overview_font = QFont(self.font())
        self.overview_font.setPointSizeF(self.font().pointSizeF() * 2.2)
        self.overview_font.setBold(True)
        self.small_font = QFont(self.font())
        self.small_font.setPointSizeF(max(6.5, self.font().pointSizeF() * 0.85))
        self._small_metrics = QFontMetricsF(self.small_font)
        self.paint_cache = PaintCache([self.font(), self.small_font, self.overview_font])
        self.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.MinimalViewportUpdate)
        self.setAcceptDrops(True)
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.setBackgroundBrush(self.palette().color(QPalette.ColorRole.Window))

    def elided(self, s: str, width: float) -> QStaticText:
        """``s`` in the small font, cut with an ellipsis to ``width`` (laid out once)."""
        st = self.paint_cache.text(s, 1)
        if st.size().width() > width:
            short = self._small_metrics.elidedText(s, Qt.TextElideMode.ElideRight, width)
            if short != s:
                st = self.paint_cache.text(short, 1)
        return st

    # ---- keeping up with the state ----
    def refresh(self) -> None:
        structural = self._seen_structure != self.state.structure_revision
        jobs_changed: set[str] = set()  # cards whose jobs moved: only their chips are redone
        self._seen_structure = self.state.structure_revision
        for key in [k for k in self.cards if k not in self.state.nodes]:
            card = self.cards.pop(key)
            # Its chips are its children and go with it: forget them before the card is deleted.
            for k in [k for k, chip in self.chips.items() if chip.parentItem() is card]:
                del self.chips[k]
            self.scene().removeItem(card)
            self.slots.pop(key, None)
            structural = True
        for key, node in self.state.nodes.items():
            card = self.cards.get(key)
            if card is None:
                card = self.cards[key] = NodeCard(self, key)
                self.scene().addItem(card)
                used = set(self.slots.values())
                self.slots[key] = next(i for i in range(len(used) + 1) if i not in used)
                structural = True
            # A job update replaces its JobInfo: the same objects mean the chips are as drawn.
            jobs_now = tuple(node.jobs.values())
            if len(jobs_now) != len(card.jobs_seen) or any(a is not b for a, b in zip(jobs_now, card.jobs_seen)):
                card.jobs_seen = jobs_now
                card.has_cpu_jobs_now = any(not j.gpus and j.state not in ("succeeded", "failed", "cancelled", "migrated")
                                            for j in self.state.visible_jobs(key))
                jobs_changed.add(key)
            card.set_node(node, card.has_cpu_jobs_now)
        # Finished jobs leave the picture after a while without any message: look again now and then.
        bucket = int(self.state.clock() // JOBS_RECHECK_S)
        if structural:
            self._layout()  # before the chips: which cards are on screen depends on it
        if structural or bucket != self._jobs_bucket:
            self._jobs_bucket = bucket
            self._sync_chips(set(self.cards))
        elif jobs_changed or self._chips_pending:
            self._sync_chips(jobs_changed)

    def _on_screen(self, keys: set[str]) -> set[str]:
        """Of ``keys``, the cards in (or near) the viewport; all of them when the view is not
        shown or the cluster is small. The rest wait in ``_chips_pending`` (a thousand cards'
        chips cost a second; a screen shows a few dozen)."""
        if len(self.cards) <= CHIPS_ALL_CARDS or not self.isVisible():
            return set(keys)
        area = self.mapToScene(self.viewport().rect()).boundingRect()
        area.adjust(-CARD_W, -CARD_W, CARD_W, CARD_W)
        return {k for k in keys if k in self.cards and area.intersects(self.cards[k].sceneBoundingRect())}

    def scrollContentsBy(self, dx: int, dy: int) -> None:
        super().scrollContentsBy(dx, dy)
        if self._chips_pending:
            self._sync_chips(set())  # cards scrolled into view get their chips now

    def _sync_chips(self, changed: set[str]) -> None:
        """Chips of the cards in ``changed`` and of pending cards now on screen (the others'
        chips stay as drawn: a relay's second changes some nodes' jobs, not a thousand cards)."""
        self._chips_pending = (self._chips_pending | changed) & set(self.cards)
        only = self._on_screen(self._chips_pending)
        self._chips_pending = self._chips_pending - only
        if not only:
            return
        want: dict[tuple[str, int | None], tuple[NodeCard, QRectF]] = {}
        for key, card in self.cards.items():
            if key not in only:
                continue
            active = [j for j in self.state.visible_jobs(key) if j.state not in ("succeeded", "failed", "cancelled", "migrated")]
            cpu_jobs = [j for j in active if not j.gpus]
            per_gpu: dict[int, list] = {}
            for j in active:
                for g in j.gpus:
                    if g < card.n_gpus:
                        per_gpu.setdefault(g, []).append(j)
            for g, jobs in per_gpu.items():
                r = card.tile_rect(g)
                for n, j in enumerate(jobs[:2]):  # two chips fit a tile; the tree lists all
                    want[(j.id, g)] = (card, QRectF(r.left() + 4, r.bottom() - CHIP_H - 8 - n * (CHIP_H + 1), r.width() - 8, CHIP_H))
            if cpu_jobs:
                strip = card.cpu_strip_rect()
                w = min(150.0, (strip.width() - 34) / len(cpu_jobs) - 4)
                for n, j in enumerate(cpu_jobs):
                    want[(j.id, None)] = (card, QRectF(strip.left() + 34 + n * (w + 4), strip.top() + 2, w, CHIP_H))
        mine = {k: c for k, c in self.chips.items() if c.parentItem() is None or c.parentItem().key in only}
        for k in [k for k in mine if k not in want]:
            self.scene().removeItem(self.chips.pop(k))
        for k, (card, rect) in want.items():
            job_id = k[0]
            chip = self.chips.get(k)
            if chip is None:
                chip = self.chips[k] = JobChip(self, job_id)
            if chip.parentItem() is not card:
                chip.setParentItem(card)
            if chip.pos() != rect.topLeft():
                chip.setPos(rect.topLeft())
            j = self.state.nodes[card.key].jobs[job_id]
            # A job on a node that stopped answering is drawn as stale, not as running.
            shown = "stale" if self.state.stale_job(job_id) else j.state
            chip.set_job(j.name or j.id, shown, migration_fraction(j.migration), rect.width())

    def _layout(self) -> None:
        cols = max(1, int((self.viewport().width() - CARD_GAP) // (CARD_W + CARD_GAP)))
        self._columns = cols
        # A uniform grid: a slot keeps its place even when the row above empties.
        cell_h = max((c.height() for c in self.cards.values()), default=0.0) + CARD_GAP
        for key, card in self.cards.items():
            r, c = divmod(self.slots[key], cols)
            card.setPos(CARD_GAP / 2 + c * (CARD_W + CARD_GAP), CARD_GAP / 2 + r * cell_h)
        self.scene().setSceneRect(self.scene().itemsBoundingRect().adjusted(-CARD_GAP / 2, -CARD_GAP / 2, CARD_GAP / 2, CARD_GAP / 2))

    def resizeEvent(self, ev) -> None:
        super().resizeEvent(ev)
        cols = max(1, int((self.viewport().width() - CARD_GAP) // (CARD_W + CARD_GAP)))
        if cols != self._columns and self.cards:
            self._layout()

    # ---- interaction ----
    def drop_job(self, job_id: str, target_key: str) -> None:
        """A job chip landed on ``target_key``'s card (also the test entry point)."""
        source = self.state.node_of_job(job_id)
        if source is None or source == target_key:
            return
        self.migrate_requested.emit(job_id, source, target_key)

    def wheelEvent(self, ev) -> None:
        """The wheel zooms around the cursor (drag the background to pan)."""
        factor = 1.0015 ** ev.angleDelta().y()
        if 0.1 <= self.transform().m11() * factor <= 4.0:
            self.scale(factor, factor)
        ev.accept()

    def fit(self) -> None:
        if self.cards:
            self.fitInView(self.scene().itemsBoundingRect(), Qt.AspectRatioMode.KeepAspectRatio)
            if self.transform().m11() > 1.0:
                self.resetTransform()

    def zoom_reset(self) -> None:
        self.resetTransform()

    def keyPressEvent(self, ev) -> None:
        if ev.key() == Qt.Key.Key_F:
            self.fit()
        elif ev.key() in (Qt.Key.Key_0,):
            self.zoom_reset()
        elif ev.key() in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.scale(1.2, 1.2)
        elif ev.key() == Qt.Key.Key_Minus:
            self.scale(1 / 1.2, 1 / 1.2)
        else:
            super().keyPressEvent(ev)

    def mouseDoubleClickEvent(self, ev) -> None:
        if self.itemAt(ev.position().toPoint()) is None:
            self.fit()
        else:
            super().mouseDoubleClickEvent(ev)
