"""What the app shows (issue 13): windowed rates for bursty agents, a legend that reads at
any chart height, a hover read-out that never resizes the plot, linked time axes."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF
from PySide6.QtWidgets import QApplication

from agentd.protocol.messages import SampleMsg, SnapshotReply
from gui.series import NodeSeries
from gui.state import ClusterState, gpu_scope
from gui.views.charts import Chart, ChartsPanel
from tests.gui.gui_factories import inventory, job, sample, snapshot

pytestmark = [pytest.mark.gui, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]
T0 = 1_000_000.0


def _bursty_state() -> ClusterState:
    """An agent that emits 300 tokens every 10 s and nothing in between, sampled each second."""
    st = ClusterState(clock=lambda: T0 + 40)
    tokens = 0.0
    st.apply_snapshot("n1", snapshot(samples=[sample(t=0.0, jobs={"n1.1": 0}, tokens=0.0)], jobs=[job("n1.1")]))
    for t in range(1, 40):
        if t % 10 == 0:
            tokens += 300
        st.apply_message("n1", SampleMsg(node="n1", seq=10 + t, sample=sample(t=float(t), jobs={"n1.1": t * 1000}, tokens=tokens)))
    return st


def test_bursty_agent_throughput_is_a_window_mean_and_table_and_chart_agree(qtbot):
    st = _bursty_state()
    assert st.series.last(("n1", "n1.1", "throughput")) == 0.0, "the last interval had no burst"
    (row,) = st.job_rows()
    # 900 tokens in the 30 s window (bursts at 10, 20, 30 s), not the last interval's 0.0
    assert row.throughput == pytest.approx(30.0) and row.throughput_unit == "tok/s"
    for metric in (("job", "throughput"), ("job", "app:tokens_per_s")):
        chart = Chart(st, metric, "*", "5 min")
        qtbot.addWidget(chart)
        chart.resize(600, 300)
        chart.show()
        assert chart.redraw(T0 + 40, force=True)
        (curve,) = chart.curves.values()
        t, v = curve.getData()
        assert float(v[np.isfinite(v)][-1]) == pytest.approx(row.throughput), metric
        assert float(np.nanmin(v[t >= T0 + 10])) > 0.0, "no drop to zero between bursts after the first"


def _gpu_state(gpus: int, n_points: int = 120) -> ClusterState:
    st = ClusterState(clock=lambda: T0)
    st.apply_snapshot("n1", SnapshotReply(seq=1, inventory=inventory("n1", gpus=gpus), samples=[], jobs=[]))
    ns = NodeSeries(n_points)
    ns.times[:] = T0 - n_points + np.arange(n_points)
    for i in range(gpus):
        ns.values[(gpu_scope(i), "sm_util_pct")] = np.linspace(i, i + 10, n_points).astype(np.float32)
    ns.count, ns.head = n_points, 0
    st.series.nodes["n1"] = ns
    return st


def test_legend_reads_at_default_height_and_hover_never_resizes_the_plot(qtbot):
    st = _gpu_state(20)
    panel = ChartsPanel(st)
    qtbot.addWidget(panel)
    panel.restore([{"metric": ["gpu", "sm_util_pct"], "scope": "*", "span": "5 min"}])
    (chart,) = panel.charts
    panel.resize(700, 240)  # a chart at about its minimum height
    panel.show()
    qtbot.waitExposed(panel)
    assert chart.redraw(T0, force=True)
    QApplication.processEvents()
    assert chart.legend.isVisible() and len(chart.legend.items) == 20
    button, curve = chart.legend.items[3]
    assert button.isVisible() or chart.legend.verticalScrollBar().maximum() > 0, "entries scroll, never vanish"
    # the legend names the series with last, min and max in the window
    assert button.text().startswith("n1 GPU3") and "13" in button.text() and "3.0" in button.text()
    assert button.font().pointSizeF() >= QApplication.font().pointSizeF()
    button.click()
    assert not curve.isVisible()
    button.click()

    plot_size = chart.plot.size()
    vb = chart.plot.getPlotItem().getViewBox()
    chart._on_hover(vb.mapViewToScene(QPointF(T0 - 30, 5)))
    QApplication.processEvents()
    assert chart.readout.isVisible()
    assert chart.plot.size() == plot_size, "the read-out floats over the plot"
    text = chart.readout.text()
    assert all(f"n1 GPU{i}:" in text for i in range(20)), "every series is read out"
    QApplication.sendEvent(chart.plot.viewport(), QEvent(QEvent.Type.Leave))
    assert not chart.readout.isVisible() and not chart.hover_line.isVisible()
    assert chart.plot.size() == plot_size


def test_linked_time_axes_share_window_and_crosshair(qtbot):
    st = _gpu_state(2)
    panel = ChartsPanel(st)
    qtbot.addWidget(panel)
    panel.restore([{"metric": ["gpu", "sm_util_pct"], "scope": "*", "span": "5 min"},
                   {"metric": ["gpu", "power_w"], "scope": "*", "span": "1 h"}])
    a, b = panel.charts
    panel.resize(700, 600)
    panel.show()
    qtbot.waitExposed(panel)
    panel.link_btn.setChecked(True)
    assert b.span_box.currentText() == "5 min" and not b.span_box.isEnabled()
    for c in (a, b):
        c.redraw(T0, force=True)
    va, vbx = (c.plot.getPlotItem().getViewBox() for c in (a, b))
    va.setXRange(T0 - 100, T0 - 50, padding=0)
    assert vbx.viewRange()[0] == pytest.approx([T0 - 100, T0 - 50])
    a._on_hover(va.mapViewToScene(QPointF(T0 - 70, 5)))
    assert b.hover_line.isVisible() and b.hover_line.value() == pytest.approx(T0 - 70)
    QApplication.sendEvent(a.plot.viewport(), QEvent(QEvent.Type.Leave))
    assert not b.hover_line.isVisible()
    panel.link_btn.setChecked(False)
    assert b.span_box.isEnabled()
    va.setXRange(T0 - 200, T0 - 150, padding=0)
    assert vbx.viewRange()[0] != pytest.approx([T0 - 200, T0 - 150])


def _contrast(a, b) -> float:
    def lum(c):
        ch = [x / 255 for x in (c.red(), c.green(), c.blue())]
        ch = [x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4 for x in ch]
        return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2]
    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_theme_setting_persists_and_dark_palette_is_readable(qtbot, settings):
    from PySide6.QtGui import QPalette

    from gui.views.theme_setting import apply_theme, load_theme, palette_for, save_theme

    assert load_theme(settings) == "system"
    save_theme(settings, "dark")
    from PySide6.QtCore import QSettings
    assert load_theme(QSettings(settings.fileName(), QSettings.Format.IniFormat)) == "dark"
    with pytest.raises(ValueError, match="blue"):
        save_theme(settings, "blue")
    R = QPalette.ColorRole
    for theme in ("dark", "light"):
        pal = palette_for(theme)
        for fg, bg, need in ((R.Text, R.Base, 7), (R.WindowText, R.Window, 7), (R.PlaceholderText, R.Base, 4.5),
                             (R.ToolTipText, R.ToolTipBase, 7), (R.ButtonText, R.Button, 7), (R.Mid, R.Base, 3)):
            assert _contrast(pal.color(fg), pal.color(bg)) >= need, (theme, fg, bg)
    app = QApplication.instance()
    before = QPalette(app.palette())
    try:
        apply_theme(app, "dark")
        assert app.palette().color(R.Window).lightness() < 80 and app.style().name().lower() == "fusion"
        apply_theme(app, "system")
        assert app.palette().color(R.Window) == before.color(R.Window)
    finally:
        app.setPalette(before)


def test_replay_seek_keeps_the_recorded_history_before_the_playhead(qtbot, tmp_path, settings):
    from agentd.store.recording import RecordingReader
    from gui.app import open_replay_window
    from tests.gui.conftest import wait_until
    from tests.recording.conftest import make_recording

    path = tmp_path / "long.db"
    make_recording(path, nodes=1, seconds=90)
    with RecordingReader(path) as r:
        start, end = r.time_range()
        t_mid = r.samples("n0", start, end)[60].wall_s
        recorded_before = len(r.samples("n0", start, t_mid))
    rw = open_replay_window(path, settings, confirm=lambda *a: True)
    qtbot.addWidget(rw)
    try:
        wait_until(qtbot, lambda: rw.source.time_range() is not None, what="recording opened")
        rw.source.seek(t_mid)
        wait_until(qtbot, lambda: rw.source.now_s() == t_mid and (ns := rw.state.series.nodes.get("n0")) is not None
                   and ns.count > 0 and float(ns.times[(ns.head - 1) % ns.capacity]) == t_mid, what="state at the seek time")
        ns = rw.state.series.nodes["n0"]
        # every recorded sample up to the playhead is charted (the first one has no rate to derive)
        assert ns.count >= recorded_before - 1 > 50
        t, v = ns.get("gpu0", "sm_util_pct")
        assert t[0] <= start + 2 and t[-1] == t_mid and np.isfinite(v[1:]).all()
    finally:
        rw.close()


def test_laptop_screen_shows_the_main_views_unclipped(qtbot, tmp_path, settings):
    """1366x768: the side docks get their proportions (before the first show they were squeezed
    to a 264 px chart dock with elided pickers and a clipped Pause button)."""
    from gui.app import open_replay_window
    from tests.gui.conftest import wait_until
    from tests.recording.conftest import make_recording

    path = tmp_path / "r.db"
    make_recording(path, nodes=3, seconds=20)
    w = open_replay_window(path, settings, confirm=lambda *a: True)
    qtbot.addWidget(w)
    try:
        w.resize(1366, 768)
        w.show()
        qtbot.waitExposed(w)
        wait_until(qtbot, lambda: w.dock_charts.width() > 400 and w.dock_tree.width() >= 250,
                   what="the side docks at their default widths")
        assert w.width() <= 1366 and w.height() <= 768
        assert w.dock_tree.width() >= 250
        tree = w.dock_tree.widget()
        for chart in w.charts.charts:
            for b in (chart.pause_btn, chart.close_btn, chart.span_box):
                right = b.mapTo(chart, b.rect().topRight()).x()
                assert right < chart.width(), (b, right, chart.width())
            assert chart.pause_btn.width() >= chart.pause_btn.sizeHint().width(), "Pause reads in full"
            assert chart.metric_box.width() >= chart.metric_box.fontMetrics().horizontalAdvance("GPU utilisation")
        assert tree.width() >= 250
    finally:
        w.close()
