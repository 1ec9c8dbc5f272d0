"""Record a session from the app against a real agentd, then replay it in the app."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from agentd.store import recording as recording_mod
from agentd.store.recording import RecordingReader
from tests.recording import bad_files as bad
from tests.recording.conftest import make_recording

from .conftest import submit, wait_until

pytestmark = [pytest.mark.gui, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]

REPO = Path(__file__).resolve().parents[2]
CONTROL_TIP = "replay: control is disabled"
AGE_COLUMN = 9


@pytest.fixture
def disk_threads(monkeypatch):
    """Thread ids that wrote to a recording (Recorder.flush is where the disk is written)."""
    seen: set[int] = set()
    original = recording_mod.Recorder.flush

    def flush(self):
        seen.add(threading.get_ident())
        return original(self)

    monkeypatch.setattr(recording_mod.Recorder, "flush", flush)
    return seen


def _record(qtbot, w, path: Path, seconds: float, title: str = "nightly run") -> None:
    w.recorder.ask_path = lambda: str(path)
    w.recorder.ask_meta = lambda p, t, n, stopping: (title, "GPU 1 was hot")
    w.recorder.act_record.trigger()
    wait_until(qtbot, lambda: w.source.is_recording(), what="recording started")
    assert w.status.recording.isVisible() and "REC" in w.status.recording.text()
    assert not w.recorder.act_record.isEnabled() and w.recorder.act_stop.isEnabled()
    wait_until(qtbot, lambda: (st := w.source.recording()) and st.samples >= seconds / 0.5, timeout_s=seconds + 15,
               what="samples written")
    assert "MiB" in w.status.recording.text() or "KiB" in w.status.recording.text()
    w.recorder.act_stop.trigger()
    wait_until(qtbot, lambda: not w.source.is_recording(), what="recording stopped")
    assert not w.status.recording.isVisible()
    assert any("recording saved to" in line for line in w.events.lines) or \
        wait_until(qtbot, lambda: (w.refresh_views(), any("recording saved to" in ln for ln in w.events.lines))[1],
                   what="saved event")


def test_record_from_the_app_then_replay_shows_the_same_numbers(qtbot, tmp_path, agentd, open_window, settings, disk_threads):
    job = submit(agentd, name="busy", gpus=1)
    w = open_window(agentd)
    wait_until(qtbot, lambda: (j := w.state.job(job)) is not None and j.state == "running", what="job running")
    path = tmp_path / "session.db"
    _record(qtbot, w, path, seconds=3)

    # written by the network thread, never by the GUI thread
    assert disk_threads and threading.main_thread().ident not in disk_threads
    with RecordingReader(path) as r:
        info = r.info()
        assert info.title == "nightly run" and info.notes == "GPU 1 was hot"
        assert info.samples["n1"] >= 6
        start, end = r.time_range()
        derived = r.derived("n1", start, end)
        # two consecutive samples that both carry the job's derived metrics
        pairs = [i for i in range(len(derived) - 1) if any(c.job_id == job for c in derived[i].jobs)
                 and any(c.job_id == job for c in derived[i + 1].jobs)]
        assert pairs, "the recording holds the job's metrics"
        i = pairs[len(pairs) // 2]
        want_mid, want_next = derived[i], derived[i + 1]
        t_mid, t_next = want_mid.wall_s, want_next.wall_s

    # File > Recording properties edits the finished file (on the network thread)
    w.recorder.ask_meta = lambda p, t, n, stopping: ("renamed run", "second look")
    assert w.recorder.act_props.isEnabled()
    w.recorder.act_props.trigger()

    def meta():
        with RecordingReader(path) as r:
            return r.meta()
    wait_until(qtbot, lambda: meta().get("title") == "renamed run", what="title saved")
    assert meta()["notes"] == "second look"

    # replay it in the app
    from gui.app import open_replay_window
    rw = open_replay_window(path, settings, confirm=lambda *a: True)
    qtbot.addWidget(rw)
    try:
        assert rw.windowTitle().startswith("Fleetdeck — replay — session.db")
        wait_until(qtbot, lambda: rw.source.time_range() is not None, what="recording opened")
        tl = rw.timeline
        assert tl.bar.start_s == start and tl.bar.end_s == end
        assert tl.btn_play.isEnabled()

        # seek: the views show what the recording derives for that sample
        rw.source.seek(t_mid)
        wait_until(qtbot, lambda: rw.source.now_s() == t_mid and (n := rw.state.nodes.get("n1")) is not None
                   and n.derived is not None and n.derived.wall_s == t_mid, what="state at the seek time")
        rw.refresh_views()
        _assert_views_show(rw, want_mid, job)
        # the event log holds what the recording knew at t_mid, once (a seek replaces it)
        assert len(rw.events.lines) == len(rw.state.events) > 0
        assert all(e.wall_s <= t_mid for e in rw.state.events)
        # ages count to the replay time, not to now
        from gui import fmt
        row = next(i for i, r in enumerate(rw.jobs.model.rows) if r.id == job)
        started = rw.jobs.model.rows[row].started_s
        assert rw.jobs.model.data(rw.jobs.model.index(row, AGE_COLUMN)) == fmt.duration(t_mid - started)
        assert tl.clock.text().endswith(__import__("time").strftime("%H:%M:%S", __import__("time").localtime(t_mid)))
        assert str(__import__("time").localtime(t_mid).tm_year) in tl.clock.text()

        # step to the next sample
        tl.btn_next.click()
        wait_until(qtbot, lambda: rw.state.nodes["n1"].derived.wall_s == t_next, what="next sample")
        rw.refresh_views()
        _assert_views_show(rw, want_next, job)
        tl.btn_prev.click()
        wait_until(qtbot, lambda: rw.state.nodes["n1"].derived.wall_s == t_mid, what="previous sample")

        # speed and play to the end
        tl.speed.setCurrentIndex(tl.speed.findData(100.0))
        wait_until(qtbot, lambda: rw.source.speed() == 100.0, what="speed 100x")
        tl.btn_play.click()
        wait_until(qtbot, lambda: rw.source.now_s() == end and not rw.source.is_playing(), what="played to the end")
        # the chart series (what the charts draw) hold the recording's derived values at the
        # recording's sample times
        with RecordingReader(path) as r:
            want = {d.wall_s: d for d in r.derived("n1", t_mid, end)}
        ts, cpu = rw.state.series.get(("n1", "", "cpu_pct"))
        _, gpu0 = rw.state.series.get(("n1", "gpu0", "sm_util_pct"))
        played = [(t, c, g) for t, c, g in zip(ts, cpu, gpu0) if t >= t_mid]
        assert len(played) >= 2 and float(played[-1][0]) == end, (list(ts), sorted(want))
        for t, c, g in played:
            assert float(t) in want, f"series time {t} is not a recorded sample time"
            assert c == pytest.approx(want[float(t)].cpu_pct, rel=1e-5, abs=1e-4)
            assert g == pytest.approx(want[float(t)].gpus[0].sm_util_pct, rel=1e-5, abs=1e-4)

        # control is disabled, visibly
        rw.jobs.select([job])
        rw.jobs.update_enabled()
        assert rw.jobs.selected() == [job]
        for a in (rw.jobs.act_pause, rw.jobs.act_resume, rw.jobs.act_migrate, rw.jobs.act_priority, rw.jobs.act_cancel):
            assert not a.isEnabled() and a.toolTip() == CONTROL_TIP
        rw.jobs.act_priority.trigger()
        assert rw.jobs.priority_dialog is None, "no priority dialog in a replay"
        assert not rw.topology.acceptDrops() and CONTROL_TIP in rw.topology.toolTip()
        assert not rw.recorder.act_record.isEnabled()
        rw._migrate_drop(job, "n1", "n2")
        assert CONTROL_TIP in rw.status.currentMessage()
    finally:
        rw.close()


def _assert_views_show(rw, want, job_id) -> None:
    node = rw.state.nodes["n1"]
    assert node.derived.cpu_pct == want.cpu_pct
    assert [g.sm_util_pct for g in node.derived.gpus] == [g.sm_util_pct for g in want.gpus]
    # the job table shows the recording's derived job CPU
    rows = {r.id: r for r in rw.jobs.model.rows}
    want_job = {c.job_id: c for c in want.jobs}.get(job_id)
    assert want_job is not None
    assert rows[job_id].cpu_pct == want_job.cpu_pct


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs, so the recording can run out of space for real."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_stops_recording_with_a_message(qtbot, tmp_path, agentd, open_window, settings, tiny_disk):
    w = open_window(agentd)
    wait_until(qtbot, lambda: "n1" in w.state.nodes and w.state.nodes["n1"].link == "live", what="node live")
    w.recorder.ask_path = lambda: str(tiny_disk / "full.db")
    w.recorder.act_record.trigger()
    wait_until(qtbot, lambda: (st := w.source.recording()) and st.samples >= 1, what="recording under way")
    with open(tiny_disk / "filler", "wb") as f:  # take the rest of the disk
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    settings.setValue("ui/failure_popups", True)
    wait_until(qtbot, lambda: not w.source.is_recording(), timeout_s=20, what="recording stopped by the full disk")
    st = w.source.recording()
    assert "disk is full" in st.error and "full.db" in st.error
    assert not w.status.recording.isVisible() and w.recorder.act_record.isEnabled()
    w.refresh_views()
    assert any("disk is full" in line for line in w.events.lines)
    boxes = [b for b in w.findChildren(QMessageBox) if "disk is full" in b.text()]
    assert boxes, "a message box says why recording stopped"
    for b in boxes:
        b.close()
    # the app goes on: the node is still followed
    assert w.source._worker is not None and w.source._worker.isRunning()


def test_unwritable_path_is_a_message(qtbot, tmp_path, agentd, open_window):
    w = open_window(agentd)
    w.recorder.ask_path = lambda: str(tmp_path / "no-such-dir" / "x.db")
    w.recorder.act_record.trigger()
    wait_until(qtbot, lambda: (st := w.source.recording()) is not None and not st.active, what="refusal")
    assert "does not exist" in w.source.recording().error
    assert not w.status.recording.isVisible() and w.recorder.act_record.isEnabled()
    w.refresh_views()
    assert any("no-such-dir" in line for line in w.events.lines)


BAD = [bad.not_sqlite, bad.empty_file, bad.truncated, bad.newer, bad.no_samples]


@pytest.mark.parametrize("make", BAD, ids=[f.__name__ for f in BAD])
def test_bad_recording_cli_is_one_line_and_exit_2(tmp_path, make):
    p = tmp_path / "bad.db"
    expect = make(p)
    r = subprocess.run([sys.executable, "-c", "import sys; from gui.app import main; sys.exit(main())", "--replay", str(p),
                        "--settings-dir", str(tmp_path / "s")], capture_output=True, text=True, timeout=60, cwd=REPO,
                       env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and re.search(expect, lines[0]) and str(p) in lines[0]


@pytest.mark.parametrize("make", BAD, ids=[f.__name__ for f in BAD])
def test_bad_recording_from_the_menu_is_a_message_box(qtbot, tmp_path, settings, make):
    from gui.sources.replay import ReplaySource

    good = tmp_path / "good.db"
    make_recording(good, seconds=3)
    from gui.app import assemble_window
    w = assemble_window(ReplaySource(good), settings)
    qtbot.addWidget(w)
    w.show()
    p = tmp_path / "bad.db"
    expect = make(p)
    assert w.open_recording(str(p)) is None
    boxes = [b for b in w.findChildren(QMessageBox) if b.objectName() == "bad-recording"]
    assert len(boxes) == 1 and re.search(expect, boxes[0].text()) and "Traceback" not in boxes[0].text()
    assert not w.replay_windows
    boxes[0].close()
    w.close()


def test_open_recording_from_a_live_window(qtbot, tmp_path, settings):
    from gui.sources.live import LiveSource

    good = tmp_path / "good.db"
    make_recording(good, seconds=5)
    from gui.app import assemble_window
    w = assemble_window(LiveSource([]), settings)
    qtbot.addWidget(w)
    w.start()
    assert w.recorder.act_record.isEnabled() and w.session_bar.isVisibleTo(w)
    rw = w.open_recording(str(good))
    assert rw is not None and w.replay_windows == [rw]
    assert rw.windowTitle().startswith("Fleetdeck — replay — good.db")
    assert not rw.session_bar.isVisibleTo(rw) and not rw.recorder.act_record.isEnabled()
    wait_until(qtbot, lambda: rw.timeline.bar.markers and rw.timeline.bar.end_s > 0, what="markers on the timeline")
    # The first frame, before playing, already shows every node's jobs and a sample, and says
    # the nodes' state is recorded, not live.
    wait_until(qtbot, lambda: rw.jobs.model.rowCount() == 2, what="the recorded jobs on the first frame")
    assert not rw.source.is_playing()
    for key in ("n0", "n1"):
        assert rw.state.nodes[key].derived is not None
        assert rw.tree_model._node_texts(key)[1].startswith("● recorded")
    start, end = rw.source.time_range()
    inside = [e for e in rw.timeline.bar.markers if start < e.wall_s < end]
    ev = inside[len(inside) // 2] if inside else rw.timeline.bar.markers[-1]
    from gui.views.timeline import marker_text
    assert ev.message in marker_text(ev)
    # clicking a marker jumps to its event
    from PySide6.QtCore import QPoint, Qt
    rw.timeline.bar.resize(600, 34)
    x = round(rw.timeline.bar.x_of(ev.wall_s))
    qtbot.mouseClick(rw.timeline.bar, Qt.MouseButton.LeftButton, pos=QPoint(x, 20))
    want = min(max(ev.wall_s, start), end)
    wait_until(qtbot, lambda: rw.source.now_s() == want, what="jumped to the marker")
    w.close()
    assert not w.replay_windows or all(not x.isVisible() for x in w.replay_windows)
