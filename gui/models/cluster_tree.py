"""The cluster tree: nodes -> GPUs -> jobs (CPU-only jobs directly under their node).

A QStandardItemModel kept in step with ClusterState by :meth:`ClusterTreeModel.refresh`:
items are matched by key and updated in place, so expansion and selection survive updates.
"""

from __future__ import annotations

from PySide6.QtCore import QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor, QStandardItem, QStandardItemModel

from gui import fmt
from gui.state import TERMINAL_STATES, ClusterState
from gui.theme import LINK_COLOURS, STATE_COLOURS, link_text

KEY_ROLE = Qt.ItemDataRole.UserRole + 1  # ("node", key) | ("gpu", key, index) | ("job", key, job_id)


class ClusterTreeModel(QStandardItemModel):
    """The tree of ClusterState. :meth:`refresh` costs O(changed): a node's rows are redone
    only when its ``NodeState.rev`` moved (or its texts age: a node not live, a finished job
    leaving), and, when the view says which nodes it shows, only those; the others wait,
    marked dirty, until they scroll into view (``refresh(visible=...)`` again)."""

    AGE_REFRESH_S = 10.0  # texts that depend on the clock alone ("last seen 5 s ago") age this often

    def __init__(self, state: ClusterState, parent=None) -> None:
        super().__init__(parent)
        self.state = state
        self.setHorizontalHeaderLabels(["Cluster", "Status"])
        self._keys: list[str] = []  # top-level rows, in order
        self._drawn: dict[str, int] = {}  # node key -> NodeState.rev its rows show
        self._aged_at = 0.0
        self.updated = 0  # nodes redone by the last refresh (for tests and the bench)

    def refresh(self, visible: set[str] | None = None) -> int:
        """Bring the rows up to date. ``visible``: the node keys the view shows (None: all).
        Returns how many nodes were redone."""
        keys = list(self.state.nodes)
        if keys != self._keys:
            # Nodes came or went: the top level follows, children of a new node are built once
            # (so the scroll range and expansion are right); known nodes keep their rows.
            root = self.invisibleRootItem()
            _sync(root, [(("node", k), self._node_texts(k), None) for k in keys])
            for k in set(self._drawn) - set(keys):
                del self._drawn[k]
            self._keys = keys
        now = self.state.clock()
        if now - self._aged_at >= self.AGE_REFRESH_S:
            self._aged_at = now
            self._drawn = dict.fromkeys(self._drawn, -1)  # built, but redo when next shown
        updated = 0
        root = self.invisibleRootItem()
        for row, key in enumerate(keys):
            node = self.state.nodes[key]
            drawn = self._drawn.get(key)
            if drawn == node.rev and node.status == "live":
                continue
            if drawn is not None and visible is not None and key not in visible:
                continue  # off screen: redone when it scrolls into view
            item = root.child(row, 0)
            _sync_row(item, root.child(row, 1), self._node_texts(key), self._node_children(key))
            self._drawn[key] = node.rev
            updated += 1
        self.updated = updated
        return updated

    def _node_texts(self, key: str):
        node = self.state.nodes[key]
        d = node.derived
        gpus = len(node.inventory.gpus) if node.inventory else 0
        active = sum(1 for j in node.jobs.values() if j.state in ("running", "paused", "checkpointing", "migrating"))
        name = key if node.name == key else f"{key} ({node.name})"
        status = link_text(node.status, self.state.live_source)
        if d is not None and node.link == "live":
            status += f" · CPU {fmt.pct(d.cpu_pct)}"
        detail = f"{gpus} GPUs, {active} active jobs"
        if node.inventory and node.inventory.gpu_status not in ("", "ok", "simulated"):
            detail += f" — {node.inventory.gpu_status}"
        if node.status != "live" and node.last_heard_s:
            detail += f" — {self.state.last_seen_text(key)}"
        return (name, status, LINK_COLOURS.get(node.status), detail)

    def _node_children(self, key: str):
        node = self.state.nodes[key]
        out = []
        gpus = node.inventory.gpus if node.inventory else []
        visible = self.state.visible_jobs(key)  # sorted once for the node, not once per GPU
        active = [j for j in visible if j.state not in TERMINAL_STATES]
        for g in gpus:
            dg = node.gpu(g.index)
            jobs = [j for j in active if g.index in j.gpus]
            util = None if dg is None else dg.sm_util_pct
            mem = "" if dg is None or dg.mem_used_bytes is None else f" · {fmt.human_bytes(dg.mem_used_bytes)}"
            children = [(("job", key, j.id, g.index), self._job_texts(key, j.id, "")) for j in jobs]
            children = [(k, t, []) for k, t in children]
            out.append((("gpu", key, g.index), (f"GPU{g.index}", f"{fmt.pct(util)}{mem}", None, f"{g.name} — {g.uuid}"), children))
        for j in visible:
            if not j.gpus:
                out.append((("job", key, j.id, None), self._job_texts(key, j.id, ", CPU only"), []))
        return out

    def _job_texts(self, key: str, job_id: str, note: str):
        j = self.state.nodes[key].jobs[job_id]
        if self.state.stale_job(job_id):
            seen = self.state.last_seen_text(key)
            return (j.name or j.id, f"stale ({j.state}) · {j.id}", STATE_COLOURS["stale"],
                    f"{j.name} ({j.id}): last known state {j.state}{note}; node not answering, {seen}")
        return (j.name or j.id, f"{j.state} · {j.id}", STATE_COLOURS.get(j.state), f"{j.name} ({j.id}): {j.state}{note}")


def _sync(parent: QStandardItem, desired) -> None:
    """Make ``parent``'s rows equal ``desired`` [(key, (text, status, colour, tooltip), children)];
    children None: a row's children are left as they are (a new row gets none)."""
    want = {d[0] for d in desired}
    # Drop rows whose key is gone (bottom up).
    for row in range(parent.rowCount() - 1, -1, -1):
        if parent.child(row, 0).data(KEY_ROLE) not in want:
            parent.removeRow(row)
    have = [parent.child(r, 0).data(KEY_ROLE) for r in range(parent.rowCount())]
    have_set = set(have)
    for pos, (key, texts, children) in enumerate(desired):
        if pos < len(have) and have[pos] == key:
            item, status = parent.child(pos, 0), parent.child(pos, 1)
        elif key in have_set:
            row = have.index(key)
            items = parent.takeRow(row)
            parent.insertRow(pos, items)
            have.insert(pos, have.pop(row))
            item, status = items
        else:
            item, status = QStandardItem(), QStandardItem()
            item.setEditable(False)
            status.setEditable(False)
            item.setData(key, KEY_ROLE)
            status.setData(key, KEY_ROLE)
            parent.insertRow(pos, [item, status])
            have.insert(pos, key)
            have_set.add(key)
        _sync_row(item, status, texts, children)


def _sync_row(item: QStandardItem, status: QStandardItem, texts, children) -> None:
    """One row's texts, colour and tooltip, set only where they differ, then its children."""
    text, stext, colour, tip = texts
    if item.text() != text:
        item.setText(text)
    if status.text() != stext:
        status.setText(stext)
    if colour:
        brush = QBrush(QColor(colour))
        if status.foreground() != brush:
            status.setForeground(brush)
    if item.toolTip() != tip:
        item.setToolTip(tip)
        status.setToolTip(tip)
    if children is not None:
        _sync(item, children)


class TreeFilterProxy(QSortFilterProxyModel):
    """Search: a row stays when it or any descendant matches (parents of matches stay)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setRecursiveFilteringEnabled(True)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setFilterKeyColumn(-1)
