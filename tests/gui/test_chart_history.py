"""Chart spans past the app's hour: read from a real Prometheus scraping a real agentd, or a
notice that says how to get them."""

from __future__ import annotations

import numpy as np
import pytest

from gui.sources.history_fetch import HistoryFetcher
from tests.agentd_proc import free_port, start_agentd
from tests.exporter.test_real_prometheus import _wait_for, prometheus  # noqa: F401  (fixture)

from .conftest import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.timeout(180),
              pytest.mark.qt_log_ignore("does not support propagateSizeHints")]


def test_a_six_hour_span_comes_from_prometheus(qtbot, tmp_path, open_window, prometheus) -> None:  # noqa: F811
    metrics_port = free_port()
    node = start_agentd(tmp_path, node="ph1", simulate_gpus=2, interval=0.5,
                        extra=["--metrics-listen", f"127.0.0.1:{metrics_port}"])
    try:
        port, prom, log = prometheus(metrics_port)
        _wait_for(port, 'count_over_time(fleetdeck_gpu_utilization_ratio{node="ph1",gpu="1"}[1m]) >= 3',
                  "a few GPU points", prom, log)
        w = open_window(node)
        chart = w.charts.charts[0]  # GPU utilisation, all GPUs
        chart.span_box.setCurrentText("6 h")
        wait_until(qtbot, lambda: "Beyond the app's last hour" in chart.notice.text(), what="the no-URL notice")
        assert chart.notice.isVisibleTo(chart)

        w.charts.set_history(HistoryFetcher(f"http://127.0.0.1:{port}", parent=w))
        wait_until(qtbot, lambda: "from Prometheus at" in chart.notice.text() and not chart.notice.text().startswith("Loading")
                   and len(chart.curves) == 2, timeout_s=30, what="curves from Prometheus")
        for key, curve in chart.curves.items():
            assert key[0] == "ph1"
            t, v = curve.getData()
            assert t is not None and len(t) >= 1 and np.nanmax(v) <= 100
        assert sorted(k[1] for k in chart.curves) == ["gpu0", "gpu1"]
        chart.span_box.setCurrentText("15 min")
        wait_until(qtbot, lambda: not chart.notice.isVisibleTo(chart), what="notice gone for a span the app holds")
    finally:
        node.stop()


def test_a_malformed_url_is_refused_with_the_remedy() -> None:
    from gui.sources.prom_history import HistoryError

    with pytest.raises(HistoryError, match="cluster file"):
        HistoryFetcher("prom:9090")
