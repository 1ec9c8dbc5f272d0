"""The submit dialog against two real agentd (issue 14, "and the same in the app's submit
dialog"): a 2-node group submitted from the dialog is one group row with its two ranks running
(the daemons say so too), and a plain job lands on the one node checked."""

from __future__ import annotations

import shlex
import sys

import pytest

from tests.gui.conftest import BUSY_LOOP, wait_until

pytestmark = [pytest.mark.gui, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]


def _check_only(dlg, keys: set[str]) -> None:
    from PySide6.QtCore import Qt

    from gui.views.submit import NODE_ROLE

    for i in range(dlg.nodes.count()):
        item = dlg.nodes.item(i)
        item.setCheckState(Qt.CheckState.Checked if item.data(NODE_ROLE) in keys else Qt.CheckState.Unchecked)


@pytest.mark.procs
@pytest.mark.timeout(180)
def test_a_group_and_a_job_submitted_from_the_dialog_run_on_real_daemons(qtbot, agentd_factory, open_window):
    from agentd.protocol.messages import Cancel, Jobs
    from agentd.transport.client import NodeClient

    a, b = agentd_factory("n1"), agentd_factory("n2")

    def active() -> list:
        found = []
        for p in (a, b):
            with NodeClient(p.ctl, timeout_s=10) as c:
                found += c.call(Jobs(active_only=True)).jobs
        return found

    command = f"{sys.executable} -c {shlex.quote(BUSY_LOOP)}"
    try:
        w = open_window(a, b)
        wait_until(qtbot, lambda: len(w.state.nodes) == 2 and all(n.link == "live" and n.inventory is not None
                                                                   for n in w.state.nodes.values()),
                   timeout_s=30, what="both nodes live in the window")
        w.jobs.act_submit.trigger()
        dlg = w.submit_dlg
        assert dlg is not None and dlg.isVisible()
        dlg.command.setText(command)
        dlg.name.setText("ring")
        _check_only(dlg, {"n1", "n2"})
        assert "2 ranks on 2 nodes" in dlg.summary.text()
        dlg.submit_button.click()
        assert w.submit_dlg is None  # accepted and closed

        m = w.jobs.model

        def group_row():
            return next((r for r in m.rows if getattr(r, "ranks", ())), None)

        wait_until(qtbot, lambda: (g := group_row()) is not None and g.running == 2, timeout_s=60,
                   what="one group row with 2 ranks running")
        g = group_row()
        gi = next(m.index(i, 0) for i, r in enumerate(m.rows) if r.id == g.id)
        assert g.name == "ring" and m.rowCount(gi) == 2 and m.index(gi.row(), 3).data() == "2/2 running"
        ranks = [j for j in active() if j.spec.group is not None]
        assert sorted((j.node, j.spec.group.rank, j.state) for j in ranks) == [("n1", 0, "running"), ("n2", 1, "running")]
        assert {j.spec.group.id for j in ranks} == {g.id} and g.id.startswith("n1.run-")
        assert any(f"Submitted group {g.id} ('ring'): 2 ranks on 2 nodes" in line for line in w.events.lines)

        w.submit_dialog()
        dlg = w.submit_dlg
        dlg.command.setText(command)
        dlg.name.setText("solo")
        _check_only(dlg, {"n2"})
        dlg.submit_button.click()
        wait_until(qtbot, lambda: any(j.name == "solo" and j.state == "running" and j.spec.group is None
                                      and j.node == "n2" for j in active()),
                   timeout_s=30, what="the plain job running on n2")
        wait_until(qtbot, lambda: any("Submitted job 'solo' on n2" in line for line in w.events.lines),
                   what="the job's submit in the event log")
    finally:
        for p in (a, b):  # agentd leaves jobs running when it stops: cancel what the dialog started
            with NodeClient(p.ctl, timeout_s=10) as c:
                for j in c.call(Jobs(active_only=True)).jobs:
                    c.call(Cancel(job=j.id, grace_s=0.5), timeout_s=10.0)
        wait_until(qtbot, lambda: active() == [], timeout_s=20, what="every job ended")
