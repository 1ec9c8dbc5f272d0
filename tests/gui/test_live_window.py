"""The window against real agentd daemons with simulated GPUs."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QThread

from .conftest import submit, wait_until

# The offscreen platform cannot propagate size hints of dock widgets; that is no fault of ours.
pytestmark = [pytest.mark.gui, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]


def _row_of(window, job_id):
    m = window.jobs.model
    for i, r in enumerate(m.rows):
        if r.id == job_id:
            return i
    return None


def test_tree_table_topology_and_charts_fill(qtbot, agentd, open_window):
    job = submit(agentd, name="busy-gpu", gpus=1)
    w = open_window(agentd)
    wait_until(qtbot, lambda: w.state.nodes.get("n1") and w.state.nodes["n1"].link == "live", what="node n1 live")
    wait_until(qtbot, lambda: _row_of(w, job) is not None, what=f"job {job} in the table")
    # tree: node -> 2 GPUs, the job under its GPU
    root = w.tree_model.invisibleRootItem()
    wait_until(qtbot, lambda: root.rowCount() == 1 and root.child(0).rowCount() == 2, what="node with 2 GPUs in the tree")
    gpus_with_job = [root.child(0).child(i) for i in range(2) if root.child(0).child(i).rowCount()]
    assert len(gpus_with_job) == 1 and gpus_with_job[0].child(0).text() == "busy-gpu"
    assert job in gpus_with_job[0].child(0, 1).text()
    assert "live" in root.child(0, 1).text()
    # search keeps the matching job and the path to it
    w.tree_search.setText("busy-gpu")
    proxy = w.tree_proxy
    assert proxy.rowCount() == 1 and proxy.rowCount(proxy.index(0, 0)) == 1
    w.tree_search.setText("no-such-thing")
    assert proxy.rowCount() == 0
    w.tree_search.clear()
    # topology: one card, one chip for the job
    assert list(w.topology.cards) == ["n1"]
    assert any(k[0] == job for k in w.topology.chips)
    # charts: GPU utilisation curves get points
    chart = w.charts.charts[0]
    wait_until(qtbot, lambda: chart.curves and all(c.getData()[0] is not None and len(c.getData()[0]) >= 2 for c in chart.curves.values()),
               what="chart points")
    assert len(chart.curves) == 2
    # job CPU shows once two cgroup samples were derived
    wait_until(qtbot, lambda: (r := w.jobs.model.rows[_row_of(w, job)]).cpu_pct is not None and r.cpu_pct > 1, what="job CPU%")
    assert w.windowTitle() == "Fleetdeck — live (1 node)"


def test_pause_resume_priority_cancel_from_the_table(qtbot, agentd, open_window):
    a = submit(agentd, name="first")
    b = submit(agentd, name="second")
    w = open_window(agentd)
    wait_until(qtbot, lambda: _row_of(w, a) is not None and _row_of(w, b) is not None and
               all(w.state.job(j).state == "running" for j in (a, b)), what="two running jobs")
    # bulk pause from the toolbar
    w.jobs.select([a, b])
    assert w.jobs.selected() == [a, b]
    w.jobs.act_pause.trigger()
    wait_until(qtbot, lambda: all(w.state.job(j).state == "paused" for j in (a, b)), what="both paused")
    with agentd.client() as c:
        from agentd.protocol.messages import Show
        assert c.call(Show(job=a)).job.state == "paused", "the daemon itself reports paused"
    wait_until(qtbot, lambda: all(w.jobs.model.rows[_row_of(w, j)].state == "paused" for j in (a, b)),
               what="table shows both paused")
    assert w.jobs.act_resume.isEnabled() and not w.jobs.act_pause.isEnabled()
    w.jobs.act_resume.trigger()
    wait_until(qtbot, lambda: all(w.state.job(j).state == "running" for j in (a, b)), what="both running again")
    # priority: the action asks for the value
    w.jobs.select([b])
    w.jobs.act_priority.trigger()
    assert w.jobs.priority_dialog is not None, "Set priority opens a dialog"
    w.jobs.priority_dialog.spin.setValue(5)
    w.jobs.priority_dialog.accept()
    wait_until(qtbot, lambda: w.state.job(b).priority == 5, what="priority 5")
    wait_until(qtbot, lambda: w.jobs.model.data(w.jobs.model.index(_row_of(w, b), 4)) == "+5", what="table shows +5")
    # cancel asks first, then the daemon cancels
    w.jobs.act_cancel.trigger()
    assert w.confirmations and "second" in w.confirmations[-1][1]
    wait_until(qtbot, lambda: w.state.job(b).state == "cancelled", what="cancelled")
    wait_until(qtbot, lambda: any("cancelling" in line.lower() for line in w.events.lines), what="cancel result in the event log")


def test_failures_are_reported_not_dropped(qtbot, agentd, open_window):
    a = submit(agentd, name="short")
    w = open_window(agentd)
    wait_until(qtbot, lambda: w.state.job(a) is not None and w.state.job(a).state == "running", what="running job")
    failures = []
    w.actions.failed.connect(failures.append)
    w.actions.resume([a])  # resuming a running job: a no-op or a refusal, never silence
    w.actions.set_priority([a], 42)
    assert failures and "out of range" in failures[-1]
    with agentd.client() as c:
        from agentd.protocol.messages import Cancel
        c.call(Cancel(job=a, grace_s=1.0))
    wait_until(qtbot, lambda: w.state.job(a).state == "cancelled", what="cancelled")
    w.actions.pause([a])
    wait_until(qtbot, lambda: any("pausing" in f.lower() and "failed" in f for f in failures), what="pause failure message")
    wait_until(qtbot, lambda: "⚠" in w.events.toPlainText(), what="failure in the event log")


def test_killed_daemon_goes_down_and_comes_back(qtbot, agentd, open_window):
    w = open_window(agentd)
    wait_until(qtbot, lambda: w.state.nodes["n1"].link == "live", what="live")
    agentd.kill9()
    wait_until(qtbot, lambda: w.state.nodes["n1"].link == "down", timeout_s=20, what="down after kill -9")
    wait_until(qtbot, lambda: "1 down" in w.windowTitle(), what="title says down")
    agentd.start()
    wait_until(qtbot, lambda: w.state.nodes["n1"].link == "live", timeout_s=20, what="live again after restart")
    wait_until(qtbot, lambda: any("live again" in line for line in w.events.lines), what="live again event")


def test_no_thread_survives_close(qtbot, agentd, open_window):
    w = open_window(agentd)
    wait_until(qtbot, lambda: w.state.nodes["n1"].link == "live", what="live")
    worker = w.source._worker
    assert isinstance(worker, QThread) and worker.isRunning()
    w.close()
    assert not worker.isRunning()


def test_logs_follow_a_job_and_recording_indicator(qtbot, agentd, open_window):
    import sys

    from agentd.protocol.jobs import JobSpec
    from agentd.protocol.messages import Submit

    from .conftest import _SUBMITTED

    prog = "import time\nfor i in range(10**6):\n    print('line', i, flush=True); time.sleep(0.2)\n"
    with agentd.client() as c:
        job = c.call(Submit(spec=JobSpec(argv=[sys.executable, "-c", prog], name="talker"))).job.id
    _SUBMITTED.append((agentd, job, []))
    w = open_window(agentd)
    wait_until(qtbot, lambda: w.state.job(job) is not None, what="job known")
    w.show_logs(job)
    dlg = w.logs_dialogs[-1]
    wait_until(qtbot, lambda: "line 3" in dlg.text.toPlainText(), what="log lines")
    seen = dlg.text.toPlainText().count("line ")
    wait_until(qtbot, lambda: dlg.text.toPlainText().count("line ") > seen, what="the tail keeps following")
    assert "talker" in dlg.windowTitle()
    w.set_recording(True, 3725, 14 * 1024 * 1024)
    assert w.status.recording.isVisible() and "01:02:05" in w.status.recording.text() and "14.0 MiB" in w.status.recording.text()
    w.set_recording(False)
    assert not w.status.recording.isVisible()
