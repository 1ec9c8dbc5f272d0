"""A job's output, followed live through Logs requests (one outstanding at a time)."""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtGui import QFontDatabase, QTextCursor
from PySide6.QtWidgets import QComboBox, QDialog, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout

from agentd.protocol.messages import Logs, LogsReply
from gui.sources.base import DataSource, RequestFailure

POLL_MS = 1000
MAX_BLOCKS = 20000


class LogsDialog(QDialog):
    def __init__(self, source: DataSource, node_key: str, job_id: str, title: str, parent=None) -> None:
        super().__init__(parent)
        self.source, self.node_key, self.job_id = source, node_key, job_id
        self.setWindowTitle(f"Logs — {title}")
        self.resize(820, 480)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(MAX_BLOCKS)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.stream = QComboBox()
        self.stream.addItems(["stdout", "stderr"])
        self.stream.currentTextChanged.connect(self._switch)
        self.status = QLabel("loading…")
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        top = QHBoxLayout()
        top.addWidget(QLabel("Stream:"))
        top.addWidget(self.stream)
        top.addWidget(self.status, 1)
        top.addWidget(close)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.text, 1)
        self.offset = -65536
        self.token: int | None = None
        source.request_done.connect(self._done)
        source.request_failed.connect(self._failed)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._poll)
        self.timer.start(POLL_MS)
        self._poll()

    def _switch(self, _stream: str) -> None:
        self.text.clear()
        self.offset = -65536
        self.token = None
        self._poll()

    def _poll(self) -> None:
        if self.token is None:
            self.token = self.source.request(self.node_key, Logs(job=self.job_id, stream=self.stream.currentText(), offset=self.offset))

    def _done(self, token: int, key: str, reply) -> None:
        if token != self.token or not isinstance(reply, LogsReply):
            return
        self.token = None
        if reply.data:
            cur = self.text.textCursor()
            cur.movePosition(QTextCursor.MoveOperation.End)
            cur.insertText(reply.data.decode(errors="replace"))
            self.text.verticalScrollBar().setValue(self.text.verticalScrollBar().maximum())
        self.offset = reply.offset
        self.status.setText(f"{self.stream.currentText()}: {reply.size} bytes, following")

    def _failed(self, token: int, failure: RequestFailure) -> None:
        if token != self.token:
            return
        self.token = None
        self.status.setText(f"⚠ {failure.message}")

    def closeEvent(self, ev) -> None:
        self.timer.stop()
        try:
            self.source.request_done.disconnect(self._done)
            self.source.request_failed.disconnect(self._failed)
        except (RuntimeError, TypeError):
            pass
        super().closeEvent(ev)
