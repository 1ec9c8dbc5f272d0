"""Event log: job state changes, control actions and their results, failures, link changes.

A filter bar (kind, node, job, severity, text) over a tree of events in time order. Tool-call
events of one job fold into one expandable line, so a chatty agent does not bury everything else.
"""

from __future__ import annotations

import bisect
import re
import time

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLineEdit,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from agentd.protocol.jobs import Event
from gui import fmt
from gui.state import ClusterState

MAX_LINES = 3000
FOLDED_KINDS = ("tool_call",)  # one expandable line per job
ALL = ""  # the "no filter" value of the combo boxes
SEVERITIES = (("All severities", ALL), ("Failures only", "fail"), ("Normal only", "ok"))
FAIL_COLOUR = "#d0342c"
# "1288490188 bytes", "1288490188 B", "bytes=1288490188"
_BYTES = re.compile(r"\b(\d{4,})(\s?(?:bytes|B)\b)|(\bbytes[=:]\s?)(\d{4,})\b")


def format_bytes_in(text: str) -> str:
    """Raw byte counts in a daemon message as people read them: 1288490188 bytes -> 1.2 GiB."""
    def sub(m: re.Match) -> str:
        if m.group(1) is not None:
            return fmt.human_bytes(int(m.group(1)))
        return m.group(3) + fmt.human_bytes(int(m.group(4)))
    return _BYTES.sub(sub, text)


class EventLog(QWidget):
    """Shows what is new in ``state.events`` on each refresh; failures in red.

    ``lines`` keeps the plain text of every event received (unfiltered, unfolded), for tests and
    copying; :meth:`visible_lines` is what the tree shows now."""

    def __init__(self, state: ClusterState, parent=None) -> None:
        super().__init__(parent)
        self.state = state
        self._seen = 0
        self.lines: list[str] = []
        self._events: list[Event] = []  # received, in time order
        self._times: list[float] = []
        self._groups: dict[str, QTreeWidgetItem] = {}  # job id -> folded tool-call line
        self._last_shown_s = float("-inf")

        self.kind_box = QComboBox()
        self.kind_box.addItem("All kinds", ALL)
        self.node_box = QComboBox()
        self.node_box.addItem("All nodes", ALL)
        self.severity_box = QComboBox()
        for text, value in SEVERITIES:
            self.severity_box.addItem(text, value)
        self.job_edit = QLineEdit()
        self.job_edit.setPlaceholderText("Job…")
        self.job_edit.setMinimumWidth(60)
        self.job_edit.setClearButtonEnabled(True)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search…")
        self.search.setMinimumWidth(80)
        self.search.setClearButtonEnabled(True)
        for box in (self.kind_box, self.node_box, self.severity_box):
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
            box.currentIndexChanged.connect(lambda *_: self.rebuild())
        self.job_edit.textChanged.connect(lambda *_: self.rebuild())
        self.search.textChanged.connect(lambda *_: self.rebuild())

        self.view = QTreeWidget()
        self.view.setColumnCount(4)
        self.view.setHeaderLabels(["Time", "Node", "Job", "Event"])
        self.view.setRootIsDecorated(True)
        self.view.setUniformRowHeights(True)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setAlternatingRowColors(True)
        # Time fits whole (it sits after the fold arrow); node and job get what an id needs.
        fm = self.view.fontMetrics()
        self.view.setColumnWidth(0, fm.horizontalAdvance("00:00:00") + self.view.indentation() + 14)
        for col in (1, 2):
            self.view.setColumnWidth(col, fm.horizontalAdvance("gpu-node-1") + 8)

        bar = QHBoxLayout()
        bar.setContentsMargins(2, 2, 2, 0)
        bar.setSpacing(4)
        bar.addWidget(self.search, 2)
        bar.addWidget(self.kind_box)
        bar.addWidget(self.node_box)
        bar.addWidget(self.job_edit, 1)
        bar.addWidget(self.severity_box)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(bar)
        lay.addWidget(self.view, 1)

    # ---- feeding ----
    def refresh(self) -> None:
        total = self.state.events_total
        new = min(total - self._seen, len(self.state.events))
        self._seen = total
        if new <= 0:
            return
        # Oldest first: a snapshot batch (a reconnect, a replay seek) arrives node by node.
        events = sorted(list(self.state.events)[-new:], key=lambda e: e.wall_s)
        for ev in events:
            self.lines.append(self._plain(ev))
            i = bisect.bisect_right(self._times, ev.wall_s)
            self._times.insert(i, ev.wall_s)
            self._events.insert(i, ev)
            self._offer_choice(self.kind_box, ev.kind, ev.kind)
            if ev.node:
                self._offer_choice(self.node_box, self._node_name(ev.node), ev.node)
        del self.lines[:-MAX_LINES]
        if len(self._events) > MAX_LINES:
            del self._events[:-MAX_LINES]
            del self._times[:-MAX_LINES]
        if events[0].wall_s < self._last_shown_s:
            self.rebuild()  # something older arrived: redraw in time order
            return
        bar = self.view.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 4
        for ev in events:
            if self._passes(ev):
                self._show(ev)
        if at_bottom:
            self.view.scrollToBottom()

    def reset(self) -> None:
        """Forget what was shown (the source reset, e.g. a replay seek): the next refresh
        shows only the events the new state holds."""
        self.lines.clear()
        self._events.clear()
        self._times.clear()
        self._seen = self.state.events_total - len(self.state.events)
        self.rebuild()

    def rebuild(self) -> None:
        """Redraw from the received events under the current filter."""
        self.view.clear()
        self._groups.clear()
        self._last_shown_s = float("-inf")
        for ev in self._events:
            if self._passes(ev):
                self._show(ev)
        self.view.scrollToBottom()

    # ---- filtering and drawing ----
    def _passes(self, ev: Event) -> bool:
        kind = self.kind_box.currentData()
        if kind and ev.kind != kind:
            return False
        node = self.node_box.currentData()
        if node and ev.node != node:
            return False
        sev = self.severity_box.currentData()
        if (sev == "fail" and ev.ok) or (sev == "ok" and not ev.ok):
            return False
        job = self.job_edit.text().strip().lower()
        if job and job not in ev.job_id.lower():
            return False
        text = self.search.text().strip().lower()
        if text and text not in self._plain(ev).lower():
            return False
        return True

    def _show(self, ev: Event) -> None:
        self._last_shown_s = max(self._last_shown_s, ev.wall_s)
        cols = self._columns(ev)
        if ev.kind in FOLDED_KINDS and ev.job_id:
            group = self._groups.get(ev.job_id)
            if group is None:
                group = self._groups[ev.job_id] = QTreeWidgetItem(self.view, cols)
                group.setData(0, Qt.ItemDataRole.UserRole, ev.wall_s)  # first call
            n = group.childCount() + 1
            first = group.data(0, Qt.ItemDataRole.UserRole)
            # The line stands where the first call was (time order); the range is in the tooltip.
            group.setText(0, _stamp(first))
            group.setToolTip(0, f"{_stamp(first)} – {cols[0]}")
            group.setText(3, f"{n} tool call{'s' if n != 1 else ''} (until {cols[0]}) — last: {cols[3]}")
            child = QTreeWidgetItem(group, cols)
            self._colour(child, ev)
            if not ev.ok:
                self._colour(group, ev)
            return
        item = QTreeWidgetItem(self.view, cols)
        self._colour(item, ev)

    def _colour(self, item: QTreeWidgetItem, ev: Event) -> None:
        if not ev.ok:
            for c in range(4):
                item.setForeground(c, QBrush(QColor(FAIL_COLOUR)))
        item.setToolTip(3, item.text(3))

    def _columns(self, ev: Event) -> list[str]:
        mark = "⚠ " if not ev.ok else ""
        return [_stamp(ev.wall_s), self._node_name(ev.node), ev.job_id, mark + self._message(ev)]

    def _message(self, ev: Event) -> str:
        who = f" by {ev.actor}" if ev.actor and ev.actor not in ev.message else ""
        return format_bytes_in(ev.message) + who

    def _plain(self, ev: Event) -> str:
        where = ev.job_id or self._node_name(ev.node)
        return f"{_stamp(ev.wall_s)}  {where:<10} {self._message(ev)}"

    def _node_name(self, key: str) -> str:
        return self.state.node_display_name(key) if key else ""

    @staticmethod
    def _offer_choice(box: QComboBox, text: str, value: str) -> None:
        if box.findData(value) < 0:
            box.blockSignals(True)
            box.addItem(text, value)
            box.blockSignals(False)

    def toPlainText(self) -> str:  # the name of QTextEdit's, which this view replaced
        """Every line shown, folded tool calls included, one per line (for copying and tests)."""
        out = []
        for i in range(self.view.topLevelItemCount()):
            top = self.view.topLevelItem(i)
            out.append("  ".join(top.text(c) for c in range(4)))
            out.extend("    " + "  ".join(top.child(k).text(c) for c in range(4)) for k in range(top.childCount()))
        return "\n".join(out)

    def visible_lines(self) -> list[str]:
        """The top-level lines as shown (a folded group is one line), tab-separated columns."""
        return ["\t".join(self.view.topLevelItem(i).text(c) for c in range(4)) for i in range(self.view.topLevelItemCount())]


def _stamp(wall_s: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall_s))
