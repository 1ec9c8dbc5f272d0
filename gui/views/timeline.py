"""Replay timeline: play/pause, speed, step, jump to a time, event markers and gaps.

The widget talks to a source with the ReplaySource timeline API (play, pause, set_speed, seek,
step, time_range, markers, gaps and their signals); it never reads the recording itself.
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import QDateTime, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QKeySequence, QPainter, QPen, QPolygonF, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QDateTimeEdit,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QStyle,
    QToolButton,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

SPEEDS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0)
MARKER_HIT_PX = 5  # how close a click or hover must be to a marker to mean that marker
BAR_HEIGHT = 34
MARKER_COLOURS = {"action": "#2b6cb0", "job.state": "#2f855a", "migration": "#6b46c1", "tool_call": "#319795",
                  "error": "#d0342c", "node": "#b7791f"}
FAILED_COLOUR = "#d0342c"
GAP_COLOUR = QColor(150, 150, 150, 110)
PLAYHEAD_COLOUR = "#d0342c"


def fmt_time(wall_s: float) -> str:
    """Replay time as the big label shows it: date and time to the second, local time."""
    return time.strftime("%a %Y-%m-%d  %H:%M:%S", time.localtime(wall_s))


def fmt_speed(speed: float) -> str:
    return f"{speed:g}×"


def marker_text(ev: Any) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(ev.wall_s))
    where = " ".join(x for x in (ev.node, ev.job_id) if x)
    who = f" (by {ev.actor})" if getattr(ev, "actor", "") and ev.actor not in ev.message else ""
    bad = "" if getattr(ev, "ok", True) else "⚠ "
    return f"{stamp}  {where}: {bad}{ev.message}{who}"


class TimelineBar(QWidget):
    """The recording's span as a bar: gaps shaded, events as ticks, the playhead as a line.
    A click seeks there (to the event, when it is on a marker); hovering a marker shows it."""

    seek_requested = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.start_s = self.end_s = 0.0
        self.pos_s = 0.0
        self.markers: list[Any] = []
        self.gaps: list[Any] = []
        self.setMouseTracking(True)
        self.setMinimumSize(240, BAR_HEIGHT)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Click to jump to that time; hover a marker to read its event")

    def sizeHint(self) -> QSize:
        return QSize(600, BAR_HEIGHT)

    # ---- data ----
    def set_range(self, start_s: float, end_s: float) -> None:
        self.start_s, self.end_s = start_s, end_s
        self.update()

    def set_position(self, pos_s: float) -> None:
        if pos_s != self.pos_s:
            self.pos_s = pos_s
            self.update()

    def set_markers(self, markers: list[Any]) -> None:
        self.markers = sorted(markers, key=lambda e: e.wall_s)
        self.update()

    def set_gaps(self, gaps: list[Any]) -> None:
        self.gaps = list(gaps)
        self.update()

    # ---- geometry ----
    def _track(self) -> QRectF:
        return QRectF(8, 12, max(1.0, self.width() - 16), self.height() - 18)

    def x_of(self, t: float) -> float:
        tr = self._track()
        span = self.end_s - self.start_s
        f = 0.0 if span <= 0 else (t - self.start_s) / span
        return tr.left() + min(1.0, max(0.0, f)) * tr.width()

    def t_of(self, x: float) -> float:
        tr = self._track()
        f = min(1.0, max(0.0, (x - tr.left()) / tr.width()))
        return self.start_s + f * (self.end_s - self.start_s)

    def marker_at(self, x: float) -> Any | None:
        best, best_d = None, MARKER_HIT_PX + 0.5
        for ev in self.markers:
            d = abs(self.x_of(ev.wall_s) - x)
            if d < best_d:
                best, best_d = ev, d
        return best

    # ---- painting ----
    def paintEvent(self, _ev) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        tr = self._track()
        pal = self.palette()
        p.setPen(QPen(pal.mid().color(), 1))
        p.setBrush(pal.base())
        p.drawRoundedRect(tr, 4, 4)
        if self.end_s > self.start_s:
            # played part
            played = QRectF(tr.left(), tr.top(), self.x_of(self.pos_s) - tr.left(), tr.height())
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(43, 108, 176, 45))
            p.drawRoundedRect(played, 4, 4)
            # gaps: hatched grey, where no node sent anything
            for g in self.gaps:
                x1, x2 = self.x_of(g.start_s), self.x_of(g.end_s)
                r = QRectF(x1, tr.top() + 1, max(2.0, x2 - x1), tr.height() - 2)
                p.setBrush(GAP_COLOUR)
                p.drawRect(r)
                p.setBrush(QBrush(QColor(90, 90, 90, 140), Qt.BrushStyle.BDiagPattern))
                p.drawRect(r)
            # event markers: a small triangle above the track and a tick into it
            for ev in self.markers:
                x = self.x_of(ev.wall_s)
                colour = QColor(FAILED_COLOUR if not ev.ok else MARKER_COLOURS.get(ev.kind, "#555555"))
                p.setPen(QPen(colour, 1.5))
                p.drawLine(QPointF(x, tr.top()), QPointF(x, tr.top() + tr.height() * 0.6))
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(colour)
                p.drawPolygon(QPolygonF([QPointF(x - 4, 2), QPointF(x + 4, 2), QPointF(x, 10)]))
            # playhead
            x = self.x_of(self.pos_s)
            p.setPen(QPen(QColor(PLAYHEAD_COLOUR), 2.5))
            p.drawLine(QPointF(x, tr.top() - 2), QPointF(x, tr.bottom() + 2))
        p.end()

    # ---- mouse ----
    def mousePressEvent(self, ev) -> None:
        if ev.button() != Qt.MouseButton.LeftButton or self.end_s <= self.start_s:
            return
        x = ev.position().x()
        m = self.marker_at(x)
        self.seek_requested.emit(m.wall_s if m is not None else self.t_of(x))

    def mouseMoveEvent(self, ev) -> None:
        if ev.buttons() & Qt.MouseButton.LeftButton and self.end_s > self.start_s:
            self.seek_requested.emit(self.t_of(ev.position().x()))  # scrub

    def event(self, ev) -> bool:
        if ev.type() == ev.Type.ToolTip:
            m = self.marker_at(ev.position().x() if hasattr(ev, "position") else ev.pos().x())
            if m is not None:
                QToolTip.showText(ev.globalPos(), marker_text(m), self)
            elif self.end_s > self.start_s:
                t = self.t_of(ev.pos().x())
                QToolTip.showText(ev.globalPos(), f"{fmt_time(t)} — click to jump here", self)
            return True
        return super().event(ev)


class Timeline(QWidget):
    """The timeline bar for replay: transport buttons, speed, the current time (large, with
    date), the bar itself, and a jump-to-time edit. Install with MainWindow.set_timeline()."""

    def __init__(self, source: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.source = source
        sp = QStyle.StandardPixmap
        self.btn_prev = self._button(sp.SP_MediaSkipBackward, "Previous sample (pauses) — Alt+Left", lambda: source.step(-1))
        self.btn_play = self._button(sp.SP_MediaPlay, "Play (Ctrl+Space)", self.toggle_play)
        self.btn_next = self._button(sp.SP_MediaSkipForward, "Next sample (pauses) — Alt+Right", lambda: source.step(1))
        self.btn_play.setIconSize(QSize(24, 24))
        self.speed = QComboBox()
        for s in SPEEDS:
            self.speed.addItem(fmt_speed(s), s)
        self.speed.setCurrentIndex(SPEEDS.index(1.0))
        self.speed.setToolTip("Playback speed")
        self.speed.currentIndexChanged.connect(lambda i: source.set_speed(self.speed.itemData(i)))
        self.clock = QLabel("—")
        f = QFont(self.clock.font())
        f.setPointSizeF(f.pointSizeF() * 1.6)
        f.setBold(True)
        self.clock.setFont(f)
        self.clock.setToolTip("Replay time (local time of the recording)")
        self.clock.setMinimumWidth(self.clock.fontMetrics().horizontalAdvance("Wed 2026-11-23  00:00:00") + 12)
        self.offset = QLabel("")
        self.offset.setToolTip("Time since the start of the recording / its length")
        self.bar = TimelineBar()
        self.bar.seek_requested.connect(source.seek)
        self.jump = QDateTimeEdit()
        self.jump.setDisplayFormat("yyyy-MM-dd HH:mm:ss")
        self.jump.setToolTip("Jump to this time (press Enter)")
        self.jump.setKeyboardTracking(False)
        self.jump.editingFinished.connect(self._jump)
        self.jump_label = QLabel("Jump to:")
        self.btn_jump = QToolButton()
        self.btn_jump.setText("Go")
        self.btn_jump.setToolTip("Jump to the time on the left")
        self.btn_jump.clicked.connect(self._jump)

        row = QHBoxLayout()
        row.setContentsMargins(6, 2, 6, 2)
        row.setSpacing(6)
        for w in (self.btn_prev, self.btn_play, self.btn_next, self.speed):
            row.addWidget(w)
        row.addSpacing(8)
        row.addWidget(self.clock)
        row.addWidget(self.offset)
        row.addWidget(self.bar, 1)
        row.addWidget(self.jump_label)
        row.addWidget(self.jump)
        row.addWidget(self.btn_jump)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)

        for keys, slot in (("Ctrl+Space", self.toggle_play), ("Alt+Left", lambda: source.step(-1)),
                           ("Alt+Right", lambda: source.step(1))):
            sc = QShortcut(QKeySequence(keys), self)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(slot)
        source.opened.connect(self._on_opened)
        source.position_changed.connect(self._on_position)
        source.playing_changed.connect(self._on_playing)
        source.speed_changed.connect(self._on_speed)
        source.markers_changed.connect(self.bar.set_markers)
        source.gaps_changed.connect(self.bar.set_gaps)
        self._set_enabled(False)
        rng = source.time_range()
        if rng is not None:
            self._on_opened(*rng)

    def _button(self, icon, tip: str, slot) -> QToolButton:
        b = QToolButton()
        b.setIcon(self.style().standardIcon(icon))
        b.setToolTip(tip)
        b.setAutoRaise(True)
        b.clicked.connect(slot)
        return b

    def _set_enabled(self, on: bool) -> None:
        for w in (self.btn_prev, self.btn_play, self.btn_next, self.speed, self.bar, self.jump, self.btn_jump):
            w.setEnabled(on)

    def toggle_play(self) -> None:
        if self.source.is_playing():
            self.source.pause()
        else:
            self.source.play()

    def _jump(self) -> None:
        self.source.seek(self.jump.dateTime().toMSecsSinceEpoch() / 1000.0)

    # ---- from the source ----
    def _on_opened(self, start: float, end: float) -> None:
        self.bar.set_range(start, end)
        lo = QDateTime.fromMSecsSinceEpoch(int(start * 1000))
        hi = QDateTime.fromMSecsSinceEpoch(int(end * 1000) + 999)
        self.jump.setDateTimeRange(lo, hi)
        self.jump.setDateTime(lo)
        self._set_enabled(True)
        self._on_position(self.source.now_s() or start)

    def _on_position(self, pos: float) -> None:
        self.bar.set_position(pos)
        text = fmt_time(pos)
        if self.clock.text() != text:
            self.clock.setText(text)
        if not self.jump.hasFocus():  # the jump edit shows where we are until the user edits it
            whole = int(pos)
            if int(self.jump.dateTime().toSecsSinceEpoch()) != whole:
                self.jump.blockSignals(True)
                self.jump.setDateTime(QDateTime.fromSecsSinceEpoch(whole))
                self.jump.blockSignals(False)
        rng = self.source.time_range()
        if rng is not None:
            off = f"+{_dur(pos - rng[0])} / {_dur(rng[1] - rng[0])}"
            if self.offset.text() != off:
                self.offset.setText(off)

    def _on_playing(self, on: bool) -> None:
        sp = QStyle.StandardPixmap
        self.btn_play.setIcon(self.style().standardIcon(sp.SP_MediaPause if on else sp.SP_MediaPlay))
        self.btn_play.setToolTip("Pause (Ctrl+Space)" if on else "Play (Ctrl+Space)")

    def _on_speed(self, speed: float) -> None:
        i = self.speed.findData(speed)
        if i >= 0 and i != self.speed.currentIndex():
            self.speed.blockSignals(True)
            self.speed.setCurrentIndex(i)
            self.speed.blockSignals(False)


def _dur(s: float) -> str:
    s = max(0, int(s))
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60:02d}:{rem % 60:02d}"
