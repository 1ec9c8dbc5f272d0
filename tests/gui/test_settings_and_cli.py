"""Settings persist in the (temporary) QSettings; cluster files; the CLI screenshot path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gui.cluster_file import ClusterFileError, load_cluster

pytestmark = [pytest.mark.gui, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]
REPO = Path(__file__).resolve().parents[2]


def test_layout_charts_and_columns_persist(qtbot, settings):
    from gui.main_window import MainWindow
    from gui.sources.live import LiveSource

    w = MainWindow(LiveSource([]), settings)
    qtbot.addWidget(w)
    w.charts.charts[0].metric_box.setCurrentIndex(w.charts.charts[0].metric_box.findText("GPU power"))
    w.charts.add_chart(("node", "cpu_pct"), "*", "1 h")
    w.jobs.table.setColumnWidth(1, 333)
    w.dock_events.hide()
    w.resize(700, 500)  # fits the offscreen screen, which restoreGeometry clamps to
    w.close()
    w2 = MainWindow(LiveSource([]), settings)
    qtbot.addWidget(w2)
    assert [c.settings()["metric"] for c in w2.charts.charts] == [
        ["gpu", "power_w"], ["job", "app:samples_per_s"], ["job", "app:tokens_per_s"], ["node", "cpu_pct"]]
    assert w2.charts.charts[3].span_box.currentText() == "1 h"
    assert w2.jobs.table.columnWidth(1) == 333
    w2.show()
    assert not w2.dock_events.isVisible()
    assert w2.size().width() == 700
    w2.close()
    assert Path(settings.fileName()).is_relative_to(Path(settings.fileName()).parents[1])


def test_cluster_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[[node]]\nname = "gpu-a"\nendpoint = "tcp://10.0.0.5:7710"\nserver_key = "abc"\nlabels = { rack = "r1" }\n'
                 '[[node]]\nendpoint = "tcp://10.0.0.6:7710"\n')
    a, b = load_cluster(f)
    assert (a.key, a.endpoint, a.server_key, a.labels) == ("gpu-a", "tcp://10.0.0.5:7710", "abc", {"rack": "r1"})
    assert b.key == "tcp://10.0.0.6:7710" and b.server_key is None
    f.write_text('[[node]]\nname = "x"\nendpoint = "10.0.0.5"\n')
    with pytest.raises(ClusterFileError, match="tcp://HOST:PORT"):
        load_cluster(f)
    f.write_text("nodes = 1\n")
    with pytest.raises(ClusterFileError, match=r"no \[\[node\]\]"):
        load_cluster(f)
    with pytest.raises(ClusterFileError, match="cannot read"):
        load_cluster(tmp_path / "missing.toml")


def _procs_mentioning(text: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if text.encode() in (d / "cmdline").read_bytes():
                    out.append(int(d.name))
            except OSError:
                pass
    return out


@pytest.mark.slow
def test_demo_screenshot_then_daemons_stopped(tmp_path):
    shot = tmp_path / "shot.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "gui.app", "--demo", "1", "--screenshot", str(shot), "--after", "10",
                        "--settings-dir", str(tmp_path / "settings")], env=env, capture_output=True, text=True, timeout=90,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert shot.stat().st_size > 10_000
    # it told where its cluster file was (for agentctl --cluster), and removed it on quit
    assert f"cluster file {tmp_path / 'demo-cluster.toml'}" in r.stderr
    assert not (tmp_path / "demo-cluster.toml").exists()
    assert not _procs_mentioning(str(tmp_path)), "demo daemons must be stopped when the app exits"


def test_bad_cluster_file_is_a_message(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[node]]\nname = 'x'\n")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "gui.app", "--cluster", str(bad), "--settings-dir", str(tmp_path / "s")],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "endpoint" in r.stderr and "Traceback" not in r.stderr


def test_node_added_before_start_goes_live(qtbot, agentd):
    """`fleetdeck --node EP` adds nodes before the source starts; they must still connect."""
    from gui.sources.base import NodeAddress
    from gui.sources.live import LiveSource

    src = LiveSource([])
    states = []
    src.link_state.connect(lambda key, state, *rest: states.append(state))
    src.add_node(NodeAddress(key=agentd.ctl, endpoint=agentd.ctl))
    src.start()
    try:
        qtbot.waitUntil(lambda: "live" in states, timeout=15000)
    finally:
        src.stop()
