"""The cluster tree: nodes -> GPUs -> jobs (CPU-only jobs directly under their node).

A QStandardItemModel kept in step with ClusterState by :meth:`ClusterTreeModel.refresh`:
items are matched by key and updated in place, so expansion and selection survive updates.
"""

from __future__ import annotations

from PySide6.QtCore import QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor, QStandardItem, QStandardItemModel

from gui import fmt
from gui.state import ClusterState
from gui.theme import LINK_COLOURS, STATE_COLOURS, link_text

KEY_ROLE = Qt.ItemDataRole.UserRole + 1  # ("node", key) | ("gpu", key, index) | ("job", key, job_id)


class ClusterTreeModel(QStandardItemModel):
    def __init__(self, state: ClusterState, parent=None) -> None:
        super().__init__(parent)
        self.state = state
        self.setHorizontalHeaderLabels(["Cluster", "Status"])

    def refresh(self) -> None:
        desired = []
        for key in self.state.nodes:
            desired.append((("node", key), self._node_texts(key), self._node_children(key)))
        _sync(self.invisibleRootItem(), desired)

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
        for g in gpus:
            dg = node.gpu(g.index)
            jobs = self.state.jobs_on_gpu(key, g.index)
            util = None if dg is None else dg.sm_util_pct
            mem = "" if dg is None or dg.mem_used_bytes is None else f" · {fmt.human_bytes(dg.mem_used_bytes)}"
            children = [(("job", key, j.id, g.index), self._job_texts(key, j.id, "")) for j in jobs]
            children = [(k, t, []) for k, t in children]
            out.append((("gpu", key, g.index), (f"GPU{g.index}", f"{fmt.pct(util)}{mem}", None, f"{g.name} — {g.uuid}"), children))
        for j in self.state.visible_jobs(key):
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
    """Make ``parent``'s rows equal ``desired`` [(key, (text, status, colour, tooltip), children)]."""
    want = [d[0] for d in desired]
    # Drop rows whose key is gone (bottom up).
    for row in range(parent.rowCount() - 1, -1, -1):
        if parent.child(row, 0).data(KEY_ROLE) not in want:
            parent.removeRow(row)
    have = [parent.child(r, 0).data(KEY_ROLE) for r in range(parent.rowCount())]
    for pos, (key, texts, children) in enumerate(desired):
        if pos < len(have) and have[pos] == key:
            item, status = parent.child(pos, 0), parent.child(pos, 1)
        elif key in have:
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
        _sync(item, children)


class TreeFilterProxy(QSortFilterProxyModel):
    """Search: a row stays when it or any descendant matches (parents of matches stay)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setRecursiveFilteringEnabled(True)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setFilterKeyColumn(-1)
