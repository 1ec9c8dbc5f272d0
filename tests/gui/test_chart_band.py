"""Charts at scale: "all GPUs" of many nodes is a quantile band plus the top-k GPUs, not one line
per GPU; a job's curve has the job's colour (the same as on the map and in the table)."""

from __future__ import annotations

import numpy as np
import pytest

from agentd.protocol.messages import SnapshotReply
from gui.series import NodeSeries
from gui.state import ChartScope, ClusterState, gpu_scope
from gui.views.charts import BAND_TOP_K, Chart
from tests.gui.gui_factories import inventory, job, sample

pytestmark = [pytest.mark.gui, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]
NOW = 1_000_000.0
NODES, GPUS, POINTS = 16, 8, 120


def _state() -> ClusterState:
    """16 nodes x 8 GPUs; GPU i of node n reads (8n + i) % 100 all along."""
    st = ClusterState(clock=lambda: NOW)
    for n in range(NODES):
        key = f"n{n}"
        st.apply_snapshot(key, SnapshotReply(seq=1, inventory=inventory(key, gpus=GPUS), samples=[sample(key, 0.0, gpus=GPUS)]))
        ns = NodeSeries(POINTS)
        ns.times[:] = NOW - POINTS + np.arange(POINTS)
        for i in range(GPUS):
            ns.values[(gpu_scope(i), "sm_util_pct")] = np.full(POINTS, float((8 * n + i) % 100), dtype=np.float32)
        ns.count, ns.head = POINTS, 0
        st.series.nodes[key] = ns
    return st


def test_all_gpus_of_a_big_cluster_is_a_band_with_the_top_outliers(qtbot):
    chart = Chart(_state(), ("gpu", "sm_util_pct"), "*", "5 min")
    qtbot.addWidget(chart)
    chart.resize(700, 320)
    chart.show()
    qtbot.waitExposed(chart)
    assert chart.redraw(NOW, force=True)
    assert len(chart.curves) == 4 + BAND_TOP_K  # not 128 lines
    values = np.sort(np.array([(8 * n + i) % 100 for n in range(NODES) for i in range(GPUS)], dtype=float))

    def line(name):
        return chart.curves[("", f"band:{name}", "sm_util_pct")].getData()[1]

    assert np.all(line("max") == 99) and np.all(line("min") == 0)
    assert np.all(line("p50") == values[int(0.5 * (values.size - 1))])
    assert np.all(line("p95") == values[int(0.95 * (values.size - 1))])
    top = [k for k in chart.curves if not k[1].startswith("band:")]
    assert ("n12", "gpu3", "sm_util_pct") in top  # 8*12+3 = 99: the busiest GPU
    assert chart.curves[("", "band:p50", "sm_util_pct")].name() == f"p50 of {NODES * GPUS} GPUs"
    # One node's GPUs are few: lines again.
    chart.scope = ChartScope("node", "n3")
    assert chart.redraw(NOW, force=True)
    assert len(chart.curves) == GPUS and not any(k[1].startswith("band:") for k in chart.curves)


def test_a_job_curve_has_the_job_colour(qtbot):
    from gui.theme import job_colour

    st = ClusterState(clock=lambda: NOW)
    st.apply_snapshot("n1", SnapshotReply(seq=1, inventory=inventory("n1"), samples=[sample("n1", 0.0, jobs={"n1.4": 0})],
                                          jobs=[job("n1.4")]))
    chart = Chart(st, ("job", "cpu_pct"), "*", "5 min")
    qtbot.addWidget(chart)
    chart.show()
    assert chart.redraw(NOW, force=True)
    (curve,) = chart.curves.values()
    assert curve.opts["pen"].color() == job_colour("n1.4")
