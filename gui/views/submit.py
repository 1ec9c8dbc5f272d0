"""The submit dialog: a job on one node, or a group (one gang) on several.

The fields map one to one onto ``agentctl submit`` (a command, --name, --nodes, --ranks-per-node
or --per-gpu, --gpus(-per-rank), --priority, --checkpoint-signal, --env); gui/submitform.py
checks them and this widget only shows where and why. Nothing is sent from here: the window
hands ``plan`` to gui/submit.py.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from agentd.groups.spec import MAX_GPUS_PER_RANK, MAX_RANKS_PER_NODE
from agentd.protocol.limits import PRIORITY_MAX, PRIORITY_MIN
from gui.state import natural_key
from gui.submitform import SHELL, FormError, GroupPlan, JobPlan, NodeOffer, SubmitForm, check_form

SIGNALS = ("none", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT", "SIGHUP")
NODE_ROLE = Qt.ItemDataRole.UserRole + 1


def _left(*widgets: QWidget) -> QWidget:
    """Widgets side by side at their natural width (a form row would stretch a spin box)."""
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        row.addWidget(w)
        if isinstance(w, QLabel):
            w.setStyleSheet("color: palette(mid)")
    row.addStretch(1)
    return box


class SubmitDialog(QDialog):
    """``plan`` holds what to send once the dialog is accepted."""

    def __init__(self, offers: dict[str, NodeOffer], preselect: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Submit a job or a group")
        self.offers = offers
        self.plan: JobPlan | GroupPlan | None = None
        self.command = QLineEdit()
        self.command.setPlaceholderText("python train.py --lr 3e-4")
        self.command.setToolTip("The program and its arguments, split as a shell would (quotes group words); "
                                "nothing runs through a shell unless asked below")
        self.shell = QCheckBox(f"Run through {SHELL} (pipes, &&&&, $VARS)")  # && shows one &
        self.name = QLineEdit()
        self.name.setPlaceholderText("optional, e.g. pretrain-7b")
        self.nodes = QListWidget()
        self.nodes.setToolTip("One node: a job. Several: a group whose ranks start together (rank 0 on the first)")
        keys = sorted(offers, key=natural_key)
        first = preselect if preselect in offers else (keys[0] if keys else "")  # one click to a plain job
        for key in keys:
            o = offers[key]
            label = key if o.name == key else f"{key} ({o.name})"
            label += f"  ·  {len(o.gpus)} GPU{'s' if len(o.gpus) != 1 else ''}" + (f"  ·  via relay {o.relay}" if o.relay else "")
            item = QListWidgetItem(label)
            item.setData(NODE_ROLE, key)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if key == first else Qt.CheckState.Unchecked)
            self.nodes.addItem(item)
        rows = max(1, min(6, len(offers)))  # snug for a few nodes; a scroll bar beyond six
        self.nodes.setFixedHeight(self.nodes.sizeHintForRow(0) * rows + 2 * self.nodes.frameWidth() + 4)
        self.ranks = QSpinBox()
        self.ranks.setRange(1, MAX_RANKS_PER_NODE)
        self.per_node = QRadioButton("per node:")
        self.per_gpu = QRadioButton("one rank per GPU (times GPUs per rank)")
        self.per_node.setChecked(True)
        how = QButtonGroup(self)
        how.addButton(self.per_node)
        how.addButton(self.per_gpu)
        ranks_row = QHBoxLayout()
        ranks_row.setContentsMargins(0, 0, 0, 0)
        for w in (self.per_node, self.ranks, self.per_gpu):
            ranks_row.addWidget(w)
        ranks_row.addStretch(1)
        self.ranks_box = QWidget()
        self.ranks_box.setLayout(ranks_row)
        self.gpus = QSpinBox()
        self.gpus.setRange(0, MAX_GPUS_PER_RANK)
        self.gpus_label = QLabel("GPUs:")
        self.priority = QSpinBox()
        self.priority.setRange(PRIORITY_MIN, PRIORITY_MAX)
        self.priority.setToolTip(f"{PRIORITY_MIN}..{PRIORITY_MAX}; higher is more important (queue order, CPU share)")
        for spin in (self.ranks, self.gpus, self.priority):
            spin.setMinimumWidth(80)  # numbers, not sentences: a short box reads as one
        self.signal = QComboBox()
        self.signal.setEditable(True)
        self.signal.addItems(SIGNALS)
        self.signal.setToolTip("The signal on which the job writes a checkpoint to $AGENTD_CHECKPOINT_DIR and exits: "
                               "what pausing to disk and migrating need. 'none': no checkpoint contract")
        self.env = QPlainTextEdit()
        self.env.setPlaceholderText("KEY=VALUE, one per line\nHF_HOME=/data/hf")
        self.env.setFixedHeight(self.fontMetrics().lineSpacing() * 4 + 12)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #d0342c")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.submit_button = self.buttons.addButton("Submit", QDialogButtonBox.ButtonRole.AcceptRole)
        self.submit_button.setDefault(True)
        self.buttons.accepted.connect(self._accept)
        self.buttons.rejected.connect(self.reject)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Command:", self.command)
        form.addRow("", self.shell)
        form.addRow("Name:", self.name)
        form.addRow("Nodes:", self.nodes)
        form.addRow("Ranks:", self.ranks_box)
        form.addRow(self.gpus_label, _left(self.gpus))
        form.addRow("Priority:", _left(self.priority, QLabel("higher runs first and gets more CPU")))
        form.addRow("Checkpoint signal:", _left(self.signal, QLabel("for pause-to-disk and migration")))
        form.addRow("Environment:", self.env)
        self.fields: dict[str, QWidget] = {
            "Command": self.command, "Name": self.name, "Nodes": self.nodes, "Ranks per node": self.ranks,
            "One rank per GPU": self.per_gpu, "GPUs per rank": self.gpus, "GPUs": self.gpus, "Priority": self.priority,
            "Checkpoint signal": self.signal, "Environment": self.env, "Job": self.command, "Group": self.nodes}
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.summary)
        lay.addWidget(self.error)
        lay.addWidget(self.buttons)
        self.setMinimumWidth(560)
        for sig in (self.command.textChanged, self.name.textChanged, self.shell.toggled, self.per_gpu.toggled,
                    self.ranks.valueChanged, self.gpus.valueChanged, self.nodes.itemChanged, self.env.textChanged,
                    self.signal.currentTextChanged, self.priority.valueChanged):
            sig.connect(self._changed)
        self._changed()
        self.command.setFocus()

    def checked_nodes(self) -> list[str]:
        return [self.nodes.item(i).data(NODE_ROLE) for i in range(self.nodes.count())
                if self.nodes.item(i).checkState() == Qt.CheckState.Checked]

    def form(self) -> SubmitForm:
        sig = self.signal.currentText().strip()
        return SubmitForm(command=self.command.text(), nodes=self.checked_nodes(), name=self.name.text(),
                          shell=self.shell.isChecked(), ranks_per_node=self.ranks.value(),
                          per_gpu=self.per_gpu.isChecked(), gpus=self.gpus.value(), priority=self.priority.value(),
                          checkpoint_signal="" if sig.lower() == "none" else sig, env_text=self.env.toPlainText())

    def _changed(self, *_args: object) -> None:
        """Keep the group-only fields and the summary in step with the choice of nodes."""
        n = len(self.checked_nodes())
        group = n > 1
        self.ranks_box.setEnabled(group)
        self.ranks.setEnabled(group and self.per_node.isChecked())
        self.gpus_label.setText("GPUs per rank:" if group else "GPUs:")
        self.error.clear()
        try:
            plan = check_form(self.form(), self.offers)
        except FormError:
            self.summary.setText("Check one node for a job, or several for a group." if n == 0 else "")
            return
        if isinstance(plan, JobPlan):
            self.summary.setText(f"One job on <b>{plan.node}</b>.")
        else:
            first = plan.keys[plan.spec.node_order()[0]]
            self.summary.setText(f"One group: <b>{len(plan.ranks)} ranks on {len(plan.keys)} nodes</b>, rank 0 on "
                                 f"{first}; they start together when every node has room.")

    def _accept(self) -> None:
        try:
            self.plan = check_form(self.form(), self.offers)
        except FormError as e:
            self.error.setText(f"{e.field}: {e.message}")
            widget = self.fields.get(e.field)
            if widget is not None:
                widget.setFocus()
            return
        self.accept()
