"""Dragging a job chip onto another node asks for confirmation, then sends Migrate."""

from __future__ import annotations

import pytest

from .conftest import submit, wait_until

pytestmark = [pytest.mark.gui, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]


def test_drop_on_other_card_confirms_and_reaches_the_daemon(qtbot, agentd_factory, open_window):
    a = agentd_factory("a", simulate_gpus=2)
    b = agentd_factory("b", simulate_gpus=2)
    job = submit(a, name="mover", gpus=1)
    w = open_window(a, b)
    wait_until(qtbot, lambda: set(w.topology.cards) == {"a", "b"} and any(k[0] == job for k in w.topology.chips),
               what="two cards and the job chip")
    slots = dict(w.topology.slots)
    failures, done = [], []
    w.actions.failed.connect(failures.append)
    w.actions.succeeded.connect(done.append)
    # dropping on its own node does nothing
    w.topology.drop_job(job, "a")
    assert not w.confirmations
    w.topology.drop_job(job, "b")
    _title, text, detail = w.confirmations[-1]
    assert "mover" in text and job in text and "from a to b" in text
    assert "checkpoint" in detail.lower() or "criu" in detail.lower()
    # the daemon answers: either the job moves or a readable refusal arrives (a busy loop
    # without a checkpoint contract cannot move unless CRIU works here)
    wait_until(qtbot, lambda: failures or done, timeout_s=60, what="an answer to the migration")
    if failures:
        assert "migrating" in failures[-1].lower() and "failed" in failures[-1]
    # cards keep their places
    assert w.topology.slots == slots


def test_declined_confirmation_sends_nothing(qtbot, agentd_factory, open_window):
    a = agentd_factory("a", simulate_gpus=1)
    b = agentd_factory("b", simulate_gpus=1)
    job = submit(a, name="stay")
    w = open_window(a, b, confirm_answer=False)
    wait_until(qtbot, lambda: w.state.job(job) is not None and "b" in w.topology.cards, what="job and both cards")
    w.topology.drop_job(job, "b")
    assert w.confirmations and not w.actions.pending


def test_stable_slots_when_nodes_come_and_go(qtbot, settings):
    from gui.state import ClusterState
    from gui.views.topology import TopologyCanvas

    from .gui_factories import snapshot

    st = ClusterState()
    canvas = TopologyCanvas(st)
    qtbot.addWidget(canvas)
    canvas.resize(1200, 800)
    for n in ("n1", "n2", "n3"):
        st.apply_snapshot(n, snapshot(n))
    canvas.refresh()
    before = {k: c.pos() for k, c in canvas.cards.items()}
    st.remove_node("n2")
    canvas.refresh()
    assert canvas.cards["n1"].pos() == before["n1"] and canvas.cards["n3"].pos() == before["n3"]
    st.apply_snapshot("n4", snapshot("n4"))
    canvas.refresh()
    assert canvas.cards["n4"].pos() == before["n2"], "a new node takes the free slot"


def test_a_node_that_goes_away_takes_its_job_chips_with_it(qtbot, settings):
    """Chips are children of their node's card: removing the card must not leave dead chips behind."""
    from gui.state import ClusterState
    from gui.views.topology import TopologyCanvas

    from .gui_factories import job, snapshot

    st = ClusterState()
    canvas = TopologyCanvas(st)
    qtbot.addWidget(canvas)
    canvas.resize(1200, 800)
    st.apply_snapshot("n1", snapshot("n1", jobs=[job("n1.1", gpus=(0,)), job("n1.2", gpus=())]))
    st.apply_snapshot("n2", snapshot("n2", jobs=[job("n2.1", gpus=(1,))]))
    canvas.refresh()
    assert {k[0] for k in canvas.chips} == {"n1.1", "n1.2", "n2.1"}
    st.remove_node("n1")
    canvas.refresh()
    assert {k[0] for k in canvas.chips} == {"n2.1"}
    st.apply_snapshot("n1", snapshot("n1", jobs=[job("n1.1", gpus=(0,))]))
    canvas.refresh()  # the node returns: new chips on its new card, the others still drawn
    assert {k[0] for k in canvas.chips} == {"n1.1", "n2.1"}
    assert canvas.chips[("n1.1", 0)].parentItem() is canvas.cards["n1"]
