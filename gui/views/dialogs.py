"""Small dialogs: connect to a node, pick a migration target."""

from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QVBoxLayout

from gui.sources.base import NodeAddress


class ConnectDialog(QDialog):
    """Endpoint, optional name and CURVE server key of an agentd to follow."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Connect to node")
        self.endpoint = QLineEdit("tcp://127.0.0.1:7710")
        self.name = QLineEdit()
        self.name.setPlaceholderText("optional, e.g. gpu-a")
        self.key = QLineEdit()
        self.key.setPlaceholderText("needed for non-loopback addresses (agentd prints it at start)")
        self.error = QLabel()
        self.error.setStyleSheet("color: #d0342c")
        form = QFormLayout()
        form.addRow("Endpoint:", self.endpoint)
        form.addRow("Name:", self.name)
        form.addRow("Server key:", self.key)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.error)
        lay.addWidget(buttons)

    def address(self) -> NodeAddress:
        ep = self.endpoint.text().strip()
        return NodeAddress(key=self.name.text().strip() or ep, endpoint=ep, server_key=self.key.text().strip() or None)

    def _accept(self) -> None:
        ep = self.endpoint.text().strip()
        if not ep.startswith(("tcp://", "ipc://")) or ":" not in ep[6:]:
            self.error.setText(f"endpoint {ep!r} is not valid; write it as tcp://HOST:PORT")
            return
        self.accept()


class TargetDialog(QDialog):
    """Choose the node a job should move to."""

    def __init__(self, job_text: str, source_key: str, targets: list[str], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Migrate to…")
        self.box = QComboBox()
        self.box.addItems(targets)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(f"Move {job_text} from {source_key} to:"))
        lay.addWidget(self.box)
        lay.addWidget(buttons)

    def target(self) -> str:
        return self.box.currentText()
