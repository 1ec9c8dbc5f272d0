"""The job table: a tree model over ClusterState.job_rows(), and its filter proxy.

A group (the ranks of one gang job, gui/groups.py) is one top-level row, its ranks its children
("16/16 running", the nodes, summed throughput, the worst rank the radar names); every other job
is a top-level row without children.

Built for 10,000 jobs: an update changes only the rows whose values changed (``dataChanged`` per
run of changed rows), inserts and removes rows for jobs that came and went, and never resets the
model, so selection, scroll position and sort survive. The proxy sorts ids naturally
(``gpu-a.9`` before ``gpu-a.10``), can hide ended jobs, and filters per column
(``state:running node:r01 train``: each ``column:text`` must match that column, other words any).
"""

from __future__ import annotations

import dataclasses
import time

from PySide6.QtCore import (
    QAbstractItemModel,
    QModelIndex,
    QObject,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QColor, QFont

from agentd.protocol.jobs import TERMINAL_STATES
from gui import fmt
from gui.groups import GroupRow, group_rows
from gui.radar import RADAR_BAD
from gui.state import ClusterState, JobRow, migration_fraction, natural_sort_text
from gui.theme import STATE_COLOURS, job_colour

COLUMNS = ("ID", "Name", "Node", "State", "Priority", "GPUs", "CPU", "Memory", "Throughput", "Age")
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
JOB_ID_ROLE = Qt.ItemDataRole.UserRole + 2  # a job's id; a group row's group id
RANK_IDS_ROLE = Qt.ItemDataRole.UserRole + 3  # the job ids an action on the row acts on
GROUP_ROLE = Qt.ItemDataRole.UserRole + 4  # the group id of a group row or of a rank's row ("" none)
RADAR_COLOURS = {"straggler": "#e07b00", "hung": "#d32f2f"}
_ROOT = QModelIndex()  # the invisible root (a default argument; Qt copies indexes, never changes them)


class JobTableModel(QAbstractItemModel):
    """One top-level row per job or group; a group's ranks beneath it. ``refresh()`` re-reads the
    state: values change in place, rows are inserted/removed only when the set of jobs (or a
    group's set of ranks) changed, never a reset, so selection and expansion survive."""

    def __init__(self, state: ClusterState, clock=time.time, parent=None) -> None:
        super().__init__(parent)
        self.state = state
        self.clock = clock
        self.rows: list[JobRow] = []  # top level: JobRow, or GroupRow with its ranks
        self.show_migrated = False  # list the superseded hops of migrated jobs too
        # A rank's index carries its group's stable number (internalId), not the group's row:
        # rows above it come and go, the number stays. 0 is the top level.
        self._gnum: dict[str, int] = {}
        self._gname: dict[int, str] = {}
        self._gpos: dict[str, int] = {}  # group id -> its top-level row now
        self.sort_column = -1  # the proxy's sort column (JobFilterProxy.sort sets it); -1: unknown

    def refresh(self) -> None:
        new = group_rows(self.state.job_rows(show_migrated=self.show_migrated), self.state.nodes, self.state.radar)
        if [r.id for r in new] == [r.id for r in self.rows]:
            old, self.rows = self.rows, new
            self._reindex_groups()
            self._emit_changed([i for i, (a, b) in enumerate(zip(old, new)) if a is not b and a != b and not self._sync_ranks(i, a, b)], old)
            return
        old_ids = {r.id: i for i, r in enumerate(self.rows)}
        new_ids = {r.id for r in new}
        # Remove vanished rows from the bottom up, then append new ones: keeps selections.
        for i in sorted((i for rid, i in old_ids.items() if rid not in new_ids), reverse=True):
            self.beginRemoveRows(QModelIndex(), i, i)
            gone = self.rows.pop(i)
            self._gpos.pop(gone.id, None)
            for g, p in self._gpos.items():
                if p > i:
                    self._gpos[g] = p - 1
            self.endRemoveRows()
        by_id = {r.id: r for r in new}
        old = self.rows
        self.rows = [by_id[r.id] for r in old]
        self._reindex_groups()
        changed = [i for i, (a, b) in enumerate(zip(old, self.rows)) if a is not b and a != b and not self._sync_ranks(i, a, b)]
        have = {r.id for r in self.rows}
        added = [r for r in new if r.id not in have]
        if added:
            self.beginInsertRows(QModelIndex(), len(self.rows), len(self.rows) + len(added) - 1)
            self.rows.extend(added)
            self._reindex_groups()
            self.endInsertRows()
        self._emit_changed(changed, old)

    def _reindex_groups(self) -> None:
        self._gpos = {r.id: i for i, r in enumerate(self.rows) if isinstance(r, GroupRow)}
        for g in self._gpos:
            if g not in self._gnum:
                self._gnum[g] = n = len(self._gnum) + 1
                self._gname[n] = g

    def _sync_ranks(self, i: int, old: JobRow, new: JobRow) -> bool:
        """A group row changed: its ranks follow (inserted/removed when the set of ranks changed,
        else dataChanged for the ranks that did). Returns False: the group's own row changed too."""
        if not isinstance(new, GroupRow):
            return False
        parent = self.index(i, 0)
        before = old.ranks if isinstance(old, GroupRow) else ()
        if [r.id for r in before] != [r.id for r in new.ranks]:
            if before:
                self.beginRemoveRows(parent, 0, len(before) - 1)
                self.rows[i] = dataclasses.replace(new, ranks=())
                self.endRemoveRows()
            if new.ranks:
                self.beginInsertRows(parent, 0, len(new.ranks) - 1)
                self.rows[i] = new
                self.endInsertRows()
            return False
        old_status = old.rank_status if isinstance(old, GroupRow) else ()
        for k, (a, b) in enumerate(zip(before, new.ranks)):
            if a != b or old_status[k:k + 1] != new.rank_status[k:k + 1]:
                self.dataChanged.emit(self.index(k, 0, parent), self.index(k, len(COLUMNS) - 1, parent))
        return False

    def _emit_changed(self, rows: list[int], old: list[JobRow]) -> None:
        """One dataChanged per run of consecutive changed rows. Ages and "last seen" move with
        the clock, not with the rows: the view repaints those (JobsPanel.refresh).

        A row whose value in the proxy's sort column did not change is announced without that
        column: QSortFilterProxyModel re-sorts a changed row only when the sort column is in
        the changed range, and re-sorting 3,000 rows whose throughput moved (sorted by id)
        cost ~100 ms a refresh in Python sort-role calls at 1,000 nodes."""
        sc, last = self.sort_column, len(COLUMNS) - 1

        def emit(start: int, end: int, resort: bool) -> None:
            if resort or not 0 <= sc <= last:
                self.dataChanged.emit(self.index(start, 0), self.index(end, last))
                return
            if sc > 0:
                self.dataChanged.emit(self.index(start, 0), self.index(end, sc - 1))
            if sc < last:
                self.dataChanged.emit(self.index(start, sc + 1), self.index(end, last))

        start = prev = -1
        run_resort = False
        for i in rows:
            resort = not 0 <= sc <= last or self._sort_moved(old[i], self.rows[i], sc)
            if start >= 0 and (i != prev + 1 or resort != run_resort):
                emit(start, prev, run_resort)
                start = -1
            if start < 0:
                start, run_resort = i, resort
            prev = i
        if start >= 0:
            emit(start, prev, run_resort)

    def _sort_moved(self, a: JobRow, b: JobRow, col: int) -> bool:
        """Whether a top-level row's sort value in ``col`` changed. Text columns compare their
        text: the natural-sort key is the costly part (3,000 rows a second at 1,000 nodes)."""
        if col in (0, 1, 2):
            return self._display(a, col) != self._display(b, col)
        return bool(self._sort(a, col) != self._sort(b, col))

    # ---- the tree ----
    def index(self, row: int, column: int, parent=_ROOT):
        if column < 0 or column >= len(COLUMNS) or row < 0:
            return QModelIndex()
        if not parent.isValid():
            return self.createIndex(row, column, 0) if row < len(self.rows) else QModelIndex()
        if parent.internalId() != 0 or parent.row() >= len(self.rows):
            return QModelIndex()
        g = self.rows[parent.row()]
        if isinstance(g, GroupRow) and row < len(g.ranks):
            return self.createIndex(row, column, self._gnum[g.id])
        return QModelIndex()

    def parent(self, index=None):
        if index is None:  # QObject.parent()
            return QObject.parent(self)
        if not index.isValid() or index.internalId() == 0:
            return QModelIndex()
        pos = self._gpos.get(self._gname.get(index.internalId(), ""))
        return QModelIndex() if pos is None else self.createIndex(pos, 0, 0)

    def hasChildren(self, parent=_ROOT) -> bool:
        return self.rowCount(parent) > 0

    def node_at(self, index) -> tuple[JobRow, GroupRow | None, int]:
        """(the row at ``index``, its group row when it is a rank, its place among the ranks)."""
        if index.internalId() == 0:
            return self.rows[index.row()], None, -1
        g = self.rows[self._gpos[self._gname[index.internalId()]]]
        assert isinstance(g, GroupRow)
        return g.ranks[index.row()], g, index.row()

    def rowCount(self, parent=_ROOT) -> int:
        if not parent.isValid():
            return len(self.rows)
        if parent.internalId() != 0 or parent.column() != 0 or parent.row() >= len(self.rows):
            return 0
        g = self.rows[parent.row()]
        return len(g.ranks) if isinstance(g, GroupRow) else 0

    def columnCount(self, parent=_ROOT) -> int:
        return len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def row(self, i: int) -> JobRow:
        return self.rows[i]

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        r, group, k = self.node_at(index)
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(r, col, group, k)
        if role == SORT_ROLE:
            return self._sort(r, col, group, k)
        if role == JOB_ID_ROLE:
            return r.id
        if role == RANK_IDS_ROLE:
            return [x.id for x in r.ranks] if isinstance(r, GroupRow) else [r.id]
        if role == GROUP_ROLE:
            return r.id if isinstance(r, GroupRow) else group.id if group is not None else ""
        if role == Qt.ItemDataRole.DecorationRole and col == 0:
            # The job's colour on the map and in the charts; a group's ranks share the group's.
            return job_colour(group.id if group is not None else r.identity)
        radar = _radar_status(r, group, k)
        if role == Qt.ItemDataRole.ForegroundRole and col == 3 and radar in RADAR_BAD and not r.stale:
            return QColor(RADAR_COLOURS[radar])
        if role == Qt.ItemDataRole.FontRole and col == 3 and radar in RADAR_BAD:
            f = QFont()
            f.setBold(True)
            return f
        if role == Qt.ItemDataRole.ForegroundRole and col == 3:
            return QColor(STATE_COLOURS.get("stale" if r.stale else r.state, "#888888"))
        if role == Qt.ItemDataRole.ForegroundRole and r.stale:
            return QColor("#8a8a8a")  # old news: greyed, so it does not pass for live numbers
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (4, 6, 7, 8, 9):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(r, group, k)
        return None

    def _tooltip(self, r: JobRow, group: GroupRow | None, k: int) -> str:
        if isinstance(r, GroupRow):
            roles = _role_counts(r)
            tip = (f"Group {r.name} ({r.id}): {r.world_size} ranks on {r.node_count} nodes"
                   + (f" — {roles}" if roles else "") + f"\n{self._display(r, 3)}")
            if r.role_throughput:
                tip += "\nThroughput: " + ", ".join(f"{role or 'all'} {fmt.si(v)} {u}" for role, v, u in r.role_throughput)
            v = self.state.radar.verdict(r.id, r.worst_rank) if r.worst_rank is not None else None
            if v is not None:
                tip += f"\nRadar: rank {v.rank} on {v.node} is {v.status}" + (f" ({v.cls})" if v.cls else "") + (f": {v.evidence}" if v.evidence else "")
            return tip + "\nActions on this row act on every rank."
        note = " — a Slurm job: actions go through scontrol/scancel" if r.backend == "slurm" else (" — " + r.kind if r.kind == "agent" else "")
        tip = f"{r.name} ({r.id}) on {r.node}: {r.state}" + note
        if group is not None:
            tip += f"\nRank {group.rank_numbers[k]} of {group.world_size} in group {group.name} ({group.id})"
            v = self.state.radar.verdict(group.id, group.rank_numbers[k])
            if v is not None:
                tip += f"\nRadar: {v.status}" + (f" ({v.cls})" if v.cls else "") + (f": {v.evidence}" if v.evidence else "")
        if r.identity != r.id:
            tip += f"\nSubmitted as {r.identity}; migrated since (Age counts from that submit)."
        if r.stale:
            tip += f"\nThe node is not answering; {r.state} is its last known state ({self._last_seen(r)})."
        if r.state == "queued" and (r.reason or r.queue_position is not None):
            tip += "\nWaiting: " + (r.reason or "in the queue") + (f" (position {r.queue_position})" if r.queue_position is not None else "")
        return tip

    def _display(self, r: JobRow, col: int, group: GroupRow | None = None, k: int = -1) -> str:
        if isinstance(r, GroupRow):
            return self._group_display(r, col)
        if group is not None and col == 1:
            role = group.roles[k]
            return f"rank {group.rank_numbers[k]}" + (f" · {role}" if role else "")
        if group is not None and col == 3 and group.rank_status[k] in RADAR_BAD:
            return f"{self._display(r, 3)} · {group.rank_status[k]}"
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

    def _group_display(self, g: GroupRow, col: int) -> str:
        if col == 1:
            roles = _role_counts(g)
            return f"{g.name}  ·  {g.world_size} ranks" + (f" ({roles})" if roles else "")
        if col == 3:
            n = sum(1 for x in g.ranks if x.state == g.state)
            text = f"{n}/{g.world_size} {g.state}" + (f" — {g.reason}" if g.reason and g.state in ("queued", "failed") else "")
            if g.stale:
                text = f"stale ({text}) · {self._last_seen(g)}"
            if g.worst_rank is not None:
                text += f" · rank {g.worst_rank} {g.worst}"
            return text
        if col == 5:
            return f"{len(g.gpus)} GPUs" if g.gpus else fmt.DASH
        if col == 8 and g.throughput is None and g.role_throughput:
            return " · ".join(f"{fmt.si(v)} {u}" for _role, v, u in g.role_throughput)
        return self._display(JobRow(**{f.name: getattr(g, f.name) for f in dataclasses.fields(JobRow)}), col)

    def _sort(self, r: JobRow, col: int, group: GroupRow | None = None, k: int = -1):
        if group is not None and col in (0, 1):
            return group.rank_numbers[k]  # ranks in rank order, whatever the ids
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
        return self._display(r, col, group, k)


def _radar_status(r: JobRow, group: GroupRow | None, k: int) -> str:
    if isinstance(r, GroupRow):
        return r.worst
    return group.rank_status[k] if group is not None else ""


def _role_counts(g: GroupRow) -> str:
    """"2 trainer, 6 rollout" (ranks per role), "" for a group without roles."""
    counts: dict[str, int] = {}
    for role in g.roles:
        if role:
            counts[role] = counts.get(role, 0) + 1
    return ", ".join(f"{n} {role}" for role, n in counts.items())


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
        self.setRecursiveFilteringEnabled(True)  # a group shows when one of its ranks matches
        self.hide_ended = False
        self._words: list[str] = []
        self._columns: list[tuple[int, str]] = []

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        # The model announces changes without the sort column when its values did not move
        # (JobTableModel._emit_changed), so it must know which column that is.
        model = self.sourceModel()
        if isinstance(model, JobTableModel):
            model.sort_column = column
        super().sort(column, order)

    def set_filter_text(self, text: str) -> None:
        self._words, self._columns = parse_filter(text)
        self.invalidateFilter()

    def set_hide_ended(self, on: bool) -> None:
        self.hide_ended = on
        self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent) -> bool:
        if not self.hide_ended and not self._words and not self._columns:
            return True  # no filter: asked for every changed row (3,000 a second at 1,000 nodes)
        model = self.sourceModel()
        r, group, k = model.node_at(model.index(source_row, 0, source_parent))
        if self.hide_ended and r.state in TERMINAL_STATES:
            return False
        if not self._words and not self._columns:
            return True
        # A rank is shown with its group when the group matches (the filter named the group).
        return self._matches(model, r, group, k) or (group is not None and self._matches(model, group, None, -1))

    def _matches(self, model: JobTableModel, r: JobRow, group: GroupRow | None, k: int) -> bool:
        texts = [model._display(r, c, group, k).lower() for c in range(len(COLUMNS))]
        if any(value not in texts[c] for c, value in self._columns):
            return False
        return all(any(w in t for t in texts) for w in self._words)
