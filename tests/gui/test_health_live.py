"""A real agentd's alert reaches the window: the Health tab lists it, the status bar counts it,
a notification says it, and it clears when the daemon says so."""

from __future__ import annotations

import sys

import pytest

from agentd.protocol import JobSpec
from agentd.protocol.messages import Cancel, Submit
from tests.agentd_proc import start_agentd

from .conftest import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]
SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


def test_an_alert_of_a_live_node_is_listed_counted_notified_and_cleared(qtbot, tmp_path, open_window) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[gpu_idle_while_queued]\nfor_s = 1\nseverity = "warning"\n')
    node = start_agentd(tmp_path, node="hw1", simulate_gpus=2, extra=["--health-rules", str(rules)])
    try:
        with node.client(timeout_s=10) as c:
            c.call(Submit(spec=JobSpec(argv=SLEEP, name="holder", gpus=1)))
            waiting = c.call(Submit(spec=JobSpec(argv=SLEEP, name="needs-two", gpus=2))).job
        w = open_window(node)
        wait_until(qtbot, lambda: w.health.visible_rows(), timeout_s=30, what="an alert in the Health tab")
        [row] = w.health.visible_rows()
        assert row[1] == "hw1" and row[2].startswith("gpu ") and "free and idle" in row[3]
        assert "▲" in w.status.health.text() and "1" in w.status.health.text()
        wait_until(qtbot, lambda: w.notifications, what="a notification")
        assert "hw1" in w.notifications[0][0] and "free and idle" in w.notifications[0][1]
        with node.client(timeout_s=10) as c:
            c.call(Cancel(job=waiting.id, grace_s=1.0))
        wait_until(qtbot, lambda: not w.health.visible_rows(), timeout_s=30, what="the alert to clear")
        assert "healthy" in w.status.health.text()
    finally:
        node.stop()
