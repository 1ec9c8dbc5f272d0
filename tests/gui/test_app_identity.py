"""One identity across migrations in the app, the restart choice for a job without a
checkpoint contract, and the View > Theme menu."""

from __future__ import annotations

import msgspec
import pytest

from agentd.protocol.errors import ErrorCode
from agentd.protocol.messages import JobMsg, Migrate, SnapshotReply
from gui.sources.base import DataSource, NodeAddress, RequestFailure
from gui.state import ClusterState
from tests.gui.gui_factories import job, snapshot

pytestmark = [pytest.mark.gui, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]

T0 = 1_000_000.0
CRIU_REFUSAL = ("job 'n1.1' has no checkpoint contract and criu check failed: Error (criu/cr-check.c:1203): "
                "Kernel doesn't support PTRACE_O_SUSPEND_SECCOMP; add a checkpoint contract to its spec, or migrate "
                "with --restart to cancel it here and start it from scratch on tcp://127.0.0.1:5999\n"
                "(00.001) Warning: raw criu log line\n(00.002) Error: more raw output")


class FakeSource(DataSource):
    """Records requests; the test answers them."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[int, str, object]] = []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def nodes(self) -> list[str]:
        return ["n1", "n2"]

    def address(self, key: str) -> NodeAddress | None:
        return NodeAddress(key=key, endpoint="tcp://127.0.0.1:5999")

    def now_s(self) -> float:
        return T0 + 100

    def request(self, key: str, req) -> int:
        self.sent.append((len(self.sent) + 1, key, req))
        return len(self.sent)


def migrated_pair() -> tuple[SnapshotReply, SnapshotReply]:
    """n1.1 moved to n2 as n2.7: the old hop reads ``migrated``, the new one carries the lineage."""
    old = job("n1.1", state="migrated", migrated_to="n2.7")
    new = job("n2.7", lineage=["n1.1"], origin="n1.1", first_submitted_s=T0 - 3600)
    new = msgspec.structs.replace(new, submitted_s=T0 + 50, started_s=T0 + 55)
    return snapshot("n1", jobs=[old]), snapshot("n2", jobs=[new])


def test_table_shows_the_live_hop_ages_from_first_submit_and_can_show_migrated(qtbot):
    from gui.actions import Actions
    from gui.views.jobs import JobsPanel

    st = ClusterState(clock=lambda: T0 + 100)
    a, b = migrated_pair()
    st.apply_snapshot("n1", a)
    st.apply_snapshot("n2", b)
    panel = JobsPanel(st, Actions(FakeSource(), st))
    panel.model.clock = lambda: T0 + 100
    qtbot.addWidget(panel)
    panel.refresh()
    ids = [panel.model.row(i).id for i in range(panel.model.rowCount())]
    assert ids == ["n2.7"], "the superseded hop (migrated) is hidden; the job is one row"
    age = panel.model.index(0, 9).data()
    assert age.startswith("1 h"), f"Age counts from the first submit an hour ago, got {age!r}"
    panel.show_migrated.setChecked(True)
    ids = sorted(panel.model.row(i).id for i in range(panel.model.rowCount()))
    assert ids == ["n1.1", "n2.7"]


def test_selection_follows_the_job_to_its_new_id(qtbot):
    from gui.actions import Actions
    from gui.views.jobs import JobsPanel

    st = ClusterState(clock=lambda: T0 + 100)
    st.apply_snapshot("n1", snapshot("n1", jobs=[job("n1.1", state="migrating"), job("n1.2", name="other")]))
    st.apply_snapshot("n2", snapshot("n2", jobs=[]))
    panel = JobsPanel(st, Actions(FakeSource(), st))
    qtbot.addWidget(panel)
    panel.refresh()
    panel.select(["n1.1"])
    assert panel.selected() == ["n1.1"]
    _, b = migrated_pair()
    st.apply_message("n2", JobMsg(seq=11, node="n2", job=b.jobs[0]))
    st.apply_message("n1", JobMsg(seq=11, node="n1", job=job("n1.1", state="migrated", migrated_to="n2.7")))
    panel.refresh()
    assert panel.selected() == ["n2.7"]


def _actions_with_job(checkpoint: bool, answer: bool):
    from agentd.protocol.jobs import CheckpointContract
    from gui.actions import Actions

    st = ClusterState(clock=lambda: T0 + 100)
    j = job("n1.1")
    if checkpoint:
        j = msgspec.structs.replace(j, spec=msgspec.structs.replace(j.spec, checkpoint=CheckpointContract()))
    st.apply_snapshot("n1", snapshot("n1", jobs=[j]))
    st.apply_snapshot("n2", snapshot("n2", jobs=[]))
    src = FakeSource()
    asked: list[tuple[str, str, str]] = []

    def confirm(title, text, detail):
        asked.append((title, text, detail))
        return answer
    acts = Actions(src, st, confirm=confirm)
    failures: list[str] = []
    acts.failed.connect(failures.append)
    return acts, src, asked, failures


def test_migrate_without_checkpoint_offers_restart_and_resends(qtbot):
    acts, src, asked, failures = _actions_with_job(checkpoint=False, answer=True)
    token = acts.migrate("n1.1", "n2", ask=False)
    assert token == 1 and src.sent[0][2].restart is False
    src.request_failed.emit(token, RequestFailure(node="n1", request=src.sent[0][2], code=int(ErrorCode.INVALID),
                                                  message=CRIU_REFUSAL))
    assert asked and asked[-1][1] == "Restart from scratch on n2?"
    assert "criu log" not in asked[-1][2] and "--restart" not in asked[-1][2]
    assert len(src.sent) == 2
    again = src.sent[1][2]
    assert isinstance(again, Migrate) and again.restart is True and again.job == "n1.1"
    assert not failures


def test_migrate_restart_declined_reports_one_readable_sentence(qtbot):
    acts, src, _asked, failures = _actions_with_job(checkpoint=False, answer=False)
    token = acts.migrate("n1.1", "n2", ask=False)
    src.request_failed.emit(token, RequestFailure(node="n1", request=src.sent[0][2], code=int(ErrorCode.INVALID),
                                                  message=CRIU_REFUSAL))
    assert len(src.sent) == 1
    assert len(failures) == 1
    msg = failures[0]
    assert "\n" not in msg and "raw criu log" not in msg and "--restart" not in msg, msg
    assert msg.endswith(".") and "no checkpoint contract" in msg


def test_job_with_checkpoint_contract_is_not_offered_a_restart(qtbot):
    acts, src, asked, failures = _actions_with_job(checkpoint=True, answer=True)
    token = acts.migrate("n1.1", "n2", ask=False)
    src.request_failed.emit(token, RequestFailure(node="n1", request=src.sent[0][2], code=int(ErrorCode.INVALID),
                                                  message="target refused\nraw detail"))
    assert not asked and len(src.sent) == 1
    assert failures and "raw detail" not in failures[0]


def test_view_theme_menu_applies_and_persists(qtbot, settings):
    from PySide6.QtWidgets import QApplication

    from gui.main_window import MainWindow
    from gui.views.theme_setting import apply_theme, load_theme

    w = MainWindow(FakeSource(), settings, confirm=lambda *a: True)
    qtbot.addWidget(w)
    try:
        from PySide6.QtWidgets import QMenu

        view = next(m for m in w.menuBar().findChildren(QMenu) if m.title() == "&View")
        theme = next(m for m in view.findChildren(QMenu) if m.title() == "Theme")
        entries = {a.text(): a for a in theme.actions()}
        assert set(entries) == {"System", "Light", "Dark"}
        assert entries["System"].isChecked()
        entries["Dark"].trigger()
        assert load_theme(settings) == "dark"
        assert QApplication.instance().palette().window().color().lightness() < 80
        assert not entries["System"].isChecked()
        entries["Light"].trigger()
        assert load_theme(settings) == "light"
    finally:
        apply_theme(QApplication.instance(), "system")


def test_chart_keeps_one_line_and_colour_across_a_migration(qtbot):
    import numpy as np

    from agentd.protocol.messages import SampleMsg
    from gui.views.charts import Chart
    from tests.gui.gui_factories import sample

    st = ClusterState(clock=lambda: T0 + 40)
    st.apply_snapshot("n1", snapshot("n1", samples=[sample("n1", 0.0, jobs={"n1.2": 0, "n1.1": 0})],
                                     jobs=[job("n1.2", name="other"), job("n1.1")]))
    st.apply_snapshot("n2", snapshot("n2", jobs=[]))
    for t in range(1, 20):
        st.apply_message("n1", SampleMsg(node="n1", seq=10 + t, sample=sample("n1", float(t), jobs={"n1.2": t * 1000, "n1.1": t * 500_000})))
    chart = Chart(st, ("job", "cpu_pct"), "*", "5 min")
    qtbot.addWidget(chart)
    chart.resize(600, 300)
    chart.show()
    assert chart.redraw(T0 + 20, force=True)
    assert len(chart.curves) == 2
    colour = {c.opts["name"]: c.opts["pen"].color().name() for c in chart.curves.values()}
    before = next(col for name, col in colour.items() if "n1.1" in name)
    # The job moves: n1.1 is superseded, n2.7 carries on with the same identity.
    _, b = migrated_pair()
    st.apply_message("n2", JobMsg(seq=30, node="n2", job=b.jobs[0]))
    st.apply_message("n1", JobMsg(seq=31, node="n1", job=job("n1.1", state="migrated", migrated_to="n2.7")))
    for t in range(20, 40):
        st.apply_message("n1", SampleMsg(node="n1", seq=40 + t, sample=sample("n1", float(t), jobs={"n1.2": t * 1000})))
        st.apply_message("n2", SampleMsg(node="n2", seq=40 + t, sample=sample("n2", float(t), jobs={"n2.7": (t - 20) * 500_000})))
    assert chart.redraw(T0 + 40, force=True)
    assert len(chart.curves) == 2, f"one line per job across the hop, got {list(chart.curves)}"
    moved = next(c for c in chart.curves.values() if "other" not in c.opts["name"])
    assert moved.opts["pen"].color().name() == before
    t, v = moved.getData()
    fin = t[np.isfinite(v)]
    assert fin.min() < T0 + 20 <= fin.max(), "the line holds both hops' samples"
