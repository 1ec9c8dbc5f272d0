"""Charts pick their scope with a typed key: a node keyed by its endpoint (``fleetdeck --node
tcp://H:7710``, whose key holds ':') is charted like any other (issue 12, item 7)."""

from __future__ import annotations

import numpy as np
import pytest

from gui.state import ChartScope

from .conftest import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]


def test_scope_settings_read_old_text_and_endpoint_keys():
    ep = "tcp://127.0.0.1:7710"
    assert ChartScope.from_json("*") == ChartScope()
    assert ChartScope.from_json(f"node:{ep}") == ChartScope("node", ep)
    assert ChartScope.from_json(f"gpu:{ep}:1") == ChartScope("gpu", ep, "1")
    assert ChartScope.from_json(f"job:{ep}:n1.4") == ChartScope("job", ep, "n1.4")
    for sc in (ChartScope(), ChartScope("gpu", ep, "1"), ChartScope("job", ep, "n1.4")):
        assert ChartScope.from_json(sc.to_json()) == sc
    for bad in ("gpu:n1", "gpu:n1:x", {"kind": "rack"}, 3):
        with pytest.raises(ValueError, match="chart scope"):
            ChartScope.from_json(bad)


def test_a_node_keyed_by_its_endpoint_is_charted(qtbot, agentd, settings):
    """A real daemon followed the way ``fleetdeck --node ENDPOINT`` follows it: the key is the
    endpoint. Picking that node's GPU 1 in the scope box draws exactly that GPU's curve, and the
    choice survives the settings round trip."""
    from gui.app import assemble_window
    from gui.sources.base import NodeAddress
    from gui.sources.live import LiveSource

    key = agentd.ctl
    assert ":" in key.split("://", 1)[1], "the key holds a ':' (host:port)"
    w = assemble_window(LiveSource([NodeAddress(key=key, endpoint=key)]), settings)
    qtbot.addWidget(w)
    w.start()
    w.show()
    try:
        wait_until(qtbot, lambda: (n := w.state.nodes.get(key)) is not None and n.inventory is not None
                   and w.state.series.nodes.get(key) is not None and w.state.series.nodes[key].count >= 3,
                   timeout_s=30, what="three samples of the endpoint-keyed node")
        chart = w.charts.add_chart(("gpu", "sm_util_pct"))
        chart.resize(600, 300)
        w.dock_charts.show()
        chart._fill_scopes()
        box = chart.scope_box
        want = ChartScope("gpu", key, "1")
        items = [box.itemData(i) for i in range(box.count())]
        assert want in items and ChartScope("node", key) in items
        box.setCurrentIndex(items.index(want))
        assert chart.scope == want
        assert chart.series_keys() == [(key, "gpu1", "sm_util_pct")]
        assert chart.redraw(w.source.now_s(), force=True)
        (curve,) = chart.curves.values()
        _, v = curve.getData()
        assert v is not None and np.isfinite(v).sum() >= 2, "the GPU's curve has points"

        box.setCurrentIndex(items.index(ChartScope("node", key)))
        assert sorted(chart.series_keys()) == [(key, "gpu0", "sm_util_pct"), (key, "gpu1", "sm_util_pct")]

        box.setCurrentIndex(items.index(want))
        saved = w.charts.settings()
        w.charts.restore(saved)
        assert w.charts.charts[-1].scope == want and "(gone)" not in w.charts.charts[-1].scope_box.currentText()
    finally:
        w.close()
