"""The app's recording, as the LiveSource's network thread runs it (sqlite connections and
the recorder are not thread-safe: everything here lives on that one thread).

Link events are written through ``agentd.store.link_recorder.LinkRecorder.record``, the very
call ``agentctl record`` uses, so a file recorded by the app and one recorded by the CLI
replay the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from agentd.protocol.link import LinkEvent, LinkStatus
from agentd.store.link_recorder import LinkRecorder
from agentd.store.recording import Recorder, RecordingError, RecordingReader

__all__ = ["RECORDING_STATUS_EVERY_S", "RecordingSession", "RecordingStatus", "set_recording_meta"]

RECORDING_STATUS_EVERY_S = 1.0  # how often the recording indicator hears duration and size


@dataclass(frozen=True)
class RecordingStatus:
    """What the recording indicator shows; sent from the network thread about once a second.

    ``error`` is a readable message (RecordingError's) when recording stopped because the file
    could not be written; empty otherwise."""

    active: bool
    path: str
    duration_s: float = 0.0
    size_bytes: int = 0
    samples: int = 0
    error: str = ""


class RecordingSession:
    """One recording in progress: the file's recorder and the shared link-event writer.
    Every method may raise RecordingError (disk full, file gone); the caller then ends it."""

    def __init__(self, path: str, title: str, notes: str) -> None:
        self.recorder = Recorder(path, title=title, notes=notes)
        self.writer = LinkRecorder(self.recorder)
        self.path = path
        self.started = time.monotonic()
        self._reported = 0.0

    def follow(self, key: str, endpoint: str, state: LinkStatus = "connecting") -> None:
        self.writer.follow(key, endpoint=endpoint, state=state)

    def record(self, key: str, event: LinkEvent) -> None:
        self.writer.record(key, event)

    def tick(self) -> RecordingStatus | None:
        """Commit when due; a status about once a second (None in between)."""
        self.recorder.maybe_flush()
        now = time.monotonic()
        if now - self._reported < RECORDING_STATUS_EVERY_S:
            return None
        self._reported = now
        return self.status()

    def status(self, active: bool = True, error: str = "") -> RecordingStatus:
        return RecordingStatus(active, self.path, time.monotonic() - self.started, self.recorder.size_bytes(),
                               self.recorder.samples_written, error)

    def close(self) -> str:
        """Close the file; the error message when the last write failed, else ""."""
        try:
            self.recorder.close()  # a failed recorder is closed already; this is then a no-op
        except RecordingError as exc:
            return str(exc)
        return ""


def set_recording_meta(path: str, title: str | None, notes: str | None) -> str:
    """Save the title/notes into a finished recording; the error message, or "" when saved."""
    try:
        with RecordingReader(path) as r:
            r.set_meta(title=title, notes=notes)
    except RecordingError as exc:
        return str(exc)
    return ""
