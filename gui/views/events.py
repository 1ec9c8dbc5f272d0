"""Event log: job state changes, control actions and their results, failures, link changes."""

from __future__ import annotations

import html
import time

from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QTextEdit

from gui.state import ClusterState

MAX_LINES = 3000


class EventLog(QTextEdit):
    """Appends what is new in ``state.events`` on each refresh; failures in red."""

    def __init__(self, state: ClusterState, parent=None) -> None:
        super().__init__(parent)
        self.state = state
        self.setReadOnly(True)
        self.document().setMaximumBlockCount(MAX_LINES)
        self.setLineWrapMode(QTextEdit.LineWrapMode.WidgetWidth)
        self._seen = 0
        self.lines: list[str] = []  # plain text of what was shown, for tests and copying

    def refresh(self) -> None:
        total = self.state.events_total
        new = min(total - self._seen, len(self.state.events))
        if new <= 0:
            self._seen = total
            return
        # Oldest first: a snapshot batch (a reconnect, a replay seek) arrives node by node.
        events = sorted(list(self.state.events)[-new:], key=lambda e: e.wall_s)
        self._seen = total
        bar = self.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 4
        chunks = []
        for ev in events:
            stamp = time.strftime("%H:%M:%S", time.localtime(ev.wall_s))
            where = ev.job_id or ev.node
            who = f" by {ev.actor}" if ev.actor and ev.actor not in ev.message else ""
            text = f"{stamp}  {where:<10} {ev.message}{who}"
            self.lines.append(text)
            colour = "" if ev.ok else " style='color:#d0342c'"
            mark = "⚠ " if not ev.ok else ""
            chunks.append(f"<span{colour}>{html.escape(stamp)}&nbsp;&nbsp;<b>{html.escape(where)}</b>&nbsp; {mark}{html.escape(ev.message + who)}</span>")
        del self.lines[:-MAX_LINES]
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        for c in chunks:
            if not self.document().isEmpty():
                cursor.insertBlock()
            cursor.insertHtml(c)
        if at_bottom:
            bar.setValue(bar.maximum())

    def reset(self) -> None:
        """Forget what was shown (the source reset, e.g. a replay seek): the next refresh
        shows only the events the new state holds."""
        self.clear()
        self.lines.clear()
        self._seen = self.state.events_total - len(self.state.events)
