"""Record the streams of one or more daemons to a SQLite file, and read it back by time.

The package, by concern:
- :mod:`.files`: checks before a file is opened, hardened connections, :class:`RecordingError`;
- :mod:`.writer`: :class:`Recorder`, batched transactions (the hot path, raw SQL: see there);
- :mod:`.checked` and :mod:`.reader`: :class:`RecordingReader`, opened read-only and checked,
  answering "state at T" and "metric M between T1 and T2";
- :mod:`.views`: the records a reader returns.
The schema and its versioned steps are agentd.store.schema_recording; the sample codec is
agentd.store.recording_codec. Every failure a user can cause (a path that cannot be written, a
full disk, a file that is not a recording, a recording from a newer version) raises
:class:`RecordingError` with a message that names the file and the remedy.
"""

from agentd.store.recording.checked import CheckedRecording
from agentd.store.recording.files import (
    RecordingError,
    check_recording_file,
    check_schema,
)
from agentd.store.recording.reader import RecordingReader
from agentd.store.recording.views import (
    Damage,
    Gap,
    LinkChange,
    RecordedNode,
    RecordedNodeState,
    RecordingInfo,
    SnapshotMark,
)
from agentd.store.recording.writer import COMMIT_INTERVAL_S, Recorder
from agentd.store.schema_recording import SCHEMA_VERSION

__all__ = [
    "COMMIT_INTERVAL_S", "SCHEMA_VERSION", "CheckedRecording", "Damage", "Gap", "LinkChange", "RecordedNode",
    "RecordedNodeState", "Recorder", "RecordingError", "RecordingInfo", "RecordingReader", "SnapshotMark",
    "check_recording_file", "check_schema",
]
