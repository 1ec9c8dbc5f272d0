"""Job table with its toolbar, filter, context menu and keyboard shortcuts.

A tree: a group (the ranks of one gang job) is one row that opens to its ranks. An action on a
group row acts on every rank (one request per rank through gui/actions.py for now).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QSpinBox,
    QStyle,
    QToolBar,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from agentd.protocol.jobs import PRIORITY_MAX, PRIORITY_MIN
from gui.actions import Actions
from gui.models.jobs import GROUP_ROLE, JOB_ID_ROLE, RANK_IDS_ROLE, JobFilterProxy, JobTableModel
from gui.state import ClusterState

READ_ONLY_TIP = "replay: control is disabled"


class JobTree(QTreeView):
    """The jobs' tree view; ``horizontalHeader()`` as a QTableView has it (saved layouts)."""

    def horizontalHeader(self) -> QHeaderView:
        return self.header()


class JobsPanel(QWidget):
    """``logs_requested(job_id)`` asks the window to open a log tail."""

    logs_requested = Signal(str)
    migrate_requested = Signal(str)  # job id; the window asks for the target
    group_selected = Signal(str)  # the group of the selected row(s), "" for none: the map outlines it
    group_charts_requested = Signal(str)  # group id: the window adds the group's charts
    submit_requested = Signal()  # the window opens the submit dialog

    def __init__(self, state: ClusterState, actions: Actions, parent=None) -> None:
        super().__init__(parent)
        self.state = state
        self.actions = actions
        self._read_only_shown = False
        self.model = JobTableModel(state, parent=self)
        self.proxy = JobFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.table = JobTree()
        self.table.setModel(self.proxy)
        self.table.setUniformRowHeights(True)  # 10,000 rows: no per-row height queries
        self.table.setRootIsDecorated(True)
        self.table.setAllColumnsShowFocus(True)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setAlternatingRowColors(True)
        self.table.horizontalHeader().setStretchLastSection(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for col, w in enumerate((150, 140, 70, 130, 60, 65, 55, 80, 165, 70)):  # ids of groups: + the tree's indent
            self.table.setColumnWidth(col, w)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._menu)
        self.table.setExpandsOnDoubleClick(False)  # a double click opens the logs, as before
        self.table.doubleClicked.connect(lambda *_: self._logs())
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter: words, or column:text (state:running node:r01)…")
        self.filter.setToolTip("Words match any column; column:text matches one column "
                               "(id, name, node, state, priority, gpus, cpu, memory, throughput, age)")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._filter)
        self.show_migrated = QCheckBox("Show migrated")
        self.show_migrated.setToolTip("Also list the earlier hops of migrated jobs (state 'migrated'); "
                                      "normally a migrated job is one row: where it runs now")
        self.show_migrated.toggled.connect(self._set_show_migrated)
        self.hide_ended = QCheckBox("Hide ended")
        self.hide_ended.setToolTip("Hide jobs that succeeded, failed or were cancelled")
        self.hide_ended.toggled.connect(self._set_hide_ended)

        sp = QStyle.StandardPixmap
        self.act_pause = self._action("Pause", "Space", "Pause the selected jobs (cgroup freezer)",
                                      lambda: self.actions.pause(self.selected()), sp.SP_MediaPause)
        self.act_resume = self._action("Resume", "Ctrl+R", "Resume the selected jobs", lambda: self.actions.resume(self.selected()), sp.SP_MediaPlay)
        self.act_migrate = self._action("Migrate to…", "Ctrl+M", "Move the selected job to another node", self._migrate, sp.SP_ArrowRight)
        self.act_priority = self._action("Set priority…", "Ctrl+P", "Set the priority of the selected jobs (asks for the value)",
                                         self._ask_priority, None)
        self.act_cancel = self._action("Cancel…", QKeySequence.StandardKey.Delete, "Cancel the selected jobs (asks first)",
                                       lambda: self.actions.cancel(self.selected()), sp.SP_DialogCancelButton)
        self.act_logs = self._action("Logs", "Ctrl+L", "Follow the selected job's output", self._logs, sp.SP_FileDialogDetailedView)
        self.act_submit = self._action("Submit…", "Ctrl+N", "Start a job on a node, or a group (one gang) on several",
                                       self.submit_requested.emit, sp.SP_FileIcon)
        # Window-wide, as File ▸ New is elsewhere: nothing needs to be selected to submit.
        self.act_submit.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.priority_dialog: PriorityDialog | None = None  # the open "Set priority" dialog
        bar = QToolBar()
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        bar.setIconSize(bar.iconSize() * 0.75)
        bar.addAction(self.act_submit)
        bar.addSeparator()
        for a in (self.act_pause, self.act_resume, self.act_migrate, self.act_priority):
            bar.addAction(a)
        for a in (self.act_cancel, self.act_logs):
            bar.addAction(a)
        self.count = QLabel()
        top = QHBoxLayout()
        top.setContentsMargins(4, 0, 4, 0)
        top.addWidget(QLabel("<b>Jobs</b>"))
        top.addWidget(self.count)
        top.addWidget(bar, 1)
        top.addWidget(self.hide_ended)
        top.addWidget(self.show_migrated)
        top.addWidget(self.filter)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(top)
        lay.addWidget(self.table, 1)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._selection_changed())
        self._group_shown = ""
        self.update_enabled()

    def _action(self, text: str, shortcut, tip: str, slot, icon) -> QAction:
        a = QAction(text, self)
        if icon is not None:
            a.setIcon(self.style().standardIcon(icon))
        a.setShortcut(QKeySequence(shortcut))
        a.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        a.setToolTip(f"{tip} ({QKeySequence(shortcut).toString()})")
        a.triggered.connect(slot)
        self.addAction(a)
        return a

    def refresh(self) -> None:
        # The selection follows a job across a migration: its row id changes (a new hop),
        # its identity (first id) does not.
        before = self.selected()
        identity_of = {r.id: r.identity for r in self.model.rows}
        self.model.refresh()
        now = {r.id for r in self.model.rows}
        gone = {identity_of[j] for j in before if j not in now and j in identity_of}
        if gone:
            follow = [r.id for r in self.model.rows if r.identity in gone and r.state != "migrated"]
            if follow:
                self.select([j for j in before if j in now] + follow)
        self._update_count()
        self.update_enabled()
        self.table.viewport().update()  # ages and "last seen" move with the clock

    def _set_hide_ended(self, on: bool) -> None:
        self.proxy.set_hide_ended(on)
        self._update_count()

    def _set_show_migrated(self, on: bool) -> None:
        self.model.show_migrated = on
        self.refresh()

    def _filter(self, text: str) -> None:
        self.proxy.set_filter_text(text)
        self._update_count()

    def _update_count(self) -> None:
        """The count says what the table shows: "3 of 12 jobs" while a filter hides some."""
        n, shown = self.model.rowCount(), self.proxy.rowCount()
        text = f"{n} job{'s' if n != 1 else ''}" if shown == n else f"{shown} of {n} jobs"
        if self.count.text() != text:
            self.count.setText(text)

    def _selected_indexes(self) -> list:
        rows = self.table.selectionModel().selectedRows()
        return sorted(rows, key=lambda i: (i.parent().row(), i.row()) if i.parent().isValid() else (i.row(), -1))

    def selected(self) -> list[str]:
        """The job ids the actions act on: a group row stands for every one of its ranks."""
        out: dict[str, None] = {}
        for i in self._selected_indexes():
            for j in i.data(RANK_IDS_ROLE) or [i.data(JOB_ID_ROLE)]:
                out[j] = None
        return list(out)

    def selected_group(self) -> str:
        """The group of the selection: a group row, or ranks of one group ("" otherwise)."""
        groups = {i.data(GROUP_ROLE) for i in self._selected_indexes()}
        return groups.pop() if len(groups) == 1 else ""

    def _selection_changed(self) -> None:
        self.update_enabled()
        g = self.selected_group()
        if g != self._group_shown:
            self._group_shown = g
            self.group_selected.emit(g)

    def select(self, job_ids: list[str]) -> None:
        """Select the rows of these jobs (a rank's row inside its group, opened) or groups."""
        sm = self.table.selectionModel()
        sm.clearSelection()
        from PySide6.QtCore import QItemSelectionModel
        flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
        for r in range(self.proxy.rowCount()):
            top = self.proxy.index(r, 0)
            if top.data(JOB_ID_ROLE) in job_ids:
                sm.select(top, flags)
            for c in range(self.proxy.rowCount(top)):
                child = self.proxy.index(c, 0, top)
                if child.data(JOB_ID_ROLE) in job_ids:
                    self.table.expand(top)
                    sm.select(child, flags)
                    self.table.scrollTo(child)

    def update_enabled(self) -> None:
        ids = self.selected()
        control = self.actions.can_control()
        single = len(self._selected_indexes()) == 1
        states = [self.state.job(j).state if self.state.job(j) else "" for j in ids]
        self.act_pause.setEnabled(control and any(s == "running" for s in states))
        self.act_resume.setEnabled(control and any(s == "paused" for s in states))
        self.act_migrate.setEnabled(control and len(ids) == 1 and states[0] in ("running", "paused"))
        self.act_priority.setEnabled(control and bool(ids))
        self.act_cancel.setEnabled(control and any(s in ("running", "paused", "queued") for s in states))
        self.act_logs.setEnabled(len(ids) == 1 and single)
        self.act_submit.setEnabled(control)
        if not control and not self._read_only_shown:
            # Greyed out, and the tooltip says why (the actions exist, they just cannot act here).
            self._read_only_shown = True
            for a in (self.act_submit, self.act_pause, self.act_resume, self.act_migrate, self.act_priority, self.act_cancel):
                a.setToolTip(READ_ONLY_TIP)

    def _migrate(self) -> None:
        ids = self.selected()
        if len(ids) == 1:
            self.migrate_requested.emit(ids[0])

    def _logs(self) -> None:
        ids = self.selected()
        if len(ids) == 1:
            self.logs_requested.emit(ids[0])

    def _menu(self, pos) -> None:
        if not self.selected():
            return
        menu = QMenu(self)
        for a in (self.act_pause, self.act_resume, self.act_migrate):
            menu.addAction(a)
        prio = menu.addMenu("Set priority")
        prio.setEnabled(self.actions.can_control())
        for p in (10, 5, 2, 1, 0, -1, -2, -5, -10):
            act = prio.addAction(f"{p:+d}" if p else "0")
            act.triggered.connect(lambda _=False, p=p: self.actions.set_priority(self.selected(), p))
        other = prio.addAction("Other…")
        other.triggered.connect(lambda _=False: self._ask_priority())
        menu.addSeparator()
        group = self.selected_group()
        if group:
            charts = menu.addAction("Group charts")
            charts.setToolTip("Throughput summed over the ranks, per role, queue depth and policy lag")
            charts.triggered.connect(lambda _=False, g=group: self.group_charts_requested.emit(g))
        menu.addAction(self.act_logs)
        menu.addSeparator()
        menu.addAction(self.act_cancel)
        menu.popup(self.table.viewport().mapToGlobal(pos))

    def _ask_priority(self) -> None:
        """Ask for the value in a small dialog (not modal-blocking: the table keeps updating)."""
        ids = self.selected()
        if not ids or not self.actions.can_control():
            return
        jobs = [self.state.job(j) for j in ids]
        current = jobs[0].priority if jobs[0] is not None else 0
        dlg = PriorityDialog(ids, current, self)
        dlg.accepted.connect(lambda: self.actions.set_priority(ids, dlg.value()))
        dlg.finished.connect(lambda *_: setattr(self, "priority_dialog", None))
        self.priority_dialog = dlg
        dlg.open()


class PriorityDialog(QDialog):
    """A priority for one or more jobs: a spin box over the daemon's range."""

    def __init__(self, job_ids: list[str], current: int, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Set priority")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.spin = QSpinBox()
        self.spin.setRange(PRIORITY_MIN, PRIORITY_MAX)
        self.spin.setValue(current)
        self.spin.setToolTip(f"{PRIORITY_MIN}..{PRIORITY_MAX}; higher is more important")
        what = job_ids[0] if len(job_ids) == 1 else f"{len(job_ids)} jobs"
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow(QLabel(f"Priority of {what} ({PRIORITY_MIN}..{PRIORITY_MAX}, higher is more important):"))
        form.addRow("Priority", self.spin)
        form.addRow(buttons)
        self.spin.setFocus()
        self.spin.selectAll()

    def value(self) -> int:
        return self.spin.value()
