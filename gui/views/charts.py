"""Live charts: several pyqtgraph plots, each with a metric and scope picker.

Charts never redraw on a message. The window's one timer calls :meth:`ChartsPanel.redraw`
(10-20 Hz); a chart draws only when the state changed or its time window moved, reads the
ring buffers, cuts the visible window, reduces it to a min/max envelope of the plot's pixel
width and only then calls setData.

Over 500 lines, and the next module to split: the chart widget with its legend, hover read-out
and curve painting, plus the glue to the computations behind its scopes. The quantile band lives
in gui/band.py and group sums in gui/groups.py (both Qt-free); the Prometheus history glue is
the part still to move.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPalette, QPen, QPixmap, QPolygonF, QTransform
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QGraphicsObject,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from gui import fmt
from gui.band import BAND_TOP_K as BAND_TOP_K  # re-exported: tests and callers name it here
from gui.band import BandCache, bin_width
from gui.groups import POLICY_METRIC, group_curves, group_first_time, group_ids, live_ranks, role_unit
from gui.series import RATE_WINDOW_S, SeriesKey, decimate_minmax_rows, smooth_rate_rows
from gui.state import METRIC_BY_KEY, METRICS, ChartScope, ClusterState, Metric, gpu_scope, job_identity
from gui.theme import job_colour, series_colour

MAX_CURVES = 256
# Past this many GPUs, "all GPUs" is a quantile band (min, p50, p95, max over every GPU per time
# bin) with the top-k GPUs (highest mean over the window) as lines on top: 8,000 lines are a blur.
# The same for "all nodes" and "all jobs" past BAND_MIN_SERIES series.
BAND_MIN_SERIES = 64
BAND_NOUNS = {"gpu": "GPUs", "node": "nodes", "job": "jobs"}
BAND_PENS = {"max": ("#9e9e9e", 1, Qt.PenStyle.DotLine), "p95": ("#e07b00", 2, Qt.PenStyle.SolidLine),
             "p50": ("#1f5fbf", 2, Qt.PenStyle.SolidLine), "min": ("#9e9e9e", 1, Qt.PenStyle.DotLine)}
SPANS_S = {"5 min": 300.0, "15 min": 900.0, "1 h": 3600.0, "6 h": 6 * 3600.0, "24 h": 86400.0, "7 d": 7 * 86400.0}
NO_HISTORY_NOTICE = ("Beyond the app's last hour, history comes from Prometheus: add prometheus = "
                     "\"http://HOST:9090\" to the cluster file, or start with --prometheus URL")
DEFAULT_SPAN = "15 min"
SCROLL_REDRAW_S = 1.0  # with no new data, move the time window at most this often
SCROLL_PIXELS = 2  # ... and only once it moved this many pixels
LEGEND_COLUMN_PX = 230  # one legend entry: swatch, name, last/min/max
LEGEND_MAX = 48  # entries; past this the legend says how many more (the read-out names them all)
LEGEND_ROWS = 2  # the legend's height in entries; more scroll, so the plot keeps its height
READOUT_MAX_ROWS = 12  # hover read-out lines per column before it starts another column
CROWDED_CURVES = 64
RECOMPUTE_IDLE_S = 30.0  # with no new data, re-read the rings this often anyway
# New data re-reads the rings at most this often, by the series the chart covers (a band over
# hundreds of nodes costs ~100 ms; data through a relay arrives once a second anyway); between
# recomputes the window only scrolls.
RECOMPUTE_MIN_S = ((BAND_MIN_SERIES, 0.0), (1000, 1.0), (math.inf, 2.0))
RECOMPUTE_COST_FACTOR = 10  # ... and, past BAND_MIN_SERIES, no sooner than 10x its last cost (<= 10% of the GUI thread)
# A scope list this long (1,000 nodes' GPUs or jobs; 30-100 ms to refill) is refilled when it
# opens, or, when its chart shows one item that may be gone, at most every SCOPES_REFILL_S.
SCOPES_MANY = 500
SCOPES_REFILL_S = 5.0
MIN_WINDOW_S = 60.0  # a young session shows at least this much time, then grows to the span


def _finite_runs(v: np.ndarray, all_finite: bool | None = None) -> list[tuple[int, int]]:
    """[start, end) of each run of finite values (NaN gaps split the line), found with numpy:
    one Python step per gap, none per point."""
    if all_finite is None:
        all_finite = bool(np.isfinite(v).all())
    if all_finite:
        return [(0, v.size)] if v.size else []
    finite = np.isfinite(v)
    edges = np.flatnonzero(np.diff(np.concatenate(([False], finite, [False])).astype(np.int8)))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _device_polyline(x: np.ndarray, y: np.ndarray, sx: float, dx: float, sy: float, dy: float) -> QPolygonF:
    """A QPolygonF of (x*sx+dx, y*sy+dy), written straight into its buffer from numpy."""
    poly = pg.functions.create_qpolygonf(x.size)
    buf = pg.functions.ndarray_from_qpolygonf(poly)
    np.multiply(x, sx, out=buf[:, 0])
    buf[:, 0] += dx
    np.multiply(y, sy, out=buf[:, 1])
    buf[:, 1] += dy
    return poly


ALL_SCOPE = ChartScope()  # every node, GPU or job of the chart's metric

class Curve(QGraphicsObject):
    """One series of a chart: its (decimated) data, pen and shown/hidden flag. It paints
    nothing itself (it is not in the scene): the chart's :class:`CurveSet` paints every curve
    in one item. It quacks like a PlotCurveItem where the legend and the tests look
    (``opts["pen"]``, ``getData()``, ``setVisible()``)."""

    def __init__(self, pen: QPen, name: str) -> None:
        super().__init__()
        self.opts = {"pen": pen, "name": name, "antialias": False}
        self.t = np.empty(0)
        self.v = np.empty(0)
        self.runs: list[tuple[int, int]] = []
        self.v_min = self.v_max = math.nan

    def setData(self, t: np.ndarray, v: np.ndarray, all_finite: bool | None = None,
                v_min: float | None = None, v_max: float | None = None) -> None:
        """New points; the chart passes finiteness and range it computed for many curves at once."""
        self.t, self.v = t, v
        self.runs = _finite_runs(v, all_finite)
        if v_min is None or v_max is None:
            v_min = float(np.fmin.reduce(v)) if v.size else math.nan
            v_max = float(np.fmax.reduce(v)) if v.size else math.nan
        self.v_min, self.v_max = v_min, v_max

    @property
    def polys(self) -> list[tuple[int, int]]:
        """The finite runs drawn as separate lines (one per NaN-free stretch)."""
        return self.runs

    def getData(self) -> tuple[np.ndarray, np.ndarray]:
        return self.t, self.v

    def name(self) -> str:
        return self.opts["name"]

    def boundingRect(self) -> QRectF:
        return QRectF()

    def paint(self, p, option, widget=None) -> None:  # never in a scene
        pass


class CurveSet(pg.GraphicsObject):
    """Every curve of a chart in one QGraphicsItem: one paint call draws each visible curve
    as prebuilt polylines with a 1-px cosmetic pen. A PlotCurveItem per curve costs a scene
    item, a bounds query and a QPainterPath per curve per frame; this costs one drawPolyline
    per finite run."""

    def __init__(self) -> None:
        super().__init__()
        self.curves: list[Curve] = []
        self._bounds = QRectF()
        self._version = 0  # bumped with new data
        self._device_key: tuple = ()
        self._device: list[list[QPolygonF]] = []

    def set_curves(self, curves: list[Curve]) -> None:
        """Take new data: recompute the bounds once and repaint once."""
        self.curves = curves
        self._version += 1
        self.prepareGeometryChange()
        self._bounds = self._data_rect()
        self.informViewBoundsChanged()
        self.update()

    def _data_rect(self) -> QRectF:
        shown = [c for c in self.curves if c.isVisible() and c.t.size]
        if not shown:
            return QRectF()
        x0 = min(float(c.t[0]) for c in shown)
        x1 = max(float(c.t[-1]) for c in shown)
        lo = [c.v_min for c in shown if not math.isnan(c.v_min)]
        hi = [c.v_max for c in shown if not math.isnan(c.v_max)]
        y0, y1 = (min(lo), max(hi)) if lo else (0.0, 1.0)
        return QRectF(x0, y0, max(x1 - x0, 1e-9), max(y1 - y0, 1e-9))

    def visibility_changed(self) -> None:
        self.set_curves(self.curves)

    def dataBounds(self, ax: int, frac: float = 1.0, orthoRange=None):
        r = self._bounds
        if r.isNull():
            return None, None
        return (r.left(), r.right()) if ax == 0 else (r.top(), r.bottom())

    def pixelPadding(self) -> float:
        return 0.0

    def boundingRect(self) -> QRectF:
        return QRectF(self._bounds)

    def paint(self, p: QPainter, option, widget=None) -> None:
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        tr = QTransform(p.transform())  # a copy: the painter may hand out its own state
        if tr.type().value > QTransform.TransformationType.TxScale.value:  # never in a plot; kept correct anyway
            self._paint_transformed(p)
            return
        # Points go to device pixels in numpy and Qt draws them untransformed: Qt's per-point
        # transform costs more than the numpy pass. Kept until the data or the view changes,
        # so a repaint under the hover line costs only the drawing.
        key = (tr.m11(), tr.dx(), tr.m22(), tr.dy(), self._version)
        if key != self._device_key:
            sx, dx, sy, dy = key[:4]
            self._device = [[_device_polyline(c.t[a:b], c.v[a:b], sx, dx, sy, dy) for a, b in c.runs] for c in self.curves]
            self._device_key = key
        p.resetTransform()
        for c, polys in zip(self.curves, self._device):
            if polys and c.isVisible():
                p.setPen(c.opts["pen"])
                for poly in polys:
                    p.drawPolyline(poly)
        p.setTransform(tr)

    def _paint_transformed(self, p: QPainter) -> None:
        for c in self.curves:
            if c.isVisible():
                p.setPen(c.opts["pen"])
                for a, b in c.runs:
                    p.drawPolyline(_device_polyline(c.t[a:b], c.v[a:b], 1.0, 0.0, 1.0, 0.0))


def _swatch(colour: QColor) -> QIcon:
    pm = QPixmap(10, 10)
    pm.fill(colour)
    return QIcon(pm)


class ChartLegend(QScrollArea):
    """The chart's legend below the plot, as plain widgets: a colour swatch, the series name and
    its last/min/max in the window, in the window's font and text colour whatever the chart's
    height. Clicking an entry hides or shows its curve. A fixed height of LEGEND_ROWS entries
    (more entries scroll), so the plot never shrinks as series come and go."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.inner = QWidget()
        self.grid = QGridLayout(self.inner)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setHorizontalSpacing(8)
        self.grid.setVerticalSpacing(0)
        self.setWidget(self.inner)
        self.buttons: list[QToolButton] = []
        self.curves: list[Curve] = []
        self._conns: list = []
        self.more = QLabel("")
        self.more.setStyleSheet("color: palette(placeholder-text);")
        self._cols = 1
        row_h = self.fontMetrics().height() + 6
        self.setFixedHeight(row_h * LEGEND_ROWS + 2)

    @property
    def items(self) -> list[tuple[QToolButton, Curve]]:
        return list(zip(self.buttons, self.curves))

    def set_curves(self, curves: list[Curve], total: int) -> None:
        from PySide6.QtCore import QObject
        for conn in self._conns:
            QObject.disconnect(conn)
        for b in self.buttons:
            b.setParent(None)
            b.deleteLater()
        self.buttons, self.curves, self._conns = [], list(curves), []
        for c in curves:
            b = QToolButton()
            b.setAutoRaise(True)
            b.setCheckable(True)
            b.setChecked(c.isVisible())
            b.setIcon(_swatch(c.opts["pen"].color()))
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            b.setToolTip(f"{c.name()}: click to hide or show")
            b.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
            b.toggled.connect(c.setVisible)
            self._conns.append(c.visibleChanged.connect(lambda b=b, c=c: b.setChecked(c.isVisible())))
            self.buttons.append(b)
        self.more.setText(f"+{total - len(curves)} more: hover the plot" if total > len(curves) else "")
        self._layout()

    def set_stats(self, texts: list[str]) -> None:
        for b, c, t in zip(self.buttons, self.curves, texts):
            b.setText(f"{c.name()}  {t}")

    def _layout(self) -> None:
        while self.grid.count():
            self.grid.takeAt(0)
        cols = self._cols
        for i, b in enumerate(self.buttons):
            self.grid.addWidget(b, i // cols, i % cols)
        if self.more.text():
            n = len(self.buttons)
            self.grid.addWidget(self.more, n // cols + (1 if n % cols else 0), 0, 1, cols)

    def resizeEvent(self, ev) -> None:
        super().resizeEvent(ev)
        cols = max(1, self.viewport().width() // LEGEND_COLUMN_PX)
        if cols != self._cols:
            self._cols = cols
            self._layout()


class _ScopeBox(QComboBox):
    """The scope picker: calls ``before_popup`` before its list opens, so a list of 10,000
    GPUs or jobs is refilled when someone looks at it, not every few seconds in a frame."""

    def __init__(self, before_popup: Callable[[], None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._before_popup = before_popup

    def showPopup(self) -> None:
        self._before_popup()
        super().showPopup()


class Chart(QWidget):
    """One plot: a metric of a scope (all nodes, one node, its GPUs, jobs...)."""

    closed = Signal(object)
    hovered = Signal(object)  # view x (wall seconds) under the mouse, or None when it left

    def __init__(self, state: ClusterState, metric: tuple[str, str] = ("gpu", "sm_util_pct"),
                 scope: ChartScope | dict | str = ALL_SCOPE, span: str = DEFAULT_SPAN, parent=None) -> None:
        super().__init__(parent)
        self.state = state
        # Not "self.metric": that would shadow QWidget.metric(), which Qt calls while painting.
        self.chart_metric: Metric = METRIC_BY_KEY.get(metric, METRICS[0])
        # ValueError for a scope this version cannot read (ChartsPanel.restore skips it)
        self.scope: ChartScope = scope if isinstance(scope, ChartScope) else ChartScope.from_json(scope)
        self.curves: dict[SeriesKey, Curve] = {}
        self._cache: dict[SeriesKey, tuple[np.ndarray, np.ndarray]] = {}
        self._drawn_revision = -1
        self._drawn_at = -math.inf
        self._computed_at = -math.inf
        self._series_count = 0  # series the last recompute covered (sets the recompute cadence)
        self._recompute_cost_s = 0.0  # wall time of the last recompute
        self._band_cache: BandCache | None = None  # "all" of many series: the band, kept incrementally
        self._band_cache_for: tuple[str, str] = ("", "")
        self._keys_cache: tuple[tuple, list[SeriesKey]] | None = None  # series_keys of node/GPU metrics
        self._scope_structure = -1
        self._scopes_at = -math.inf
        self._legend_keys: list[SeriesKey] = []
        self.history = None  # a gui.sources.history_fetch.HistoryFetcher when a Prometheus URL is set
        self._history_token = 0

        self.metric_box = QComboBox()
        for m in METRICS:
            self.metric_box.addItem(f"{m.label}", (m.scope, m.name))
        self.metric_box.setCurrentIndex(METRICS.index(self.chart_metric))
        self.metric_box.setToolTip("What to plot")
        self.scope_box = _ScopeBox(self._refill_scopes_if_stale)
        self.scope_box.setToolTip("Which nodes, GPUs or jobs")
        self.span_box = QComboBox()
        self.span_box.addItems(list(SPANS_S))
        self.span_box.setCurrentText(span if span in SPANS_S else DEFAULT_SPAN)
        self.span_box.setToolTip("Time window")
        self.pause_btn = QToolButton()
        self.pause_btn.setText("Pause")
        self.pause_btn.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_MediaPause))
        self.pause_btn.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.pause_btn.setCheckable(True)
        self.pause_btn.setToolTip("Stop scrolling to look at a moment (dragging or zooming the plot pauses too)")
        self.close_btn = QToolButton()
        self.close_btn.setText("✕")
        self.close_btn.setToolTip("Remove this chart")
        self.close_btn.clicked.connect(lambda: self.closed.emit(self))
        head = QHBoxLayout()
        head.setContentsMargins(0, 0, 0, 0)
        # The dock may be narrow: let the pickers shrink (eliding their text) rather than push
        # the Pause button and the plot's right edge out of view.
        for w, chars in ((self.metric_box, 10), (self.scope_box, 8), (self.span_box, 4)):
            w.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            w.setMinimumContentsLength(chars)
            head.addWidget(w, 1 if w is not self.span_box else 0)
        head.addStretch(1)
        head.addWidget(self.pause_btn)
        head.addWidget(self.close_btn)

        self.plot = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem(orientation="bottom")})
        pal = self.palette()
        self.plot.setBackground(pal.color(QPalette.ColorRole.Base))
        pi = self.plot.getPlotItem()
        pi.setClipToView(True)
        pi.getViewBox().disableAutoRange(axis="x")  # the chart sets the time window itself
        pi.showGrid(x=False, y=True, alpha=0.12)  # an x grid costs as much to paint as 64 curves
        pi.setMenuEnabled(False)
        pi.hideButtons()
        # The legend sits below the plot, not over the data; click an entry to hide its curve.
        self.legend = ChartLegend()
        fg = pal.color(QPalette.ColorRole.Text)
        for ax in ("left", "bottom"):
            pi.getAxis(ax).setTextPen(fg)
            pi.getAxis(ax).setPen(pal.color(QPalette.ColorRole.Mid))
        pi.getViewBox().sigRangeChangedManually.connect(lambda *_: self.pause_btn.setChecked(True))
        self.hover_line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(pal.color(QPalette.ColorRole.Mid), width=1))
        self.hover_line.setVisible(False)
        self.plot.addItem(self.hover_line, ignoreBounds=True)
        # The hover read-out floats over the plot (it is no part of the layout, so showing it
        # never resizes the plot) and goes away when the mouse leaves.
        self.readout = QLabel(self.plot)
        self.readout.setTextFormat(Qt.TextFormat.RichText)
        self.readout.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.readout.setAutoFillBackground(True)
        self.readout.setFrameShape(QFrame.Shape.StyledPanel)
        self.readout.setBackgroundRole(QPalette.ColorRole.ToolTipBase)
        self.readout.setForegroundRole(QPalette.ColorRole.ToolTipText)
        self.readout.setMargin(3)
        self.readout.hide()
        self.plot.scene().sigMouseMoved.connect(self._on_hover)
        self.plot.installEventFilter(self)
        self.plot.viewport().installEventFilter(self)
        self.curve_set = CurveSet()
        self.plot.addItem(self.curve_set)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(2)
        lay.addLayout(head)
        lay.addWidget(self.plot, 1)
        # Says where a long span's data comes from, or why it stops at the app's hour.
        self.notice = QLabel()
        self.notice.setWordWrap(True)
        self.notice.setVisible(False)
        lay.addWidget(self.notice)
        lay.addWidget(self.legend)

        self.metric_box.currentIndexChanged.connect(self._on_metric)
        self.scope_box.currentIndexChanged.connect(self._on_scope)
        self.span_box.currentIndexChanged.connect(lambda *_: self.invalidate())
        self.pause_btn.toggled.connect(self._on_pause)
        self._fill_scopes()
        self._apply_axis_label()

    # ---- settings ----
    def settings(self) -> dict:
        return {"metric": [self.chart_metric.scope, self.chart_metric.name], "scope": self.scope.to_json(),
                "span": self.span_box.currentText()}

    def _on_metric(self, i: int) -> None:
        self.chart_metric = METRIC_BY_KEY[tuple(self.metric_box.itemData(i))]
        self.scope = ChartScope()
        self._fill_scopes()
        self._apply_axis_label()
        self._clear_curves()
        self.invalidate()

    def _on_scope(self, i: int) -> None:
        data = self.scope_box.itemData(i)
        if isinstance(data, ChartScope) and data != self.scope:
            self.scope = data
            self._apply_axis_label()
            self._clear_curves()
            self.invalidate()

    def _on_pause(self, paused: bool) -> None:
        self.pause_btn.setText("Follow" if paused else "Pause")
        self.pause_btn.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_MediaPlay if paused else QStyle.StandardPixmap.SP_MediaPause))
        if not paused:
            self.invalidate()

    def _apply_axis_label(self) -> None:
        # Units that take SI prefixes are given as units (MB/s); others go in the label text.
        # The metric box names the metric in full; the axis has the height of a short chart.
        unit, label = self.chart_metric.unit, self.chart_metric.label.split(" (")[0]
        if self.scope.kind == "group" and self.chart_metric.name == POLICY_METRIC:
            label = "Policy lag (versions)"  # a group chart draws how far each role lags the newest
        elif self.scope.kind == "group" and self.chart_metric.name == "throughput" and self.scope.node:
            unit = role_unit(self.state.nodes, self.scope.item, self.scope.node) or unit
            label = f"{self.scope.node} throughput"
        if unit in ("B", "B/s", "W"):
            self.plot.getPlotItem().setLabel("left", label, units=unit)
        else:
            self.plot.getPlotItem().setLabel("left", label + (f" ({unit})" if unit else ""))
        if self.chart_metric.unit == "%":
            self.plot.getPlotItem().setYRange(0, 100, padding=0.02)
            self.plot.getPlotItem().enableAutoRange(axis="y", enable=False)
        else:
            self.plot.getPlotItem().enableAutoRange(axis="y", enable=True)

    def _refill_scopes_if_stale(self) -> None:
        if self._scope_structure != self.state.structure_revision:
            self._fill_scopes()

    def _fill_scopes(self) -> None:
        self._scope_structure = self.state.structure_revision
        self._scopes_at = time.monotonic()
        box = self.scope_box
        box.blockSignals(True)
        box.clear()
        kind = self.chart_metric.scope
        box.addItem({"node": "All nodes", "gpu": "All GPUs", "job": "All jobs"}[kind], ChartScope())
        for key, node in self.state.nodes.items():
            box.addItem(f"{key}" + (" — all GPUs" if kind == "gpu" else " — all jobs" if kind == "job" else ""),
                        ChartScope("node", key))
            if kind == "gpu" and node.inventory:
                for g in node.inventory.gpus:
                    box.addItem(f"{key} GPU{g.index}", ChartScope("gpu", key, str(g.index)))
            if kind == "job":
                for j in self.state.visible_jobs(key):
                    box.addItem(f"  {j.name or j.id} ({j.id})", ChartScope("job", key, j.id))
        if kind == "job":  # groups: their ranks summed, all roles or one
            for gid, (name, roles) in sorted(group_ids(self.state.nodes).items()):
                box.addItem(f"Group {name} ({gid}) — per role" if len(roles) > 1 else f"Group {name} ({gid})",
                            ChartScope("group", "", gid))
                for role in roles if len(roles) > 1 else ():
                    box.addItem(f"Group {name} — {role}", ChartScope("group", role, gid))
        # Compared in Python: a ChartScope in a QVariant has no Qt equality for findData.
        i = next((n for n in range(box.count()) if box.itemData(n) == self.scope), -1)
        if i < 0:
            sc = self.scope
            text = (f"Group {sc.item}" + (f" — {sc.node}" if sc.node else "") if sc.kind == "group"
                    else f"{sc.node}{' GPU' + sc.item if sc.kind == 'gpu' else ' ' + sc.item if sc.item else ''}")
            box.addItem(f"{text} (gone)", sc)
            i = box.count() - 1
        box.setCurrentIndex(i)
        box.blockSignals(False)

    # ---- drawing ----
    def series_keys(self, limit: int | None = MAX_CURVES) -> list[SeriesKey]:
        kind, name = self.chart_metric.scope, self.chart_metric.name
        sc = self.scope
        # Node and GPU series change only with the nodes and their inventories (not with the
        # jobs, which come and go every second at 1,000 nodes): 8,000 GPU keys cost ~13 ms to
        # list. Jobs' are listed each time (finished jobs fade by the clock).
        cache_for = (self.state.nodes_revision, kind, name, sc, limit)
        if kind != "job" and self._keys_cache is not None and self._keys_cache[0] == cache_for:
            return self._keys_cache[1]
        out: list[SeriesKey] = []
        if sc.kind == "group":  # the ranks' own series (the chart draws their sums: _group)
            return [(k, j.id, name) for k, j, m in live_ranks(self.state.nodes, sc.item)
                    if not sc.node or m.role == sc.node][:limit]
        for key, node in self.state.nodes.items():
            if sc.kind != "all" and sc.node != key:
                continue
            if kind == "node":
                out.append((key, "", name))
            elif kind == "gpu":
                gpus = [g.index for g in node.inventory.gpus] if node.inventory else []
                if sc.kind == "gpu":
                    gpus = [int(sc.item)]
                out.extend((key, gpu_scope(i), name) for i in gpus)
            else:
                jobs = [j.id for j in self.state.visible_jobs(key)]
                if sc.kind == "job":
                    jobs = [sc.item]
                out.extend((key, j, name) for j in jobs)
        out = out[:limit]
        if kind != "job":
            self._keys_cache = (cache_for, out)
        return out

    def band_mode(self, keys: list[SeriesKey]) -> bool:
        """"All GPUs/nodes/jobs" of a big cluster: drawn as a quantile band plus the top-k outliers."""
        return self.scope.kind == "all" and len(keys) > BAND_MIN_SERIES

    def _band(self, keys: list[SeriesKey], t0: float, t1: float) -> tuple[list[SeriesKey], dict, dict]:
        """min/p50/p95/max over every series per time bin, and the BAND_TOP_K series with the
        highest mean, each as a (t, v) curve keyed ("", "band:NAME", metric) or by its own key.
        Kept incrementally by a gui.band.BandCache (only new points are binned)."""
        m = self.chart_metric
        if self._band_cache is None or self._band_cache_for != (m.scope, m.name):
            self._band_cache, self._band_cache_for = BandCache(smoothed=m.smoothed), (m.scope, m.name)
        width = bin_width(SPANS_S[self.span_box.currentText()], t0, t1)
        band = self._band_cache.update(self.state.series, keys, t0, t1, width)
        data: dict = {}
        stats: dict = {}
        self._band_labels: dict[SeriesKey, str] = {}
        out: list[SeriesKey] = []
        if not band.t.size:
            return out, data, stats

        def add(k: SeriesKey, v: np.ndarray, label: str) -> None:
            fin = v[np.isfinite(v)]
            data[k] = (band.t, v)
            stats[k] = (fin.size == v.size, float(fin.min()) if fin.size else math.nan, float(fin.max()) if fin.size else math.nan)
            self._band_labels[k] = label
            out.append(k)

        for name, v in band.lines.items():
            add(("", f"band:{name}", m.name), v, f"{name} of {band.n_series:,} {BAND_NOUNS.get(m.scope, 'series')}")
        for rank, (k, v) in enumerate(band.top, 1):
            add(k, v, f"top {rank}: {k[0]} {k[1].upper()}")
        return out, data, stats

    def _group(self, t0: float, t1: float, bins: int) -> tuple[list[SeriesKey], dict, dict]:
        """The curves of a group scope (gui/groups.py: sums over ranks per role, policy lag),
        keyed ("", "group:ID:PART", metric) and labelled like the band's curves."""
        sc, name = self.scope, self.chart_metric.name
        data: dict = {}
        stats: dict = {}
        self._band_labels = {}
        out: list[SeriesKey] = []
        for suffix, label, t, v in group_curves(self.state.nodes, self.state.series, sc.item, name, sc.node,
                                                t0, t1, bins, self.chart_metric.smoothed):
            k = ("", f"group:{sc.item}:{suffix}", name)
            data[k] = (t, v)
            stats[k] = (True, float(v.min()), float(v.max()))
            self._band_labels[k] = label
            out.append(k)
        return out, data, stats

    def _pen(self, k: SeriesKey) -> QPen:
        """A series' pen: the band's own styles, a job's colour (as on the map and in the
        table), else the next series colour."""
        if k[0] == "" and k[1].startswith("band:"):
            colour, width, style = BAND_PENS[k[1][5:]]
            return pg.mkPen(colour, width=width, style=style)
        if k[0] == "" and k[1].startswith("group:"):
            # Per role: the group's own colour for the first, then the series colours; wider,
            # a group chart has a handful of lines.
            keys = [c for c in self._band_labels if c[1].startswith("group:")]
            i = keys.index(k) if k in keys else 0
            colour = job_colour(self.scope.item) if i == 0 else series_colour(i + 2)
            return pg.mkPen(colour, width=2, style=Qt.PenStyle.DashLine if k[1].endswith(":all") else Qt.PenStyle.SolidLine)
        if self.chart_metric.scope == "job":
            node = self.state.nodes.get(k[0])
            j = self.state.live_hop(k[1]) if k[0] == "" else node.jobs.get(k[1]) if node is not None else None
            if j is not None:
                return pg.mkPen(job_colour(job_identity(j)), width=1)
        # A 1-px cosmetic pen keeps Qt on its fast line path (wider pens cost 5-10x).
        return pg.mkPen(series_colour(len(self.curves)), width=1)

    def _label(self, k: SeriesKey) -> str:
        node, scope, _ = k
        if k in getattr(self, "_band_labels", {}):
            return self._band_labels[k]
        if self.chart_metric.scope == "node":
            return node
        if self.chart_metric.scope == "gpu":
            return f"{node} {scope.upper()}"
        if node == "":  # a job's curve across its hops: named by where it runs now
            j = self.state.live_hop(scope)
            return f"{j.name} ({j.id})" if j is not None and j.name else (j.id if j is not None else scope)
        j = self.state.nodes[node].jobs.get(scope) if node in self.state.nodes else None
        return f"{j.name} ({scope})" if j is not None and j.name else scope

    def _clear_curves(self) -> None:
        self.legend.set_curves([], 0)
        self.curves.clear()
        self._cache.clear()
        self._legend_keys = []
        self.curve_set.set_curves([])

    def invalidate(self) -> None:
        self._drawn_revision = -1

    def heavy(self) -> bool:
        """Whether a recompute of this chart is one of the costly ones (a band over many series)."""
        return self._series_count > BAND_MIN_SERIES

    def redraw(self, now_s: float, force: bool = False, defer: bool = False) -> bool:
        """Draw if the data changed or the window moved; return whether it drew. ``defer``:
        this frame already carries a costly step, so a heavy recompute (or a long scope list's
        refill) waits for a later frame; the window still scrolls."""
        if not self.isVisible() and not force:
            return False
        if self._scope_structure != self.state.structure_revision:
            if self.scope_box.count() <= SCOPES_MANY:
                self._fill_scopes()
            elif self.scope.kind != "all" and not defer and not 0 <= time.monotonic() - self._scopes_at < SCOPES_REFILL_S:
                self._fill_scopes()  # a long list, but its item may be gone: say so within seconds
            # else: a long list (30-100 ms to refill) showing "all" is refilled when it opens
        paused = self.pause_btn.isChecked()
        changed = self.state.revision != self._drawn_revision
        # Many series: new data is read at most every RECOMPUTE_MIN_S, the window scrolls between.
        min_s = next(s for n, s in RECOMPUTE_MIN_S if self._series_count <= n)
        if self._series_count > BAND_MIN_SERIES:
            min_s = max(min_s, RECOMPUTE_COST_FACTOR * self._recompute_cost_s)
        if changed and not force and not paused and (0 <= now_s - self._computed_at < min_s or (defer and self.heavy())):
            changed = False
        span = SPANS_S[self.span_box.currentText()]
        # With no new data, scroll only when the window moved by about a pixel.
        scroll_s = max(SCROLL_REDRAW_S, SCROLL_PIXELS * span / max(1, self.plot.width()))
        if not force and ((paused and not changed) or (not changed and now_s - self._drawn_at < scroll_s)):
            return False
        vb = self.plot.getPlotItem().getViewBox()
        if not force and not changed and not paused and now_s - self._computed_at < RECOMPUTE_IDLE_S:
            # Nothing new: slide the window; the curves already hold the data.
            self._drawn_at = now_s
            (t0, t1), _ = vb.viewRange()
            vb.setXRange(t0 + (now_s - t1), now_s, padding=0)
            return True
        self._drawn_revision = self.state.revision
        self._drawn_at = self._computed_at = now_s
        started = time.perf_counter()
        try:
            return self._recompute(now_s, paused, span, vb)
        finally:
            self._recompute_cost_s = time.perf_counter() - started

    def _recompute(self, now_s: float, paused: bool, span: float, vb) -> bool:
        """Re-read the rings for the window ending at ``now_s`` and set every curve."""
        all_keys = self.series_keys(limit=None)
        self._series_count = len(all_keys)
        band = self.band_mode(all_keys)
        keys = all_keys[:MAX_CURVES]
        if paused:
            (t0, t1), _ = vb.viewRange()
        else:
            t0, t1 = now_s - span, now_s
            first = min((self._first_time(k) for k in keys), default=None)
            if first is not None and math.isfinite(first) and first > t0:  # inf: no samples yet
                # A young session: start at its first sample and grow to the right until the
                # span is full, rather than a strip of data squeezed against the right edge.
                t0 = first
                t1 = max(now_s, first + min(span, MIN_WINDOW_S))
        # One min/max pair per two pixel columns (four when curves crowd the plot, where finer
        # detail is lost under the neighbours anyway): the envelope looks the same, far fewer points.
        px_per_bin = 2 if len(keys) <= CROWDED_CURVES else 4
        bins = max(25, (int(vb.width()) or 600) // px_per_bin)
        data: dict[SeriesKey, tuple[np.ndarray, np.ndarray]] = {}
        # The curves of one node share its time ring: cut and decimate them together.
        by_node: dict[str, list[SeriesKey]] = {}
        stats: dict[SeriesKey, tuple[bool, float, float]] = {}
        for k in keys:
            by_node.setdefault(k[0], []).append(k)
        hist = self._long_history(t0, t1) if span > self.state.series.history_s and not paused else None
        if span <= self.state.series.history_s:
            self._say("")
        if hist is not None:  # Prometheus answered for this window: draw its series
            band, by_node = False, {}
            keys = list(hist)[:MAX_CURVES]
            for k in keys:
                t, v = data[k] = hist[k]
                stats[k] = (bool(np.isfinite(v).all()), float(np.nanmin(v)) if v.size else math.nan,
                            float(np.nanmax(v)) if v.size else math.nan)
        group = self.scope.kind == "group" and hist is None
        if band:
            keys, data, stats = self._band(all_keys, t0, t1)
            by_node = {}
        elif group:
            keys, data, stats = self._group(t0, t1, bins)
            by_node = {}
        for node, nkeys in by_node.items():
            ns = self.state.series.nodes.get(node)
            if ns is None:
                for k in nkeys:
                    data[k] = (np.empty(0), np.empty(0))
                continue
            if self.chart_metric.smoothed:
                # A rate is drawn as its mean over RATE_WINDOW_S (as the jobs table shows it):
                # read a window's worth before t0 so the left edge is smoothed too.
                t, rows = ns.get_rows([(k[1], k[2]) for k in nkeys], t0 - RATE_WINDOW_S, t1)
                rows = smooth_rate_rows(t, rows)
                i0 = max(0, int(np.searchsorted(t, t0, side="left")) - 1)
                t, rows = t[i0:], rows[:, i0:]
            else:
                t, rows = ns.get_rows([(k[1], k[2]) for k in nkeys], t0, t1)
            t, rows = decimate_minmax_rows(t, rows, bins)
            if rows.shape[1]:
                finite = np.isfinite(rows).all(axis=1).tolist()
                lo, hi = np.fmin.reduce(rows, axis=1).tolist(), np.fmax.reduce(rows, axis=1).tolist()
            else:
                finite, lo, hi = [True] * len(nkeys), [math.nan] * len(nkeys), [math.nan] * len(nkeys)
            for k, v, f, a, b in zip(nkeys, rows, finite, lo, hi):
                data[k] = (t, v)
                stats[k] = (f, a, b)
        if not band and not group:
            self._band_labels = {}
            keys, stats = self._merge_hops(keys, data, stats)
        wanted = set(keys)
        for k in [k for k in self.curves if k not in wanted]:
            self.curves.pop(k)
        self._cache = {k: data[k] for k in keys}
        for k in keys:
            t, v = data[k]
            item = self.curves.get(k)
            if item is None:
                item = self.curves[k] = Curve(self._pen(k), self._label(k))
                item.visibleChanged.connect(self.curve_set.visibility_changed)
            item.setData(t, v, *stats.get(k, (None, None, None)))
        self.curve_set.set_curves([self.curves[k] for k in keys])
        self._sync_legend(keys)
        if not paused and not self.follows_leader:
            vb.setXRange(t0, t1, padding=0)
        return True

    def _long_history(self, t0: float, t1: float) -> dict[SeriesKey, tuple[np.ndarray, np.ndarray]] | None:
        """This chart's series over [t0, t1] from Prometheus, keyed like the app's own; None
        (and a notice saying why) while it loads, without a Prometheus URL, or on failure."""
        if self.history is None:
            self._say(NO_HISTORY_NOTICE)
            return None
        m, sc = self.chart_metric, self.scope
        daemon_name = {k: n.inventory.node for k, n in self.state.nodes.items() if n.inventory is not None}
        node = daemon_name.get(sc.node, sc.node) if sc.kind != "all" else None
        job = sc.item if sc.kind == "job" else None
        if m.name == "throughput":
            self._say("Job throughput beyond the last hour: pick a named rate (Samples/s, Tokens/s…)")
            return None
        token, series = self.history.request(m.scope, m.name, t0, t1, node=node, job_id=job)
        if series is None:
            self._history_token = token
            self._say(f"Loading {self.span_box.currentText()} from Prometheus at {self.history.url}…")
            return None
        key_of = {name: key for key, name in daemon_name.items()}
        out = {}
        for s in series:
            node_name, scope, name = s.key
            if sc.kind == "gpu" and scope != gpu_scope(int(sc.item)):
                continue
            out[(key_of.get(node_name, node_name), scope, name)] = (s.times, s.values)
        self._say(f"{self.span_box.currentText()} from Prometheus at {self.history.url}" if out else
                  f"Prometheus at {self.history.url} has no {m.label} for this scope in the last "
                  f"{self.span_box.currentText()}")
        return out

    def history_answered(self, token: int, _series: object) -> None:
        """A fetch finished: redraw (the answer is in the fetcher's cache now)."""
        self.invalidate()

    def history_failed(self, token: int, message: str) -> None:
        if token == self._history_token:
            self._say(message)

    def _say(self, text: str) -> None:
        if self.notice.text() != text:
            self.notice.setText(text)
        self.notice.setVisible(bool(text))

    def _curve_key(self, k: SeriesKey) -> SeriesKey:
        """The curve a series is drawn in. A job keeps one curve (one line, one colour) across
        migrations: its hops' series, on different nodes, are keyed by its first id."""
        node, scope, name = k
        if self.chart_metric.scope != "job" or node not in self.state.nodes:
            return k
        j = self.state.nodes[node].jobs.get(scope)
        return ("", job_identity(j), name) if j is not None else k

    def _merge_hops(self, keys: list[SeriesKey], data: dict, stats: dict) -> tuple[list[SeriesKey], dict]:
        """Join the series of one job's hops (in time order) into its identity's curve."""
        groups: dict[SeriesKey, list[SeriesKey]] = {}
        for k in keys:
            groups.setdefault(self._curve_key(k), []).append(k)
        out_stats: dict[SeriesKey, tuple] = {}
        for ck, ks in groups.items():
            if len(ks) == 1:
                data[ck] = data[ks[0]]
                if ks[0] in stats:
                    out_stats[ck] = stats[ks[0]]
                continue
            t = np.concatenate([data[k][0] for k in ks])
            v = np.concatenate([np.asarray(data[k][1], dtype=np.float64) for k in ks])
            order = np.argsort(t, kind="stable")
            data[ck] = (t[order], v[order])
            parts = [stats[k] for k in ks if k in stats]
            if parts:
                los = [p[1] for p in parts if p[1] is not None and not math.isnan(p[1])]
                his = [p[2] for p in parts if p[2] is not None and not math.isnan(p[2])]
                out_stats[ck] = (all(p[0] for p in parts), min(los) if los else math.nan, max(his) if his else math.nan)
        return list(groups), out_stats

    def _sync_legend(self, keys: list[SeriesKey]) -> None:
        want = keys[:LEGEND_MAX]
        if want != self._legend_keys:
            self.legend.set_curves([self.curves[k] for k in want], len(keys))
            self._legend_keys = list(want)
        unit = self.chart_metric.unit
        texts = []
        for k in want:
            _t, v = self._cache.get(k, (np.empty(0), np.empty(0)))
            fin = v[np.isfinite(v)] if v.size else v
            if fin.size == 0:
                texts.append(fmt.DASH)
                continue
            last = fmt.value(float(fin[-1]), unit)
            texts.append(f"{last}  ({fmt.value(float(fin.min()), unit)} – {fmt.value(float(fin.max()), unit)})")
        self.legend.set_stats(texts)

    def _first_time(self, k: SeriesKey) -> float:
        if k[0] == "" and k[1].startswith("group:"):
            return group_first_time(self.state.nodes, self.state.series, self.scope.item)
        ns = self.state.series.nodes.get(k[0])
        t = None if ns is None else ns.first_time()
        return math.inf if t is None else t

    follows_leader = False  # set by ChartsPanel when time axes are linked: the first chart moves the window

    def eventFilter(self, obj, ev) -> bool:
        if ev.type() == QEvent.Type.Leave:
            self.hide_hover()
            self.hovered.emit(None)
        return super().eventFilter(obj, ev)

    def hide_hover(self) -> None:
        self.hover_line.setVisible(False)
        self.readout.hide()

    def _on_hover(self, pos) -> None:
        vb = self.plot.getPlotItem().getViewBox()
        if not self.plot.sceneBoundingRect().contains(pos) or not self.curves:
            self.hide_hover()
            self.hovered.emit(None)
            return
        x = vb.mapSceneToView(pos).x()
        self.show_hover_at(x)
        self.hovered.emit(x)

    def show_hover_at(self, x: float | None) -> None:
        """The crosshair and the read-out of every shown series at time ``x`` (None hides them).
        Linked charts call this with the time under the mouse in another chart."""
        if x is None or not self.curves:
            self.hide_hover()
            return
        vb = self.plot.getPlotItem().getViewBox()
        self.hover_line.setPos(x)
        self.hover_line.setVisible(True)
        parts = []
        for k, (t, v) in list(self._cache.items()):
            c = self.curves.get(k)
            if t.size == 0 or c is None or not c.isVisible():
                continue
            i = int(np.clip(np.searchsorted(t, x), 0, t.size - 1))
            colour = c.opts["pen"].color().name()
            parts.append(f"<span style='color:{colour}'>■</span>&nbsp;{self._label(k)}:&nbsp;<b>{fmt.value(float(v[i]), self.chart_metric.unit)}</b>")
        stamp = time.strftime("%H:%M:%S", time.localtime(x)) if x > 0 else ""
        # Every series, in columns of READOUT_MAX_ROWS lines (a table: Qt's rich text has no flow).
        line_h = self.readout.fontMetrics().height() + 2
        rows = max(1, min(READOUT_MAX_ROWS, (self.plot.height() - 30) // line_h - 1))
        cols = [parts[i:i + rows] for i in range(0, len(parts), rows)] or [[]]
        cells = "".join("<td style='padding-right:8px'>" + "<br>".join(col) + "</td>" for col in cols)
        self.readout.setText(f"<b>{stamp}</b><table><tr>{cells}</tr></table>")
        self.readout.adjustSize()
        w = min(self.readout.width(), self.plot.width() - 8)
        h = min(self.readout.height(), self.plot.height() - 8)
        self.readout.resize(w, h)
        # Put it on the side away from the crosshair, so it never covers the point being read.
        px = vb.mapViewToScene(pg.Point(x, 0)).x()
        left = px > self.plot.width() / 2
        self.readout.move(40 if left else max(4, self.plot.width() - w - 4), 4)
        self.readout.show()
        self.readout.raise_()


class ChartsPanel(QWidget):
    """A column of charts with an "add chart" button; choices persist through settings()."""

    DEFAULT = (  # a tuple: shared by every panel, never changed
        {"metric": ["gpu", "sm_util_pct"], "scope": "*", "span": DEFAULT_SPAN},
        {"metric": ["job", "app:samples_per_s"], "scope": "*", "span": DEFAULT_SPAN},
        {"metric": ["job", "app:tokens_per_s"], "scope": "*", "span": DEFAULT_SPAN},
    )

    def __init__(self, state: ClusterState, parent=None) -> None:
        super().__init__(parent)
        self.state = state
        self.charts: list[Chart] = []
        self._wired: Chart | None = None
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setChildrenCollapsible(False)
        add = QToolButton()
        add.setText("Add chart")
        add.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        add.clicked.connect(lambda: self.add_chart())
        self.add_btn = add
        self.link_btn = QToolButton()
        self.link_btn.setText("Link time axes")
        self.link_btn.setCheckable(True)
        self.link_btn.setToolTip("One time window and one crosshair for every chart: pan, zoom or hover one, all follow")
        self.link_btn.toggled.connect(lambda *_: self._relink())
        top = QHBoxLayout()
        top.setContentsMargins(4, 0, 4, 0)
        top.addWidget(self.link_btn)
        top.addStretch(1)
        top.addWidget(add)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        # The charts take the dock's width, whatever their own minimum: with horizontal
        # scrolling off, a wider splitter would be clipped (Pause button and axis cut off).
        self.splitter.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        scroll.setWidget(self.splitter)
        lay.addWidget(scroll, 1)

    def add_chart(self, metric=("gpu", "sm_util_pct"), scope: ChartScope | dict | str = ALL_SCOPE,
                  span=DEFAULT_SPAN, beside: Chart | None = None) -> Chart:
        """A new chart at the bottom, or to the right of ``beside`` (in one row with it)."""
        chart = Chart(self.state, tuple(metric), scope, span)
        chart.setMinimumHeight(170)
        self._give_history(chart)
        chart.closed.connect(self.remove_chart)
        chart.hovered.connect(lambda x, c=chart: self._on_hovered(c, x))
        self.charts.append(chart)
        if beside is not None and beside in self.charts:
            row = beside.parentWidget()
            if row is self.splitter:  # beside stands alone: it becomes the first of a row
                row = QSplitter(Qt.Orientation.Horizontal)
                row.setChildrenCollapsible(False)
                # Insert the row where beside is, then move beside into it (replaceWidget would
                # hand beside back to Python unowned, and it would be deleted).
                self.splitter.insertWidget(self.splitter.indexOf(beside), row)
                row.addWidget(beside)
            row.addWidget(chart)
        else:
            self.splitter.addWidget(chart)
        self._relink()
        return chart

    def set_history(self, fetcher) -> None:
        """Charts read spans past the app's hour from ``fetcher`` (a HistoryFetcher)."""
        self.history = fetcher
        for chart in self.charts:
            self._give_history(chart)

    def _give_history(self, chart: Chart) -> None:
        fetcher = getattr(self, "history", None)
        if fetcher is None or chart.history is fetcher:
            return
        chart.history = fetcher
        fetcher.ready.connect(chart.history_answered)
        fetcher.failed.connect(chart.history_failed)
        chart.invalidate()
    def add_group_charts(self, group_id: str) -> list[Chart]:
        """A group's charts: throughput summed over its ranks, per role side by side (rollout
        tokens/s beside trainer samples/s), then queue depth beside policy lag where the ranks
        report them (``AGENTD_METRIC queue_depth=… policy_version=…``)."""
        name_roles = group_ids(self.state.nodes).get(group_id)
        if name_roles is None:
            return []
        roles = name_roles[1] if len(name_roles[1]) > 1 else ("",)
        out: list[Chart] = []
        for role in roles:
            out.append(self.add_chart(("job", "throughput"), ChartScope("group", role, group_id), beside=out[-1] if out else None))
        reported = set()
        for key, j, _m in live_ranks(self.state.nodes, group_id):
            ns = self.state.series.nodes.get(key)
            if ns is not None:
                reported.update(name for scope, name in ns.values if scope == j.id)
        first = None
        for metric in ("app:queue_depth", POLICY_METRIC):
            if metric in reported:
                c = self.add_chart(("job", metric), ChartScope("group", "", group_id), beside=first)
                first = first or c
                out.append(c)
        return out

    def remove_chart(self, chart: Chart) -> None:
        if chart in self.charts:
            self.charts.remove(chart)
            row = chart.parentWidget()
            chart.setParent(None)
            chart.deleteLater()
            if row is not None and row is not self.splitter and isinstance(row, QSplitter) and row.count() == 0:
                row.setParent(None)
                row.deleteLater()
            self._relink()

    @property
    def linked(self) -> bool:
        return self.link_btn.isChecked()

    def _relink(self) -> None:
        """Linked: every chart shows the first chart's time window (its span, its pan and
        zoom) and its crosshair; unlinked, each chart keeps its own."""
        leader = self.charts[0] if self.charts else None
        for c in self.charts:
            vb = c.plot.getPlotItem().getViewBox()
            follow = self.linked and c is not leader
            vb.setXLink(leader.plot.getPlotItem().getViewBox() if follow else None)
            c.follows_leader = follow
            c.span_box.setEnabled(not follow)
            if follow:
                c.span_box.setCurrentText(leader.span_box.currentText())
                c.pause_btn.setChecked(leader.pause_btn.isChecked())
            c.invalidate()
        if leader is not None and leader is not self._wired:
            # Each chart is wired once when it becomes the leader; a former leader is gone.
            leader.span_box.currentTextChanged.connect(self._leader_span)
            leader.pause_btn.toggled.connect(self._leader_pause)
            self._wired = leader

    def _leader_span(self, text: str) -> None:
        if self.linked:
            for c in self.charts[1:]:
                c.span_box.setCurrentText(text)

    def _leader_pause(self, paused: bool) -> None:
        if self.linked:
            for c in self.charts[1:]:
                c.pause_btn.setChecked(paused)

    def _on_hovered(self, source: Chart, x) -> None:
        if self.linked:
            for c in self.charts:
                if c is not source:
                    c.show_hover_at(x)

    def settings(self) -> list[dict]:
        return [c.settings() for c in self.charts]

    def restore(self, choices: list[dict] | None) -> None:
        for c in list(self.charts):
            self.remove_chart(c)
        for ch in choices or self.DEFAULT:
            try:
                self.add_chart(tuple(ch["metric"]), ch.get("scope", "*"), ch.get("span", DEFAULT_SPAN))
            except (KeyError, TypeError, ValueError):
                continue
        if not self.charts:
            for ch in self.DEFAULT:
                self.add_chart(tuple(ch["metric"]), ch["scope"], ch["span"])

    def redraw(self, now_s: float, defer_heavy: bool = False) -> int:
        """Redraw the charts; at most one heavy recompute per frame (none when ``defer_heavy``:
        the frame already refreshed the views), the others wait a frame or so. Each costs
        10-30 ms at 1,000 nodes: three in one frame was the frame p95."""
        drawn = 0
        for c in self.charts:
            before = c._computed_at
            drawn += c.redraw(now_s, defer=defer_heavy)
            defer_heavy = defer_heavy or (c._computed_at != before and c.heavy())
        return drawn
