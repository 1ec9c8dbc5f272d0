"""Replay mode: whether a recording can be replayed, and the title of its window.

Used by ``fleetdeck --replay FILE`` and File ▸ Open recording… (the window itself is assembled
by :func:`gui.app.open_replay_window`). A file that cannot be replayed (not SQLite, truncated,
from a newer Fleetdeck, without samples) is refused here with RecordingError's message, before
any window opens.
"""

from __future__ import annotations

from pathlib import Path

from agentd.store.recording import RecordingError, RecordingReader

__all__ = ["RecordingError", "check_replayable", "replay_title"]


def check_replayable(path: str | Path) -> None:
    """Raise RecordingError (a message naming the file and the remedy) unless ``path`` is a
    recording with samples this Fleetdeck can read. Reads the header and one index query."""
    path = Path(path)
    with RecordingReader(path) as r:
        if r.time_range() is None:
            raise RecordingError(f"recording {path} holds no samples; there is nothing to replay")


def replay_title(path: str | Path) -> str:
    return f"replay — {Path(path).name}"
