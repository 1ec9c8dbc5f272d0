"""The jobs table at 10,000 jobs: updates in place (never a model reset), natural id order,
"hide ended", per-column filters."""

from __future__ import annotations

import msgspec
import pytest

from agentd.protocol.messages import SnapshotReply
from tests.gui.gui_factories import inventory, job

pytestmark = [pytest.mark.gui]

NODES, PER_NODE = 100, 100


@pytest.fixture
def big():
    from gui.state import ClusterState

    st = ClusterState(clock=lambda: 1_000_100.0)
    for n in range(NODES):
        node = f"gpu-{n}"
        jobs = [job(f"{node}.{j}", state="running" if j % 10 else "queued", gpus=(j % 8,), name=f"train-{j}") for j in range(PER_NODE)]
        st.apply_snapshot(node, SnapshotReply(seq=1, inventory=inventory(node), jobs=jobs))
        st.set_link(node, "live")
    return st


def _spy(model):
    seen = {"reset": 0, "inserted": 0, "removed": 0, "changed_rows": 0}
    model.modelReset.connect(lambda: seen.__setitem__("reset", seen["reset"] + 1))
    model.rowsInserted.connect(lambda _p, a, b: seen.__setitem__("inserted", seen["inserted"] + b - a + 1))
    model.rowsRemoved.connect(lambda _p, a, b: seen.__setitem__("removed", seen["removed"] + b - a + 1))
    model.dataChanged.connect(lambda a, b, *_: seen.__setitem__("changed_rows", seen["changed_rows"] + b.row() - a.row() + 1))
    return seen


def test_an_update_of_100_jobs_changes_100_rows_and_never_resets(big):
    from gui.models.jobs import JobTableModel

    model = JobTableModel(big, clock=big.clock)
    model.refresh()
    assert model.rowCount() == NODES * PER_NODE
    seen = _spy(model)
    model.refresh()  # nothing changed: nothing announced
    assert seen == {"reset": 0, "inserted": 0, "removed": 0, "changed_rows": 0}
    for n in range(100):
        old = big.nodes[f"gpu-{n}"].jobs[f"gpu-{n}.{n % PER_NODE}"]
        big.apply_job(f"gpu-{n}", msgspec.structs.replace(old, state="paused", priority=3))
    model.refresh()
    assert seen == {"reset": 0, "inserted": 0, "removed": 0, "changed_rows": 100}
    # A new job is an inserted row, not a rebuilt model.
    big.apply_job("gpu-7", job("gpu-7.1000", name="late"))
    model.refresh()
    assert seen["reset"] == 0 and seen["inserted"] == 1 and seen["changed_rows"] == 100
    assert model.rows[-1].id == "gpu-7.1000"


def test_ids_sort_naturally_and_filters_work(qtbot, big):
    from PySide6.QtCore import Qt

    from gui.models.jobs import JobFilterProxy, JobTableModel, parse_filter

    model = JobTableModel(big, clock=big.clock)
    model.refresh()
    proxy = JobFilterProxy()
    proxy.setSourceModel(model)
    proxy.sort(0, Qt.SortOrder.AscendingOrder)
    ids = [proxy.index(r, 0).data() for r in range(25)]
    assert ids[:12] == [f"gpu-0.{j}" for j in range(12)]  # gpu-0.9 before gpu-0.10
    assert proxy.index(PER_NODE, 0).data() == "gpu-1.0"  # gpu-1.x before gpu-10.x and gpu-2.x
    assert parse_filter("state:queued node:gpu-7 train x:y") == (["train", "x:y"], [(3, "queued"), (2, "gpu-7")])
    proxy.set_filter_text("state:queued node:gpu-7")
    shown = {proxy.index(r, 0).data() for r in range(proxy.rowCount())}
    # node:gpu-7 matches gpu-7 and gpu-70..79; every shown job is queued.
    assert len(shown) == 11 * PER_NODE // 10 and all(big.job(j).state == "queued" for j in shown)
    proxy.set_filter_text("")
    ended = big.nodes["gpu-3"].jobs["gpu-3.5"]
    big.apply_job("gpu-3", msgspec.structs.replace(ended, state="succeeded", ended_s=1_000_090.0))
    model.refresh()
    assert proxy.rowCount() == NODES * PER_NODE
    proxy.set_hide_ended(True)
    assert proxy.rowCount() == NODES * PER_NODE - 1


def test_a_change_outside_the_sort_column_is_announced_without_it_and_order_follows_the_sort_column(qtbot, big):
    """Sorted by id, a priority change is announced without column 0, so the proxy does not
    re-sort 10,000 rows for it; sorted by priority, the same change moves the row."""
    from PySide6.QtCore import Qt

    from gui.models.jobs import JobFilterProxy, JobTableModel

    model = JobTableModel(big, clock=big.clock)
    model.refresh()
    proxy = JobFilterProxy()
    proxy.setSourceModel(model)
    proxy.sort(0, Qt.SortOrder.AscendingOrder)
    assert model.sort_column == 0
    ranges: list[tuple[int, int]] = []
    model.dataChanged.connect(lambda a, b, *_: ranges.append((a.column(), b.column())))
    old = big.nodes["gpu-5"].jobs["gpu-5.7"]
    big.apply_job("gpu-5", msgspec.structs.replace(old, priority=9))
    model.refresh()
    assert ranges and all(a > 0 for a, _ in ranges), f"sorted by id, a priority change named column 0: {ranges}"
    assert [proxy.index(r, 0).data() for r in range(3)] == ["gpu-0.0", "gpu-0.1", "gpu-0.2"]
    proxy.sort(4, Qt.SortOrder.DescendingOrder)  # by priority: the change must move the row
    assert model.sort_column == 4
    ranges.clear()
    big.apply_job("gpu-5", msgspec.structs.replace(old, priority=12))
    model.refresh()
    assert any(a <= 4 <= b for a, b in ranges)
    assert proxy.index(0, 0).data() == "gpu-5.7"
