"""The job table: a QAbstractTableModel over ClusterState.job_rows(), and its filter proxy.

Built for 10,000 jobs: an update changes only the rows whose values changed (``dataChanged`` per
run of changed rows), inserts and removes rows for jobs that came and went, and never resets the
model, so selection, scroll position and sort survive. The proxy sorts ids naturally
(``gpu-a.9`` before ``gpu-a.10``), can hide ended jobs, and filters per column
(``state:running node:r01 train``: each ``column:text`` must match that column, other words any).
"""

from __future__ import annotations

import time

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QColor

from agentd.protocol.jobs import TERMINAL_STATES
from gui import fmt
from gui.state import ClusterState, JobRow, migration_fraction, natural_sort_text
from gui.theme import STATE_COLOURS, job_colour

COLUMNS = ("ID", "Name", "Node", "State", "Priority", "GPUs", "CPU", "Memory", "Throughput", "Age")
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
JOB_ID_ROLE = Qt.ItemDataRole.UserRole + 2


class JobTableModel(QAbstractTableModel):
    """One row per visible job. ``refresh()`` re-reads the state: values change in place,
    rows are inserted/removed only when the set of jobs changed, so selection survives."""

    def __init__(self, state: ClusterState, clock=time.time, parent=None) -> None:
        super().__init__(parent)
        self.state = state
        self.clock = clock
        self.rows: list[JobRow] = []
        self.show_migrated = False  # list the superseded hops of migrated jobs too

    def refresh(self) -> None:
        new = self.state.job_rows(show_migrated=self.show_migrated)
        if [r.id for r in new] == [r.id for r in self.rows]:
            old, self.rows = self.rows, new
            self._emit_changed([i for i, (a, b) in enumerate(zip(old, new)) if a != b])
            return
        old_ids = {r.id: i for i, r in enumerate(self.rows)}
        new_ids = {r.id for r in new}
        # Remove vanished rows from the bottom up, then append new ones: keeps selections.
        for i in sorted((i for rid, i in old_ids.items() if rid not in new_ids), reverse=True):
            self.beginRemoveRows(QModelIndex(), i, i)
            del self.rows[i]
            self.endRemoveRows()
        by_id = {r.id: r for r in new}
        old = self.rows
        self.rows = [by_id[r.id] for r in old]
        changed = [i for i, (a, b) in enumerate(zip(old, self.rows)) if a != b]
        have = {r.id for r in self.rows}
        added = [r for r in new if r.id not in have]
        if added:
            self.beginInsertRows(QModelIndex(), len(self.rows), len(self.rows) + len(added) - 1)
            self.rows.extend(added)
            self.endInsertRows()
        self._emit_changed(changed)

    def _emit_changed(self, rows: list[int]) -> None:
        """One dataChanged per run of consecutive changed rows. Ages and "last seen" move with
        the clock, not with the rows: the view repaints those (JobsPanel.refresh)."""
        start = prev = None
        for i in rows + [None]:
            if start is not None and (i is None or i != prev + 1):
                self.dataChanged.emit(self.index(start, 0), self.index(prev, len(COLUMNS) - 1))
                start = None
            if i is not None and start is None:
                start = i
            prev = i

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def row(self, i: int) -> JobRow:
        return self.rows[i]

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        r = self.rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(r, col)
        if role == SORT_ROLE:
            return self._sort(r, col)
        if role == JOB_ID_ROLE:
            return r.id
        if role == Qt.ItemDataRole.DecorationRole and col == 0:
            return job_colour(r.identity)  # the job's colour on the map and in the charts
        if role == Qt.ItemDataRole.ForegroundRole and col == 3:
            return QColor(STATE_COLOURS.get("stale" if r.stale else r.state, "#888888"))
        if role == Qt.ItemDataRole.ForegroundRole and r.stale:
            return QColor("#8a8a8a")  # old news: greyed, so it does not pass for live numbers
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (4, 6, 7, 8, 9):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            note = " — a Slurm job: actions go through scontrol/scancel" if r.backend == "slurm" else (" — " + r.kind if r.kind == "agent" else "")
            tip = f"{r.name} ({r.id}) on {r.node}: {r.state}" + note
            if r.identity != r.id:
                tip += f"\nSubmitted as {r.identity}; migrated since (Age counts from that submit)."
            if r.stale:
                tip += f"\nThe node is not answering; {r.state} is its last known state ({self._last_seen(r)})."
            if r.state == "queued" and (r.reason or r.queue_position is not None):
                tip += "\nWaiting: " + (r.reason or "in the queue") + (f" (position {r.queue_position})" if r.queue_position is not None else "")
            return tip
        return None

    def _display(self, r: JobRow, col: int) -> str:
        if col == 0:
            return r.id
        if col == 1:
            return f"{r.name}  [Slurm]" if r.backend == "slurm" else r.name
        if col == 2:
            return r.node
        if col == 3:
            if r.stale:
                return f"stale ({r.state}) · {self._last_seen(r)}"
            if r.state == "queued" and (r.reason or r.queue_position is not None):
                pos = f" #{r.queue_position}" if r.queue_position is not None else ""
                return f"queued{pos}" + (f" — {r.reason}" if r.reason else "")
            if r.state == "migrating":
                f = migration_fraction(r.migration)
                return f"migrating {f * 100:.0f}%" if f is not None else "migrating"
            return r.state
        if col == 4:
            return f"{r.priority:+d}" if r.priority else "0"
        if col == 5:
            return ",".join(map(str, r.gpus)) or fmt.DASH
        if col == 6:
            return fmt.pct(r.cpu_pct)
        if col == 7:
            return fmt.human_bytes(r.mem_bytes)
        if col == 8:
            return fmt.DASH if r.throughput is None else f"{fmt.si(r.throughput)} {r.throughput_unit}"
        if col == 9:
            return fmt.duration(None if r.started_s is None else self.clock() - r.started_s)
        return ""

    def _last_seen(self, r: JobRow) -> str:
        if r.last_seen_s is None:
            return "never seen"
        return f"last seen {fmt.duration(max(0.0, self.clock() - r.last_seen_s))} ago"

    def _sort(self, r: JobRow, col: int):
        if col in (0, 1, 2):
            return natural_sort_text(self._display(r, col))
        if col == 4:
            return r.priority
        if col == 5:
            return len(r.gpus)
        if col == 6:
            return -1.0 if r.cpu_pct is None else r.cpu_pct
        if col == 7:
            return -1 if r.mem_bytes is None else r.mem_bytes
        if col == 8:
            return -1.0 if r.throughput is None else r.throughput
        if col == 9:
            return 0.0 if r.started_s is None else -r.started_s
        return self._display(r, col)


FILTER_COLUMNS = {c.lower(): i for i, c in enumerate(COLUMNS)} | {"job": 0, "gpu": 5, "mem": 7}


def parse_filter(text: str) -> tuple[list[str], list[tuple[int, str]]]:
    """``state:running node:r01 train`` -> (["train"], [(3, "running"), (2, "r01")]), lower case.
    A ``word:`` that names no column is an ordinary word (a job id such as ``a:b`` stays searchable)."""
    words: list[str] = []
    columns: list[tuple[int, str]] = []
    for token in text.lower().split():
        name, sep, value = token.partition(":")
        if sep and value and name in FILTER_COLUMNS:
            columns.append((FILTER_COLUMNS[name], value))
        else:
            words.append(token)
    return words, columns


class JobFilterProxy(QSortFilterProxyModel):
    """Sorts on typed values (ids naturally); filters by words (any column), ``column:text``
    (that column) and, with ``hide_ended``, drops jobs that ended."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.setDynamicSortFilter(True)
        self.hide_ended = False
        self._words: list[str] = []
        self._columns: list[tuple[int, str]] = []

    def set_filter_text(self, text: str) -> None:
        self._words, self._columns = parse_filter(text)
        self.invalidateFilter()

    def set_hide_ended(self, on: bool) -> None:
        self.hide_ended = on
        self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent) -> bool:
        model = self.sourceModel()
        r = model.rows[source_row]
        if self.hide_ended and r.state in TERMINAL_STATES:
            return False
        if not self._words and not self._columns:
            return True
        texts = [model._display(r, c).lower() for c in range(len(COLUMNS))]
        if any(value not in texts[c] for c, value in self._columns):
            return False
        return all(any(w in t for t in texts) for w in self._words)
