"""The chart draws all its curves in one item: legend toggles, hover read-out, NaN gaps and
pause still behave as with one PlotCurveItem per curve."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF
from PySide6.QtGui import QColor

from agentd.protocol.messages import SnapshotReply
from gui.series import NodeSeries, decimate_minmax, decimate_minmax_rows
from gui.state import ClusterState, gpu_scope
from gui.views.charts import Chart
from tests.gui.gui_factories import inventory, sample

pytestmark = [pytest.mark.gui, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]
NOW = 1_000_000.0


def _state(n_points: int = 300) -> ClusterState:
    st = ClusterState(clock=lambda: NOW)
    st.apply_snapshot("n1", SnapshotReply(seq=1, inventory=inventory("n1", gpus=2), samples=[sample("n1", 0.0), sample("n1", 1.0)], jobs=[]))
    ns = NodeSeries(n_points)
    ns.times[:] = NOW - n_points + np.arange(n_points)
    # (values off the grid lines: a grid line over a curve tints its pixels)
    ns.values[(gpu_scope(0), "sm_util_pct")] = np.full(n_points, 23.0, dtype=np.float32)
    gap = np.full(n_points, 77.0, dtype=np.float32)
    gap[100:150] = np.nan  # a gap must stay a gap
    ns.values[(gpu_scope(1), "sm_util_pct")] = gap
    ns.count, ns.head = n_points, 0
    st.series.nodes["n1"] = ns
    return st


def _colours(chart: Chart) -> set[str]:
    img = chart.plot.grab().toImage()   # pixel exact (render() into an image may rescale the lines)
    return {QColor(img.pixel(x, y)).name() for x in range(0, img.width(), 2) for y in range(img.height())}  # 1-px lines: every row


def test_legend_toggle_hover_and_pause(qtbot):
    st = _state()
    chart = Chart(st, ("gpu", "sm_util_pct"), "*", "5 min")
    qtbot.addWidget(chart)
    chart.resize(700, 320)
    chart.show()
    qtbot.waitExposed(chart)  # laid out: the plot has its final size before it draws
    assert chart.redraw(NOW, force=True)
    keys = chart.series_keys()
    assert len(chart.curves) == 2 and len(chart.legend.items) == 2
    c0, c1 = (chart.curves[k] for k in keys)
    col0, col1 = (c.opts["pen"].color().name() for c in (c0, c1))
    assert {col0, col1} <= _colours(chart), "both curves painted"
    _t1, v1 = c1.getData()
    assert np.isnan(v1).any() and len(c1.polys) == 2, "NaN gap splits the line"

    # clicking a legend entry hides its curve
    button, curve = chart.legend.items[0]
    assert curve is c0
    button.click()
    assert not c0.isVisible() and not button.isChecked()
    seen = _colours(chart)
    assert col0 not in seen and col1 in seen
    button.click()
    assert c0.isVisible() and button.isChecked()
    assert col0 in _colours(chart)

    # hover names the curves and their values at the cursor
    vb = chart.plot.getPlotItem().getViewBox()
    chart._on_hover(vb.mapViewToScene(QPointF(NOW - 10, 50)))
    text = chart.readout.text()
    assert "n1 GPU0" in text and "23" in text and "n1 GPU1" in text

    # paused: new data does not move the window
    chart.pause_btn.setChecked(True)
    before = vb.viewRange()[0]
    st.revision += 1
    chart.redraw(NOW + 30)
    assert vb.viewRange()[0] == before
    chart.pause_btn.setChecked(False)
    chart.redraw(NOW + 30)
    assert vb.viewRange()[0][1] == NOW + 30


def test_rows_decimation_matches_single():
    rng = np.random.default_rng(1)
    t = np.arange(3600, dtype=np.float64)
    rows = rng.uniform(0, 100, (3, 3600)).astype(np.float32)
    rows[1, 500:900] = np.nan
    tt, vv = decimate_minmax_rows(t, rows, 450)
    for r, v in zip(rows, vv):
        ts, vs = decimate_minmax(t, r, 450)
        np.testing.assert_array_equal(tt, ts)
        np.testing.assert_array_equal(v, vs)


@pytest.mark.parametrize(("cap", "n"), [(10, 7), (10, 10), (10, 25), (50, 123)])
def test_get_rows_matches_window(cap, n):
    from gui.series import window
    rng = np.random.default_rng(cap + n)
    ns = NodeSeries(cap)
    for k in range(n):
        ns.append(float(k), {("", "a"): float(rng.uniform()), ("gpu0", "b"): float(k)})
    for t0, t1 in ((0, 1e9), (n - 5.5, n - 2.2), (n - 3, n + 5), (-5, 2)):
        t, rows = ns.get_rows([("", "a"), ("gpu0", "b"), ("nope", "x")], t0, t1)
        for j, key in enumerate([("", "a"), ("gpu0", "b")]):
            tt, vv = window(*ns.get(*key), t0, t1)
            np.testing.assert_array_equal(t, tt)
            np.testing.assert_array_equal(rows[j], vv)
        assert np.isnan(rows[2]).all(), "an unknown metric is a row of NaN"
