"""A hostile recording opened in the app: a dialog with one clear line, no traceback, no hang,
and nothing stored in the file runs."""

from __future__ import annotations

import re
import sqlite3
import time

import pytest
from PySide6.QtWidgets import QMessageBox

from tests.recording import bad_files as bad
from tests.recording.conftest import make_recording

from .conftest import wait_until

pytestmark = [pytest.mark.gui, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]


@pytest.mark.parametrize("make", [bad.trigger, bad.fifo, bad.view_for_table], ids=lambda f: f.__name__)
def test_hostile_recording_from_the_menu_is_a_message_box(qtbot, tmp_path, settings, make):
    from gui.sources.replay import ReplaySource

    good = tmp_path / "good.db"
    make_recording(good, seconds=3)
    from gui.app import assemble_window
    w = assemble_window(ReplaySource(good), settings)
    qtbot.addWidget(w)
    w.show()
    p = tmp_path / "evil.db"
    expect = make(p)
    t0 = time.monotonic()
    assert w.open_recording(str(p)) is None
    assert time.monotonic() - t0 < 30  # a FIFO must not block the GUI thread
    boxes = [b for b in w.findChildren(QMessageBox) if b.objectName() == "bad-recording"]
    assert len(boxes) == 1 and re.search(expect, boxes[0].text()) and str(p) in boxes[0].text()
    assert "Traceback" not in boxes[0].text() and len(boxes[0].text().splitlines()) == 1
    assert not w.replay_windows
    if make is bad.trigger:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        assert conn.execute("SELECT count(*) FROM pwned").fetchone()[0] == 0
        conn.close()
    boxes[0].close()
    w.close()


def test_damaged_chunk_replays_in_the_app_with_a_warning(qtbot, tmp_path, settings):
    """A bomb chunk in a good file: the window opens, the event log says what was skipped and
    the timeline shows the damage as a gap."""
    from gui.app import open_replay_window

    p = tmp_path / "bomb.db"
    bad.bomb_chunk(p)
    rw = open_replay_window(p, settings)
    qtbot.addWidget(rw)
    wait_until(qtbot, lambda: any(g.reason == "damaged data" for g in rw.source.gaps()), timeout_s=30,
               what="the damaged chunk shown as a gap")
    wait_until(qtbot, lambda: (rw.refresh_views(), any("damaged chunk" in ln for ln in rw.events.lines))[1],
               timeout_s=30, what="the skip in the event log")
    rw.close()
