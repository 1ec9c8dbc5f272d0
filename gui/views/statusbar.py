"""Status bar: each node's link health, action progress, the recording indicator, the time."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar

from gui import fmt
from gui.state import ClusterState
from gui.theme import LINK_COLOURS, LINK_SYMBOLS, SEVERITY_COLOURS, SEVERITY_SYMBOLS

MAX_NODES_LISTED = 12


class StatusBar(QStatusBar):
    def __init__(self, state: ClusterState, clock=time.time, parent=None) -> None:
        super().__init__(parent)
        self.state = state
        self.clock = clock
        self.links = QLabel()
        self.links.setTextFormat(Qt.TextFormat.RichText)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumWidth(120)
        self.busy.setMaximumHeight(14)
        self.busy.setVisible(False)
        self.busy_label = QLabel()
        self.busy_label.setVisible(False)
        self.recording = QLabel()
        self.recording.setVisible(False)
        self.recording.setToolTip("This session is being recorded")
        self.clock_label = QLabel()
        self.health = QLabel()
        self.health.setTextFormat(Qt.TextFormat.RichText)
        self.health.setToolTip("Health alerts firing now (View ▸ Health)")
        # Permanent, not a normal widget: QStatusBar hides normal widgets while a message shows,
        # and the node link dots must stay visible. Messages take the space to their left.
        self.addPermanentWidget(self.health)
        self.addPermanentWidget(self.links)
        self.addPermanentWidget(self.busy_label)
        self.addPermanentWidget(self.busy)
        self.addPermanentWidget(self.recording)
        self.addPermanentWidget(self.clock_label)

    def refresh(self) -> None:
        parts = []
        for key, node in list(self.state.nodes.items())[:MAX_NODES_LISTED]:
            colour = LINK_COLOURS.get(node.status, "#888")
            parts.append(f"<span style='color:{colour}'>{LINK_SYMBOLS.get(node.status, '?')}</span> {key}")
        extra = len(self.state.nodes) - MAX_NODES_LISTED
        if extra > 0:
            s = self.state.summary()
            parts.append(f"+{extra} more ({s.get('live', 0)} live, {s.get('stale', 0)} stale, "
                         f"{s.get('down', 0) + s.get('unreachable', 0)} down in all)")
        if not parts:
            parts.append("no nodes — use Cluster ▸ Connect to node…")
        self.refresh_health()
        html = " &nbsp; ".join(parts)
        if self.links.text() != html:
            self.links.setText(html)
            self.links.setToolTip("\n".join(f"{k}: {n.status}" + (f" ({n.link_detail})" if n.link_detail else "") for k, n in self.state.nodes.items()))

    def refresh_health(self) -> None:
        """⬤ 2 ▲ 5 ● 1: the alerts firing now by severity; "✓ healthy" when none."""
        counts = self.state.alerts.counts()
        parts = [f"<span style='color:{SEVERITY_COLOURS[sev]}'>{SEVERITY_SYMBOLS[sev]}</span>&nbsp;{n}"
                 for sev, n in counts.items() if n]
        html = " ".join(parts) if parts else f"<span style='color:{LINK_COLOURS['live']}'>✓</span> healthy"
        if self.health.text() != html:
            self.health.setText(html)

    def tick_clock(self, now_s: float | None = None) -> None:
        text = time.strftime("%H:%M:%S", time.localtime(self.clock() if now_s is None else now_s))
        if self.clock_label.text() != text:
            self.clock_label.setText(text)

    def set_busy(self, text: str) -> None:
        """Show (non-empty ``text``) or hide the progress of a long action."""
        self.busy.setVisible(bool(text))
        self.busy_label.setVisible(bool(text))
        self.busy_label.setText(text)

    def set_recording(self, active: bool, duration_s: float = 0.0, size_bytes: int = 0) -> None:
        """The recording indicator, for the recording feature: ● REC 00:12:31 14 MiB."""
        self.recording.setVisible(active)
        if active:
            h, rem = divmod(int(duration_s), 3600)
            self.recording.setText(f"<span style='color:#d0342c'>● REC</span> {h:02d}:{rem // 60:02d}:{rem % 60:02d} {fmt.human_bytes(size_bytes)}")
