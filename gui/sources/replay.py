"""ReplaySource: a recording played back through the same signals as a live cluster.

A worker QThread owns the :class:`agentd.store.recording.RecordingReader` and does every disk
read; the GUI thread only sends it commands (play, pause, speed, seek, step) through a queue
and receives decoded structs through queued signals, so the GUI never waits on the disk.

Timeline API (beyond :class:`DataSource`): :meth:`play`, :meth:`pause`, :meth:`set_speed`
(0.25x-100x), :meth:`seek` (wall seconds), :meth:`step` (+1 next sample, -1 previous),
:meth:`time_range`, :meth:`markers` (events for the timeline), :meth:`gaps`; and the signals
``position_changed(float)``, ``playing_changed(bool)``, ``speed_changed(float)``,
``opened(float, float)`` (start, end), ``markers_changed(list[Event])``,
``gaps_changed(list[Gap])``.
"""

from __future__ import annotations

import itertools
import logging
import queue
import time
from pathlib import Path
from typing import Any

import msgspec
from PySide6.QtCore import Qt, QThread, QTimer, Signal

from agentd.protocol.jobs import Event
from agentd.protocol.messages import Request, SampleMsg, StreamMsg
from agentd.store.recording import LinkChange, RecordingError, RecordingReader, SnapshotMark, check_recording_file
from gui.sources.base import Capabilities, DataSource, RequestFailure

log = logging.getLogger(__name__)

MIN_SPEED, MAX_SPEED = 0.25, 100.0
TICK_S = 0.02  # how often the worker advances the playhead while playing
POSITION_EVERY_S = 0.05  # how often it reports the playhead (20 Hz is enough for a timeline)
READ_AHEAD_S = 10.0  # recording seconds read per disk access while playing
SNAPSHOT_EVENTS = 200  # recent events handed over with each (seek) snapshot
SEEK_HISTORY_S = 3600.0  # a seek hands over this much recorded history, so the charts keep it
STOP_WAIT_MS = 3000


class _Worker(QThread):
    """Owns the reader; everything it learns crosses to the GUI thread as queued signals."""

    opened = Signal(float, float, object)  # start, end, node names
    reset = Signal()
    node_added = Signal(str)
    snapshot = Signal(str, object)
    message = Signal(str, object)
    link_state = Signal(str, str)
    position = Signal(float)
    playing = Signal(bool)
    markers = Signal(object)
    gaps = Signal(object)
    problem = Signal(str)

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.commands: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._stopping = False
        self.reader: RecordingReader | None = None
        self.pos = 0.0
        self.start_s = self.end_s = 0.0
        self.speed = 1.0
        self.is_playing = False
        self._buffer: list[tuple[float, str, Any]] = []
        self._buffered_to = 0.0
        self._links: dict[str, str] = {}
        self._damage_seen = 0

    def request_stop(self) -> None:
        self._stopping = True

    def run(self) -> None:
        try:
            self.reader = RecordingReader(self.path)
            rng = self.reader.time_range()
            if rng is None:
                raise RecordingError(f"recording {self.path} holds no samples; there is nothing to replay")
            self.start_s, self.end_s = rng
            self.opened.emit(self.start_s, self.end_s, self.reader.nodes())
            self.markers.emit(self.reader.events())
            self.gaps.emit(self.reader.gaps())
            self._seek(self.reader.opening_time() or self.start_s)
            self._report_damage()
            self._loop()
        except RecordingError as exc:
            self.problem.emit(str(exc))
        except Exception as exc:  # never let a worker die silently
            log.exception("replay of %s failed", self.path)
            self.problem.emit(f"replay of {self.path} stopped: {exc}")
        finally:
            if self.reader is not None:
                self.reader.close()

    def _loop(self) -> None:
        last = time.monotonic()
        last_report = 0.0
        while not self._stopping:
            try:
                cmd = self.commands.get(timeout=TICK_S)
            except queue.Empty:
                cmd = None
            now = time.monotonic()
            if cmd is not None:
                self._command(cmd)
                last = now
            elif self.is_playing:
                target = min(self.end_s, self.pos + (now - last) * self.speed)
                self._advance(target)
                last = now
                if target >= self.end_s:
                    self._set_playing(False)
            else:
                last = now
            if now - last_report >= POSITION_EVERY_S or cmd is not None:
                self.position.emit(self.pos)
                last_report = now
                self._report_damage()

    def _report_damage(self) -> None:
        """Damaged chunks were skipped: say so (once per new find) and show them as gaps."""
        assert self.reader is not None
        seen = len(self.reader.damage) + self.reader.damaged_rows
        if seen != self._damage_seen:
            self._damage_seen = seen
            self.problem.emit(self.reader.damage_summary())
            self.gaps.emit(self.reader.gaps())

    def _command(self, cmd: tuple[Any, ...]) -> None:
        kind = cmd[0]
        if kind == "play":
            if self.pos >= self.end_s:
                self._seek(self.reader.opening_time() or self.start_s)
            self._set_playing(True)
        elif kind == "pause":
            self._set_playing(False)
        elif kind == "speed":
            self.speed = cmd[1]
        elif kind == "seek":
            self._seek(min(self.end_s, max(self.start_s, cmd[1])))
        elif kind == "step":
            self._step(cmd[1])

    def _set_playing(self, on: bool) -> None:
        if on != self.is_playing:
            self.is_playing = on
            self.position.emit(self.pos)  # where it stopped arrives before "stopped"
            self.playing.emit(on)

    def _seek(self, t: float) -> None:
        """Replace everything the views know with the state at ``t`` (as a reconnect would)."""
        assert self.reader is not None
        self.reset.emit()
        self._links.clear()
        states = self.reader.state_at(t)
        events = self.reader.events(None, t, limit=SNAPSHOT_EVENTS, last=True)
        for name, st in states.items():
            self.node_added.emit(name)
            snap = st.as_snapshot([e for e in events if e.node == (st.inventory.node if st.inventory else name)])
            if snap is not None:
                # The recorded samples before the playhead ride along (as a live snapshot's
                # history does): the charts show the recording up to t, not two points.
                history = self.reader.samples(name, t - SEEK_HISTORY_S, t, before=1)
                if len(history) > len(snap.samples):
                    snap = msgspec.structs.replace(snap, samples=history)
            self._emit_link(name, st.link or "live")
            if snap is not None:
                self.snapshot.emit(name, snap)
        self.pos = t
        self._buffer = []
        self._buffered_to = t

    def _emit_link(self, name: str, state: str) -> None:
        if self._links.get(name) != state:
            self._links[name] = state
            self.link_state.emit(name, state)

    def _advance(self, target: float) -> None:
        """Emit everything recorded in (pos, target]."""
        assert self.reader is not None
        while True:
            while self._buffer and self._buffer[0][0] <= target:
                w, name, item = self._buffer.pop(0)
                self._emit_item(w, name, item)
            if self._buffered_to >= target or self._buffered_to >= self.end_s:
                break
            hi = min(self.end_s, max(target, self._buffered_to + READ_AHEAD_S * max(1.0, self.speed / 10)))
            self._buffer.extend(self.reader.messages(self._buffered_to, hi))
            self._buffered_to = hi
        self.pos = target

    def _emit_item(self, w: float, name: str, item: Any) -> None:
        if isinstance(item, LinkChange):
            self._emit_link(name, item.state)
        elif isinstance(item, SnapshotMark):
            st = self.reader.state_at(w, name)[name] if self.reader else None
            snap = st.as_snapshot() if st else None
            if snap is not None:
                self.snapshot.emit(name, snap)
        elif isinstance(item, StreamMsg):
            if isinstance(item, SampleMsg) and self._links.get(name) != "live":
                self._emit_link(name, "live")
            self.message.emit(name, item)

    def _step(self, direction: int) -> None:
        """Go to the next (+1) or previous (-1) recorded sample of any node."""
        assert self.reader is not None
        self._set_playing(False)
        if direction > 0:
            nxt = self.reader.next_sample_time(self.pos)
            if nxt is not None:
                self._advance(nxt)
        else:
            prev = self.reader.previous_sample_time(self.pos)
            if prev is not None:
                self._seek(prev)


class ReplaySource(DataSource):
    """Plays a recording file. Raises RecordingError at once for a file that is not one."""

    position_changed = Signal(float)
    playing_changed = Signal(bool)
    speed_changed = Signal(float)
    opened = Signal(float, float)
    markers_changed = Signal(object)
    gaps_changed = Signal(object)

    def __init__(self, path: str | Path, parent: Any = None) -> None:
        super().__init__(parent)
        self.path = Path(path)
        check_recording_file(self.path)  # a few header bytes: cheap enough for the GUI thread
        self._tokens = itertools.count(1)
        self._worker: _Worker | None = None
        self._nodes: list[str] = []
        self._pos = 0.0
        self._range: tuple[float, float] | None = None
        self._speed = 1.0
        self._playing = False
        self._markers: list[Event] = []
        self._gaps: list[Any] = []

    # ---- DataSource ----

    def capabilities(self) -> Capabilities:
        return Capabilities(can_control=False, can_add_nodes=False, can_seek=True, live=False,
                            label=f"replay of {self.path.name}")

    def start(self) -> None:
        if self._worker is not None:
            return
        w = self._worker = _Worker(self.path)
        w.speed = self._speed
        q = Qt.ConnectionType.QueuedConnection
        w.opened.connect(self._on_opened, q)
        w.reset.connect(self._on_reset, q)
        w.node_added.connect(self._on_node_added, q)
        w.snapshot.connect(self._on_snapshot, q)
        w.message.connect(self._on_message, q)
        w.link_state.connect(self._on_link_state, q)
        w.position.connect(self._on_position, q)
        w.playing.connect(self._on_playing, q)
        w.markers.connect(self._on_markers, q)
        w.gaps.connect(self._on_gaps, q)
        w.problem.connect(self._on_problem, q)
        w.start()

    def stop(self) -> None:
        w, self._worker = self._worker, None
        if w is None:
            return
        w.request_stop()
        if not w.wait(STOP_WAIT_MS):
            log.warning("replay thread did not stop within %d ms", STOP_WAIT_MS)
        # Signals still queued from the worker are dropped by the handlers (no worker any more).
        w.deleteLater()

    def nodes(self) -> list[str]:
        return list(self._nodes)

    def now_s(self) -> float:
        return self._pos

    def request(self, key: str, req: Request) -> int:
        token = next(self._tokens)
        name = type(req).__struct_config__.tag
        failure = RequestFailure(key, req, None, f"{name!r} on {key!r} was not sent: this is a replay of "
                                 f"{self.path.name}; control actions work only on a live cluster")
        QTimer.singleShot(0, lambda: self.request_failed.emit(token, failure))
        return token

    # ---- timeline ----

    def play(self) -> None:
        self._send("play")

    def pause(self) -> None:
        self._send("pause")

    def is_playing(self) -> bool:
        return self._playing

    def speed(self) -> float:
        return self._speed

    def set_speed(self, speed: float) -> None:
        """Playback speed, clamped to 0.25x-100x."""
        self._speed = min(MAX_SPEED, max(MIN_SPEED, float(speed)))
        self._send("speed", self._speed)
        self.speed_changed.emit(self._speed)

    def seek(self, wall_s: float) -> None:
        """Jump to a wall time; the views get reset() then fresh snapshots."""
        self._send("seek", float(wall_s))

    def step(self, direction: int = 1) -> None:
        """Pause and move to the next (+1) or previous (-1) recorded sample."""
        self._send("step", 1 if direction >= 0 else -1)

    def time_range(self) -> tuple[float, float] | None:
        """(start, end) wall seconds, known once ``opened`` was emitted."""
        return self._range

    def markers(self) -> list[Event]:
        """Every recorded event (job state changes, control actions with actor and result)."""
        return list(self._markers)

    def gaps(self) -> list[Any]:
        """Spans where a node sent nothing (link down or recorder stopped)."""
        return list(self._gaps)

    def _send(self, *cmd: Any) -> None:
        if self._worker is not None:
            self._worker.commands.put(cmd)

    # ---- from the worker ----

    # Every handler drops what arrives after stop(): nothing is emitted once stop() returned.

    def _on_snapshot(self, key: str, snap: Any) -> None:
        if self._worker is not None:
            self.snapshot.emit(key, snap)

    def _on_message(self, key: str, msg: Any) -> None:
        if self._worker is not None:
            self.message.emit(key, msg)

    def _on_link_state(self, key: str, state: str) -> None:
        if self._worker is not None:
            self.link_state.emit(key, state)

    def _on_problem(self, text: str) -> None:
        if self._worker is not None:
            self.problem.emit(text)

    def _on_opened(self, start: float, end: float, names: list[str]) -> None:
        if self._worker is None:
            return
        self._range = (start, end)
        self._pos = start
        self.opened.emit(start, end)

    def _on_reset(self) -> None:
        if self._worker is None:
            return
        self._nodes = []
        self.reset.emit()

    def _on_node_added(self, name: str) -> None:
        if self._worker is None:
            return
        if name not in self._nodes:
            self._nodes.append(name)
        self.node_added.emit(name)

    def _on_position(self, pos: float) -> None:
        if self._worker is None:
            return
        if pos != self._pos:
            self._pos = pos
            self.position_changed.emit(pos)

    def _on_playing(self, on: bool) -> None:
        if self._worker is None:
            return
        self._playing = on
        self.playing_changed.emit(on)

    def _on_markers(self, events: list[Event]) -> None:
        if self._worker is None:
            return
        self._markers = list(events)
        self.markers_changed.emit(self._markers)

    def _on_gaps(self, gaps: list[Any]) -> None:
        if self._worker is None:
            return
        self._gaps = list(gaps)
        self.gaps_changed.emit(self._gaps)
