"""Replay mode: check a recording, then open a window on a ReplaySource with a timeline.

Used by ``fleetdeck --replay FILE`` and File ▸ Open recording…. A file that cannot be replayed
(not SQLite, truncated, from a newer Fleetdeck, without samples) is refused here with
RecordingError's message, before any window opens.
"""

from __future__ import annotations

from pathlib import Path

from agentd.store.recording import RecordingError, RecordingReader

__all__ = ["RecordingError", "check_replayable", "open_replay_window", "replay_title"]


def check_replayable(path: str | Path) -> None:
    """Raise RecordingError (a message naming the file and the remedy) unless ``path`` is a
    recording with samples this Fleetdeck can read. Reads the header and one index query."""
    path = Path(path)
    with RecordingReader(path) as r:
        if r.time_range() is None:
            raise RecordingError(f"recording {path} holds no samples; there is nothing to replay")


def replay_title(path: str | Path) -> str:
    return f"replay — {Path(path).name}"


def open_replay_window(path: str | Path, settings, confirm=None):
    """A started, shown MainWindow replaying ``path`` (raises RecordingError for a bad file)."""
    from gui.main_window import MainWindow
    from gui.sources.replay import ReplaySource
    from gui.views.timeline import Timeline

    check_replayable(path)
    source = ReplaySource(path)
    window = MainWindow(source, settings, title_label=replay_title(path), confirm=confirm)
    window.set_timeline(Timeline(source))
    window.start()
    window.show()
    return window
