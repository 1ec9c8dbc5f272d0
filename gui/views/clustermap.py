"""The cluster map panel: the painted map (:mod:`gui.views.mapcanvas`) under a bar with the
colour-by chooser, the search, the legend, the counts and a button to the node cards."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QLinearGradient,
    QPainter,
    QPalette,
    QPen,
)
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from gui.state import ClusterState
from gui.theme import (
    JOB_PALETTE,
    LINK_COLOURS,
    is_dark,
    load_colour,
)
from gui.views.mapcanvas import MAP_METRICS, MapCanvas, MapMetric


class Legend(QWidget):
    """What the colours mean: the ramp with its ends, or "one colour per job"; and the frames."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.map_metric = MAP_METRICS[0]
        self.setFixedHeight(22)
        self.set_map_metric(self.map_metric)

    def set_map_metric(self, m: MapMetric) -> None:
        self.map_metric = m
        fm = self.fontMetrics()
        words = self._words(m)
        # Wide enough for its words: a legend cut short is worse than none.
        want = sum(fm.horizontalAdvance(w) + 12 for w in words) + (6 * 9 + 4 if m.categorical else 104) + 2 * 22
        # It gives way on a narrow window (the docks keep their widths); the tooltip says it all.
        self.setMinimumWidth(min(want, 60))
        self.setMaximumWidth(want)
        self._want = want
        self.updateGeometry()
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.setToolTip(f"{m.label}: " + ", ".join(words[:-2]) + "; hatched amber frame: stale node, red: down")
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(self._want, 22)

    @staticmethod
    def _words(m: MapMetric) -> list[str]:
        if m.categorical:
            return ["one colour per job (as in the table)" if m.name == "job" else "one colour per owner", "stale", "down"]
        return [f"{m.lo:.0f}{m.unit}", f"{m.hi:.0f}{m.unit}", "stale", "down"]

    def paintEvent(self, ev) -> None:
        p = QPainter(self)
        pal = self.palette()
        fm = p.fontMetrics()
        y, h = 4, self.height() - 8
        x = 0
        m = self.map_metric
        p.setPen(pal.color(QPalette.ColorRole.Text))
        if m.categorical:
            for i, c in enumerate(JOB_PALETTE[:6]):
                p.fillRect(QRect(x + i * 9, y, 8, h), QColor(c))
            x += 6 * 9 + 4
            word = self._words(m)[0]
            p.drawText(QRect(x, 0, 400, self.height()), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, word)
            x += fm.horizontalAdvance(word) + 10
        else:
            lo, hi = self._words(m)[:2]
            p.drawText(QRect(x, 0, 60, self.height()), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, lo)
            x += fm.horizontalAdvance(lo) + 4
            grad = QLinearGradient(x, 0, x + 100, 0)
            dark = is_dark()
            for q in (0, 30, 70, 100):
                grad.setColorAt(q / 100, load_colour(float(q), dark))
            p.fillRect(QRect(x, y, 100, h), grad)
            x += 104
            p.drawText(QRect(x, 0, 60, self.height()), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, hi)
            x += fm.horizontalAdvance(hi) + 10
        for word, status in (("stale", "stale"), ("down", "down")):
            c = QColor(LINK_COLOURS[status])
            p.fillRect(QRect(x, y, h, h), QBrush(c, Qt.BrushStyle.BDiagPattern))
            p.setPen(QPen(c, 2))
            p.drawRect(QRect(x, y, h, h))
            x += h + 3
            p.setPen(pal.color(QPalette.ColorRole.Text))
            p.drawText(QRect(x, 0, 60, self.height()), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, word)
            x += fm.horizontalAdvance(word) + 8
        p.end()


class ClusterMap(QWidget):
    """The map with its bar: colour-by chooser, search, legend, counts, and a button to the cards."""

    cards_requested = Signal()

    def __init__(self, state: ClusterState, labels_of: Callable[[str], dict[str, str]] | None = None, parent=None) -> None:
        super().__init__(parent)
        self.state = state
        self.canvas = MapCanvas(state, labels_of)
        self.scroll = _FitScroll(self.canvas)
        self.metric_box = QComboBox()
        for m in MAP_METRICS:
            self.metric_box.addItem(m.label, m.name)
        self.metric_box.setToolTip("Colour the tiles by: utilisation, memory, temperature, power, job or owner")
        self.metric_box.currentIndexChanged.connect(self._on_metric)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Find node, rack, job, owner…")
        self.search.setClearButtonEnabled(True)
        self.search.setMinimumWidth(90)
        self.search.setMaximumWidth(260)
        self.search.textChanged.connect(self._on_search)
        self.canvas.search_requested.connect(self.search.setText)
        self.legend = Legend()
        self.count = QLabel()
        # On a narrow window the counts give way (the tooltip keeps them), not the search box.
        self.count.setMinimumWidth(1)
        self.count.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.cards_btn = QToolButton()
        self.cards_btn.setText("Node cards")
        self.cards_btn.setToolTip("Show every node as a card (GPU details, drag a job to migrate it)")
        self.cards_btn.clicked.connect(self.cards_requested)
        bar = QHBoxLayout()
        bar.setContentsMargins(4, 2, 4, 2)
        bar.addWidget(self.metric_box)
        bar.addWidget(self.search)
        bar.addWidget(self.legend)
        bar.addWidget(self.count, 1)
        bar.addWidget(self.cards_btn)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addLayout(bar)
        lay.addWidget(self.scroll, 1)

    def refresh(self) -> None:
        self.canvas.refresh()
        self._update_count()

    def set_metric(self, name: str) -> None:
        self.metric_box.setCurrentIndex(next(i for i, m in enumerate(MAP_METRICS) if m.name == name))

    def _on_metric(self, i: int) -> None:
        self.canvas.map_metric = MAP_METRICS[i]
        self.legend.set_map_metric(MAP_METRICS[i])
        self.canvas.render()

    def _on_search(self, text: str) -> None:
        self.canvas.search = text.strip()
        self.canvas.render()
        self._update_count()

    def _update_count(self) -> None:
        nodes = self.state.nodes
        gpus = sum(len(n.inventory.gpus) for n in nodes.values() if n.inventory)
        not_live = sum(1 for n in nodes.values() if n.status != "live")
        # What is wrong first: a narrow bar cuts the end (the whole text is the tooltip).
        parts = [f"{len(nodes):,} nodes", *([f"{not_live:,} not live"] if not_live else []), f"{gpus:,} GPUs"]
        if self.canvas.search:
            parts.insert(0, f"{self.canvas.matches:,} match")
        if any(n.inventory is not None and n.inventory.gpu_status == "simulated" for n in nodes.values()):
            parts.insert(0, "SIMULATED GPUs")
        text = " · ".join(parts)
        if self.count.text() != text:
            self.count.setText(text)
            self.count.setToolTip(text)


class _FitScroll(QScrollArea):
    """Scrolls the canvas vertically when it cannot fit; tells it the height to fit in."""

    def __init__(self, canvas: MapCanvas) -> None:
        super().__init__()
        self.setWidget(canvas)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFrameShape(QScrollArea.Shape.NoFrame)
        self.canvas = canvas

    def resizeEvent(self, ev) -> None:
        super().resizeEvent(ev)
        self.canvas.set_fit_height(self.viewport().height())
