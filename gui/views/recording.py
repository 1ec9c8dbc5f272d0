"""Record from the app: the Record/Stop actions, the file picker, the title/notes dialog and
the status-bar indicator.

The recording itself runs on the live source's network thread (``LiveSource.start_recording``);
this module only asks the user, sends commands and shows the ``recording_changed`` reports, so
the GUI thread never touches the recording file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QStandardPaths, Qt
from PySide6.QtGui import QAction, QColor, QIcon, QKeySequence, QPainter, QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

REC_RED = "#d0342c"
FILE_FILTER = "Fleetdeck recordings (*.db *.sqlite *.fdrec);;All files (*)"


def default_recording_path(now_s: float | None = None, folder: str | None = None) -> Path:
    """fleetdeck-YYYYmmdd-HHMMSS.db in the user's documents folder (else home)."""
    if folder is None:
        folder = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
        if not folder or not Path(folder).is_dir():
            folder = str(Path.home())
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now_s is None else now_s))
    return Path(folder) / f"fleetdeck-{stamp}.db"


def _icon(kind: str) -> QIcon:
    pm = QPixmap(32, 32)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    p.setPen(Qt.PenStyle.NoPen)
    if kind == "record":
        p.setBrush(QColor(REC_RED))
        p.drawEllipse(5, 5, 22, 22)
    else:
        p.setBrush(QColor("#444444"))
        p.drawRoundedRect(7, 7, 18, 18, 3, 3)
    p.end()
    return QIcon(pm)


class RecordingPropertiesDialog(QDialog):
    """Title and notes of a recording."""

    def __init__(self, path: str, title: str, notes: str, parent: QWidget | None = None, stopping: bool = False) -> None:
        super().__init__(parent)
        self.setWindowTitle("Recording saved" if stopping else "Recording properties")
        form = QFormLayout()
        where = QLabel(path)
        where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("File:", where)
        self.title_edit = QLineEdit(title)
        self.title_edit.setPlaceholderText("What was recorded (shown when the file is replayed)")
        form.addRow("Title:", self.title_edit)
        self.notes_edit = QPlainTextEdit(notes)
        self.notes_edit.setPlaceholderText("Notes: what happened, what to look at…")
        self.notes_edit.setMinimumHeight(90)
        form.addRow("Notes:", self.notes_edit)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(buttons)
        self.resize(460, 220)

    def values(self) -> tuple[str, str]:
        return self.title_edit.text().strip(), self.notes_edit.toPlainText().strip()


class RecordController(QObject):
    """Record / Stop / Properties for a window on a LiveSource (actions disabled otherwise).

    ``ask_path()`` and ``ask_meta(path, title, notes, stopping)`` are the two questions put to
    the user; tests replace them. ``ask_meta`` returns (title, notes) or None (keep them)."""

    def __init__(self, window: Any, source: Any) -> None:
        super().__init__(window)
        self.window = window
        self.source = source
        self.can_record = hasattr(source, "start_recording")
        self.title = ""
        self.notes = ""
        self.path: str | None = None  # the current or last recording
        self.active = False
        self.ask_path: Callable[[], str | None] = self._ask_path
        self.ask_meta: Callable[[str, str, str, bool], tuple[str, str] | None] = self._ask_meta
        self.act_record = QAction(_icon("record"), "Record…", window)
        self.act_record.setShortcut(QKeySequence("Ctrl+Shift+R"))
        self.act_record.triggered.connect(self.start)
        self.act_stop = QAction(_icon("stop"), "Stop recording", window)
        self.act_stop.setShortcut(QKeySequence("Ctrl+Shift+S"))
        self.act_stop.triggered.connect(self.stop)
        self.act_props = QAction("Recording properties…", window)
        self.act_props.triggered.connect(self.properties)
        if self.can_record:
            self.act_record.setToolTip("Record this session to a file (Ctrl+Shift+R)")
            source.recording_changed.connect(self._on_status)
        else:
            self.act_record.setToolTip("replay: recording works only on a live cluster")
        self.act_stop.setToolTip("Stop recording and save the file (Ctrl+Shift+S)")
        self.act_props.setToolTip("Title and notes of the current or last recording")
        self._update_actions()

    def _update_actions(self) -> None:
        self.act_record.setEnabled(self.can_record and not self.active)
        self.act_stop.setEnabled(self.can_record and self.active)
        self.act_stop.setVisible(self.active)
        self.act_props.setEnabled(self.can_record and self.path is not None)

    # ---- questions ----
    def _ask_path(self) -> str | None:
        path, _ = QFileDialog.getSaveFileName(self.window, "Record session to", str(default_recording_path()), FILE_FILTER)
        return path or None

    def _ask_meta(self, path: str, title: str, notes: str, stopping: bool) -> tuple[str, str] | None:
        dlg = RecordingPropertiesDialog(path, title, notes, self.window, stopping=stopping)
        return dlg.values() if dlg.exec() else None

    # ---- commands ----
    def start(self) -> None:
        if not self.can_record or self.active:
            return
        path = self.ask_path()
        if not path:
            return
        self.path = path
        self.title = f"Fleetdeck session {time.strftime('%Y-%m-%d %H:%M')}"
        self.notes = ""
        self.active = True  # until the network thread says otherwise
        self._update_actions()
        self.window.status.set_recording(True, 0.0, 0)
        self.source.start_recording(path, self.title, self.notes)

    def stop(self) -> None:
        if not self.active or self.path is None:
            return
        meta = self.ask_meta(self.path, self.title, self.notes, True)
        if meta is not None:
            self.title, self.notes = meta
            self.source.stop_recording(self.title, self.notes)
        else:
            self.source.stop_recording(None, None)

    def properties(self) -> None:
        if self.path is None:
            return
        meta = self.ask_meta(self.path, self.title, self.notes, False)
        if meta is None:
            return
        self.title, self.notes = meta
        if not self.active:
            self.source.set_recording_meta(self.path, self.title, self.notes)
        # while recording, the title and notes are written when it stops

    # ---- from the network thread ----
    def _on_status(self, st: Any) -> None:
        was = self.active
        self.active = st.active
        self.window.status.set_recording(st.active, st.duration_s, st.size_bytes)
        self._update_actions()
        if st.error:
            self._failure(st.error)
        elif was and not st.active:
            self.window.state.add_local_event(f"recording saved to {st.path} ({st.samples} samples)", kind="app")
            self.window.status.showMessage(f"Recording saved to {st.path}", 10000)
        elif st.active and not was:
            self.window.state.add_local_event(f"recording to {st.path}", kind="app")

    def _failure(self, message: str) -> None:
        self.window.state.add_local_event(message, ok=False, kind="error")
        self.window.status.showMessage("⚠ " + message, 15000)
        if self.window.isVisible() and self.window.settings.value("ui/failure_popups", True, type=bool):
            box = QMessageBox(QMessageBox.Icon.Critical, "Fleetdeck — recording", message, QMessageBox.StandardButton.Ok, self.window)
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.open()
