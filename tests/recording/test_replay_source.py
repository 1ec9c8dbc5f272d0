"""ReplaySource feeds the views like a live source: reset/node_added/snapshot, then messages."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from agentd.protocol.messages import Pause, SampleMsg, SnapshotReply
from agentd.store.recording import RecordingError
from gui.sources.replay import ReplaySource

from .conftest import START_S, make_recording

pytestmark = pytest.mark.gui


class Collector:
    def __init__(self, src: ReplaySource) -> None:
        self.log: list[tuple] = []
        src.reset.connect(lambda: self.log.append(("reset",)))
        src.node_added.connect(lambda k: self.log.append(("node", k)))
        src.snapshot.connect(lambda k, s: self.log.append(("snapshot", k, s)))
        src.message.connect(lambda k, m: self.log.append(("message", k, m)))
        src.link_state.connect(lambda k, s: self.log.append(("link", k, s)))
        src.problem.connect(lambda m: self.log.append(("problem", m)))

    def samples(self, node: str) -> list[float]:
        return [e[2].sample.wall_s for e in self.log if e[0] == "message" and e[1] == node and isinstance(e[2], SampleMsg)]


@pytest.fixture
def source(qtbot, tmp_path):
    path = tmp_path / "r.db"
    make_recording(path, seconds=30)
    src = ReplaySource(path)
    yield src
    src.stop()


def test_opens_in_background_then_snapshots(qtbot, source):
    got = Collector(source)
    with qtbot.waitSignal(source.opened, timeout=5000) as opened:
        source.start()
    start, end = opened.args
    assert (start, end) == (START_S - 1, START_S + 30)
    qtbot.waitUntil(lambda: sum(e[0] == "snapshot" for e in got.log) == 2, timeout=5000)
    assert got.log[0] == ("reset",)
    assert [e[1] for e in got.log if e[0] == "node"] == ["n0", "n1"]
    snap = next(e[2] for e in got.log if e[0] == "snapshot")
    assert isinstance(snap, SnapshotReply) and snap.inventory.node == "n0"
    caps = source.capabilities()
    assert not caps.can_control and caps.can_seek and not caps.live and "r.db" in caps.label
    qtbot.waitUntil(lambda: len(source.markers()) == 4, timeout=5000)
    assert [m.actor for m in source.markers() if m.kind == "action"] == ["alice", "bob"]


def test_play_at_100x_emits_every_sample_in_order(qtbot, source):
    got = Collector(source)
    with qtbot.waitSignal(source.opened, timeout=5000):
        source.start()
    source.set_speed(1000)  # clamped
    assert source.speed() == 100
    with qtbot.waitSignal(source.playing_changed, timeout=5000):
        source.play()
    qtbot.waitUntil(lambda: not source.is_playing(), timeout=10000)  # 31 s at 100x: about 0.3 s
    # It opened at the snapshot (START_S), whose history brought the samples up to it; the
    # stream brings every later one.
    snap = next(e[2] for e in got.log if e[0] == "snapshot" and e[1] == "n0")
    assert snap.samples[-1].wall_s == START_S and snap.jobs
    assert got.samples("n0") == [START_S + k for k in range(1, 31)]
    assert source.now_s() == START_S + 30


def test_seek_and_step(qtbot, source):
    got = Collector(source)
    with qtbot.waitSignal(source.opened, timeout=5000):
        source.start()
    qtbot.waitUntil(lambda: sum(e[0] == "snapshot" for e in got.log) == 2, timeout=5000)
    got.log.clear()
    source.seek(START_S + 12.5)
    qtbot.waitUntil(lambda: sum(e[0] == "snapshot" for e in got.log) == 2, timeout=5000)
    assert got.log[0] == ("reset",)
    snap = next(e[2] for e in got.log if e[0] == "snapshot" and e[1] == "n0")
    # The charts keep the recording's history before the playhead (up to an hour), in order.
    walls = [s.wall_s for s in snap.samples]
    assert walls[-2:] == [START_S + 11, START_S + 12] and walls == sorted(walls) and len(walls) > 2
    assert [(j.id, j.state) for j in snap.jobs] == [("n0.1", "paused")]
    qtbot.waitUntil(lambda: source.now_s() == START_S + 12.5, timeout=5000)
    got.log.clear()
    source.step(+1)
    qtbot.waitUntil(lambda: len(got.samples("n0")) == 1 and len(got.samples("n1")) == 1, timeout=5000)
    assert got.samples("n0") == [START_S + 13]
    got.log.clear()
    source.step(-1)
    qtbot.waitUntil(lambda: sum(e[0] == "snapshot" for e in got.log) == 2, timeout=5000)
    qtbot.waitUntil(lambda: source.now_s() == START_S + 12, timeout=5000)


def test_control_requests_fail_asynchronously(qtbot, source):
    with qtbot.waitSignal(source.request_failed, timeout=2000) as failed:
        token = source.request("n0", Pause(job="n0.1"))
    assert failed.args[0] == token and failed.args[1].code is None
    assert "replay" in failed.args[1].message


def test_bad_file_fails_at_once(tmp_path):
    p = tmp_path / "x.db"
    p.write_text("not sqlite")
    with pytest.raises(RecordingError, match="not a SQLite file"):
        ReplaySource(p)
