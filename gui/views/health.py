"""Health panel: the alerts firing now, most severe first, with how long each has lasted.

Fed by :class:`gui.alerts.ActiveAlerts` (kept from the stream's alert events). Double-clicking
an alert asks to show its node (``node_requested``); the status bar shows the counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui import fmt
from gui.alerts import ActiveAlerts
from gui.theme import SEVERITY_COLOURS, SEVERITY_SYMBOLS

COLUMNS = ("Severity", "Node", "Subject", "Alert", "For")
FILTERS = (("All severities", ""), ("Critical", "critical"), ("Warning or worse", "warning"))


class HealthPanel(QWidget):
    """The active alerts as a sortable list with a severity filter and an empty state."""

    node_requested = Signal(str)

    def __init__(self, alerts: ActiveAlerts, clock: Callable[[], float] = time.time, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.alerts = alerts
        self.clock = clock
        self._shown_version = -1
        self.filter_box = QComboBox()
        for label, value in FILTERS:
            self.filter_box.addItem(label, value)
        self.filter_box.currentIndexChanged.connect(lambda *_: self.refresh(force=True))
        self.summary = QLabel()
        # Narrow docks must not widen the window: the summary elides, the list scrolls.
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        head = QHBoxLayout()
        head.addWidget(self.summary, 1)
        head.addWidget(self.filter_box)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(False)
        self.tree.setMinimumWidth(120)
        self.tree.setUniformRowHeights(True)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.itemDoubleClicked.connect(lambda item, _col: self.node_requested.emit(item.text(1)))
        self.empty = QLabel("No alerts firing. Rules and defaults: docs/health.md")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.empty.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.empty.setEnabled(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(head)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.empty, 1)
        self.refresh(force=True)

    def visible_rows(self) -> list[tuple[str, ...]]:
        """What the list shows now, as text (for tests and copying)."""
        return [tuple(self.tree.topLevelItem(i).text(c) for c in range(len(COLUMNS)))
                for i in range(self.tree.topLevelItemCount())]

    def refresh(self, force: bool = False) -> None:
        """Rebuild when the alerts changed; the durations are refreshed every call."""
        now = self.clock()
        if force or self._shown_version != self.alerts.version:
            self._shown_version = self.alerts.version
            wanted = self.filter_box.currentData()
            worst = {"critical": ("critical",), "warning": ("critical", "warning")}.get(wanted)
            self.tree.clear()
            for alert in self.alerts.sorted():
                if worst is not None and alert.severity not in worst:
                    continue
                item = QTreeWidgetItem([f"{SEVERITY_SYMBOLS.get(alert.severity, '?')} {alert.severity}", alert.node,
                                        alert.subject, alert.message, ""])
                item.setData(4, Qt.ItemDataRole.UserRole, alert.since_s)
                item.setForeground(0, QBrush(QColor(SEVERITY_COLOURS.get(alert.severity, "#7a7f87"))))
                item.setToolTip(3, "\n".join([alert.message, *(f"{k}: {v}" for k, v in sorted(alert.evidence.items()))]))
                self.tree.addTopLevelItem(item)
            for col in (0, 1, 2):
                self.tree.resizeColumnToContents(col)
            counts = self.alerts.counts()
            self.summary.setText(", ".join(f"{n} {sev}" for sev, n in counts.items() if n) or "All healthy")
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            item.setText(4, fmt.duration(max(0.0, now - float(item.data(4, Qt.ItemDataRole.UserRole)))))
        has_rows = self.tree.topLevelItemCount() > 0
        self.tree.setVisible(has_rows)
        self.empty.setVisible(not has_rows)
