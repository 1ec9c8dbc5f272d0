"""What the app shows: stale nodes and their jobs, one node state, the job table, the status bar
and the event log. Real Qt widgets (offscreen) over a ClusterState fed hand-made protocol structs;
removing a node goes through a real window and daemon."""

from __future__ import annotations

import json

import pytest

from agentd.protocol.jobs import Event
from agentd.protocol.messages import EventMsg, SampleMsg

from .conftest import wait_until
from .gui_factories import job, sample, snapshot

pytestmark = [pytest.mark.gui, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]

T0 = 1_000_000.0


def _state(now):
    from gui.state import ClusterState

    return ClusterState(clock=lambda: now[0])


def _live_cluster(now, jobs):
    st = _state(now)
    st.set_link("n1", "live")
    st.apply_snapshot("n1", snapshot(samples=[sample(t=0.0, jobs={j.id: 0 for j in jobs})], jobs=jobs))
    st.apply_message("n1", SampleMsg(node="n1", seq=11, sample=sample(t=2.0, jobs={j.id: 1_000_000 for j in jobs})))
    return st


# ---- a node that stops answering ---------------------------------------------------------

def test_jobs_of_a_stale_node_read_stale_with_last_seen_everywhere(qtbot):
    from gui.models.cluster_tree import ClusterTreeModel
    from gui.models.jobs import JobTableModel
    from gui.views.topology import TopologyCanvas

    now = [T0 + 10]
    st = _live_cluster(now, [job("n1.1", gpus=(0,))])
    (row,) = st.job_rows()
    assert not row.stale and row.cpu_pct is not None, "live node: live numbers"
    st.set_link("n1", "stale")
    now[0] += 125
    (row,) = st.job_rows()
    assert row.stale and row.state == "running"
    assert row.cpu_pct is None and row.mem_bytes is None and row.throughput is None, "no live-looking numbers"
    # the table
    model = JobTableModel(st, clock=lambda: now[0])
    model.refresh()
    shown = model.data(model.index(0, 3))
    assert shown.startswith("stale") and "last seen 2 m 05 s ago" in shown, shown
    assert model.data(model.index(0, 6)) == "—"
    # the tree
    tree = ClusterTreeModel(st)
    tree.refresh()
    gpu0 = tree.item(0).child(0)
    job_status = gpu0.child(0, 1).text()
    assert job_status.startswith("stale"), job_status
    assert "last seen" in gpu0.child(0, 0).toolTip()
    # the map chips
    canvas = TopologyCanvas(st)
    qtbot.addWidget(canvas)
    canvas.refresh()
    (chip,) = canvas.chips.values()
    assert chip.state == "stale" and "stale" in chip.toolTip()
    # the charts: nothing new is appended for a node that does not answer
    t, _ = st.series.get(("n1", "", "cpu_pct"))
    assert t[-1] == pytest.approx(T0 + 2.0)
    # back to live: live again
    st.set_link("n1", "live")
    assert not st.job_rows()[0].stale


def test_a_remembered_node_that_never_answers_reads_one_state():
    now = [T0]
    st = _state(now)
    seen = set()
    # what a LiveSource emits for a node that cannot be reached: it retries, and fails again
    for link in ("connecting", "stale", "down", "connecting", "stale", "down"):
        st.set_link("far", link)
        if link != "connecting" or seen:
            seen.add(st.nodes["far"].status)
    assert seen == {"unreachable"}, seen
    assert st.summary() == {"nodes": 1, "unreachable": 1}
    st.set_link("far", "live")
    assert st.nodes["far"].status == "live"


@pytest.mark.qt_log_ignore("does not support propagateSizeHints", "does not support raise", "does not support grabbing")  # a popup, offscreen
def test_a_node_added_in_the_app_can_be_removed(qtbot, agentd, open_window, settings):
    from gui.sources.base import NodeAddress

    w = open_window(agentd)
    wait_until(qtbot, lambda: w.state.nodes.get(agentd.node) and w.state.nodes[agentd.node].link == "live", what="live node")
    w.add_node(NodeAddress(key="gone", endpoint="tcp://127.0.0.1:9"), remember=True)
    assert [a.key for a in w.remembered_nodes()] == ["gone"]
    wait_until(qtbot, lambda: (w.refresh_views(), w.tree_model.rowCount() == 2)[1], what="two nodes in the tree")
    # the tree offers the removal on a node's context menu
    from PySide6.QtWidgets import QMenu

    row = next(r for r in range(w.tree_proxy.rowCount()) if "gone" in w.tree_proxy.index(r, 0).data())
    w._tree_menu(w.tree.visualRect(w.tree_proxy.index(row, 0)).center())
    menus = [m for m in w.findChildren(QMenu) if any("Remove node gone" in a.text() for a in m.actions())]
    assert menus, "the context menu offers 'Remove node gone'"
    next(a for a in menus[-1].actions() if "Remove node" in a.text()).trigger()
    menus[-1].close()
    w.refresh_views()
    assert "gone" not in w.state.nodes and "gone" not in w.source.nodes()
    assert w.tree_model.rowCount() == 1
    assert json.loads(settings.value("nodes/remembered")) == []


# ---- the job table -----------------------------------------------------------------------

def _panel(qtbot, st):
    from gui.actions import Actions
    from gui.sources.live import LiveSource
    from gui.views.jobs import JobsPanel

    source = LiveSource([])  # never started: nothing is sent
    panel = JobsPanel(st, Actions(source, st))
    qtbot.addWidget(panel)
    panel.refresh()
    return panel


def test_job_ids_sort_naturally_and_the_count_follows_the_filter(qtbot):
    now = [T0 + 10]
    st = _state(now)
    st.apply_snapshot("gpu-a", snapshot("gpu-a", jobs=[job(f"gpu-a.{i}", name=f"j{i}") for i in (10, 2, 1)]))
    st.apply_snapshot("node10", snapshot("node10", jobs=[job("node10.1", name="x")]))
    st.apply_snapshot("node2", snapshot("node2", jobs=[job("node2.1", name="y")]))
    panel = _panel(qtbot, st)
    ids = [panel.proxy.index(r, 0).data() for r in range(panel.proxy.rowCount())]
    assert ids == ["gpu-a.1", "gpu-a.2", "gpu-a.10", "node2.1", "node10.1"]
    assert panel.count.text() == "5 jobs"
    panel.filter.setText("gpu-a")
    assert panel.proxy.rowCount() == 3
    assert panel.count.text() == "3 of 5 jobs"
    panel.filter.clear()
    assert panel.count.text() == "5 jobs"


def test_set_priority_asks_for_the_value(qtbot):
    now = [T0 + 10]
    st = _state(now)
    st.set_link("n1", "live")
    st.apply_snapshot("n1", snapshot(jobs=[job("n1.1", priority=3)]))
    panel = _panel(qtbot, st)
    asked = []
    panel.actions.set_priority = lambda ids, p: asked.append((ids, p))  # the send itself is tested live
    panel.select(["n1.1"])
    panel.update_enabled()
    panel.act_priority.trigger()
    dlg = panel.priority_dialog
    assert dlg is not None, "Set priority opens a dialog"
    assert (dlg.spin.minimum(), dlg.spin.maximum(), dlg.spin.value()) == (-10, 10, 3)
    dlg.spin.setValue(-7)
    dlg.accept()
    assert asked == [(["n1.1"], -7)]
    panel.act_priority.trigger()
    panel.priority_dialog.reject()
    assert len(asked) == 1, "cancel sends nothing"


def test_queued_jobs_say_why_they_wait(qtbot):
    from gui.models.jobs import JobTableModel

    now = [T0 + 10]
    st = _state(now)
    st.apply_snapshot("n1", snapshot(jobs=[job("n1.1", state="queued", gpus=(), reason="waiting for 2 free GPUs", queue_position=2)]))
    model = JobTableModel(st, clock=lambda: now[0])
    model.refresh()
    text = model.data(model.index(0, 3))
    assert text == "queued #2 — waiting for 2 free GPUs"
    from PySide6.QtCore import Qt

    assert "waiting for 2 free GPUs" in model.data(model.index(0, 0), Qt.ItemDataRole.ToolTipRole)


def test_status_messages_do_not_hide_the_node_link_dots(qtbot):
    from gui.views.statusbar import StatusBar

    now = [T0]
    st = _state(now)
    st.set_link("n1", "live")
    bar = StatusBar(st)
    qtbot.addWidget(bar)
    bar.show()
    bar.refresh()
    assert bar.links.isVisible() and "n1" in bar.links.text()
    bar.showMessage("⚠ something failed", 5000)
    qtbot.wait(20)
    assert bar.currentMessage().startswith("⚠")
    assert bar.links.isVisible(), "the link dots stay while a message shows"


# ---- the event log -----------------------------------------------------------------------

def _log_with_events(qtbot):
    from gui.views.events import EventLog

    now = [T0 + 100]
    st = _state(now)
    st.apply_snapshot("127.0.0.1:7001", snapshot("gpu-a", jobs=[job("gpu-a.1"), job("gpu-a.2")]))
    log = EventLog(st)
    qtbot.addWidget(log)
    key = "127.0.0.1:7001"
    evs = [
        Event(wall_s=T0 + 5, node=key, kind="job.state", message="gpu-a.1 running", job_id="gpu-a.1"),
        *[Event(wall_s=T0 + 10 + i, node=key, kind="tool_call", message=f"call search #{i}", job_id="gpu-a.1") for i in range(6)],
        *[Event(wall_s=T0 + 12 + i, node=key, kind="tool_call", message=f"call fetch #{i}", job_id="gpu-a.2") for i in range(3)],
        Event(wall_s=T0 + 30, node=key, kind="migration", message="sent 1288490188 bytes to gpu-b", job_id="gpu-a.2"),
        Event(wall_s=T0 + 40, node=key, kind="action", message="cancel of gpu-a.2 failed: gone", job_id="gpu-a.2", ok=False),
    ]
    # delivered out of time order, as snapshot batches from several nodes are
    for i, ev in enumerate([evs[-1], *evs[:-1]]):
        st.apply_message(key, EventMsg(node="gpu-a", seq=20 + i, event=ev))
        log.refresh()
    return st, log


def test_event_log_folds_tool_calls_per_job_in_time_order_with_names_and_bytes(qtbot):
    st, log = _log_with_events(qtbot)
    lines = log.visible_lines()
    assert len(lines) == 5, lines  # 1 state change, 2 folded groups, 1 migration, 1 failure
    assert "gpu-a.1 running" in lines[0]
    assert "6 tool calls" in lines[1] and "gpu-a.1" in lines[1]
    assert "3 tool calls" in lines[2] and "gpu-a.2" in lines[2]
    assert "1.2 GiB" in lines[3] and "1288490188" not in lines[3]
    assert "failed" in lines[4]
    assert log.view.topLevelItem(1).childCount() == 6
    stamps = [line.split("\t")[0] for line in lines]
    assert stamps == sorted(stamps), "lines in time order (a folded line stands at its first call)"
    # nodes by name, not by address
    assert all(line.split("\t")[1] == "gpu-a" for line in lines)
    assert len(log.lines) == len(st.events) == 12


def test_event_log_filters_by_kind_node_job_severity_and_text(qtbot):
    _st, log = _log_with_events(qtbot)
    log.kind_box.setCurrentIndex(log.kind_box.findData("migration"))
    assert len(log.visible_lines()) == 1 and "1.2 GiB" in log.visible_lines()[0]
    log.kind_box.setCurrentIndex(0)
    log.severity_box.setCurrentIndex(log.severity_box.findData("fail"))
    assert len(log.visible_lines()) == 1 and "failed" in log.visible_lines()[0]
    log.severity_box.setCurrentIndex(0)
    log.job_edit.setText("gpu-a.2")
    assert len(log.visible_lines()) == 3  # the folded calls, the migration, the failure
    log.job_edit.clear()
    log.search.setText("fetch #1")
    (line,) = log.visible_lines()
    assert "1 tool call" in line and log.view.topLevelItem(0).childCount() == 1
    log.search.clear()
    assert log.node_box.findData("127.0.0.1:7001") > 0 and log.node_box.itemText(1) == "gpu-a"
    log.node_box.setCurrentIndex(1)
    assert len(log.visible_lines()) == 5
