"""The app's view of alerts: kept from alert events, replaced by snapshots, listed most severe first."""

from __future__ import annotations

from agentd.protocol.alerts import Alert, alert_data
from agentd.protocol.jobs import Event
from gui.alerts import ActiveAlerts
from gui.views.health import HealthPanel


def _event(alert: Alert, state: str) -> Event:
    return Event(wall_s=alert.since_s, node=alert.node, kind="alert", message=alert.message,
                 data=alert_data(alert, state))  # type: ignore[arg-type]


A1 = Alert(rule="gpu_throttle", node="a", subject="gpu 1", severity="warning", message="GPU 1 on a is slowed",
           since_s=100.0, evidence={"temp_c": 91.0})
A2 = Alert(rule="gpu_xid", node="b", subject="gpu 0", severity="critical", message="GPU 0 on b: 2 new Xid errors",
           since_s=200.0)
A3 = Alert(rule="gpu_idle_while_queued", node="a", subject="gpu 2", severity="info", message="GPU 2 idle", since_s=50.0)


def test_active_alerts_follow_firing_and_clearing_and_snapshots() -> None:
    active = ActiveAlerts()
    assert active.apply(Event(wall_s=1, node="a", kind="job.state", message="x")) is None
    for alert in (A1, A2, A3):
        active.apply(_event(alert, "firing"))
    assert [a.rule for a in active.sorted()] == ["gpu_xid", "gpu_throttle", "gpu_idle_while_queued"]
    assert active.counts() == {"critical": 1, "warning": 1, "info": 1}
    active.apply(_event(A1, "cleared"))
    assert len(active) == 2
    v = active.version
    active.apply(_event(A1, "cleared"))  # a clearing we already applied changes nothing
    assert active.version == v
    active.replace_node("a", [])  # a's snapshot: nothing firing there
    assert [a.node for a in active.sorted()] == ["b"]
    bad = Event(wall_s=1, node="a", kind="alert", message="x", data={"state": "firing", "rule": 3})
    assert active.apply(bad) is None and len(active) == 1


def test_health_panel_lists_filters_and_says_when_all_is_well(qtbot) -> None:
    active = ActiveAlerts()
    panel = HealthPanel(active, clock=lambda: 260.0)
    qtbot.addWidget(panel)
    assert panel.visible_rows() == [] and not panel.empty.isHidden() and panel.tree.isHidden()
    assert panel.summary.text() == "All healthy"
    for alert in (A1, A2, A3):
        active.apply(_event(alert, "firing"))
    panel.refresh()
    rows = panel.visible_rows()
    assert [r[1:4] for r in rows] == [("b", "gpu 0", A2.message), ("a", "gpu 1", A1.message), ("a", "gpu 2", A3.message)]
    assert rows[0][0].endswith("critical") and rows[1][4] == "2 m 40 s"
    assert panel.summary.text() == "1 critical, 1 warning, 1 info"
    panel.filter_box.setCurrentIndex(2)  # warning or worse
    assert [r[2] for r in panel.visible_rows()] == ["gpu 0", "gpu 1"]
    with qtbot.waitSignal(panel.node_requested) as sig:
        panel.tree.itemDoubleClicked.emit(panel.tree.topLevelItem(1), 0)
    assert sig.args == ["a"]


def test_alerts_of_nodes_behind_a_relay_come_with_their_summaries() -> None:
    from agentd.protocol.relay import NodeSummary
    from gui.state import ClusterState

    state = ClusterState()
    stale = Alert(rule="node_stale", node="far-3", subject="node", severity="critical",
                  message="far-3 not heard from for 9 s (seen from relay-1)", since_s=50.0)
    state.apply_summaries([NodeSummary(node="far-3", link="stale", alerts=[stale]), NodeSummary(node="far-4", link="live")])
    assert [a.key for a in state.alerts.sorted()] == [stale.key]
    state.apply_summaries([NodeSummary(node="far-3", link="live"), NodeSummary(node="far-4", link="live")])
    assert len(state.alerts) == 0
