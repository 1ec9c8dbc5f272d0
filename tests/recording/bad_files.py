"""Broken recordings for the tests: each maker writes one into ``p`` and returns a regex that
the error message must match."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agentd.store.recording_schema import SCHEMA_VERSION
from tests.recording.conftest import make_recording


def not_sqlite(p: Path) -> str:
    p.write_bytes(b"this is a CSV file, really\n1,2,3\n" * 50)
    return "is not a SQLite file"


def empty_file(p: Path) -> str:
    p.write_bytes(b"")
    return "is empty"


def truncated(p: Path) -> str:
    make_recording(p, seconds=30)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    return "is truncated"


def newer(p: Path) -> str:
    make_recording(p, seconds=2)
    conn = sqlite3.connect(p)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    return f"schema version {SCHEMA_VERSION + 1}.*upgrade Fleetdeck"


def other_sqlite(p: Path) -> str:
    conn = sqlite3.connect(p)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    return "not a Fleetdeck recording"


def missing(p: Path) -> str:
    return "does not exist"


def no_samples(p: Path) -> str:
    from agentd.store.recording import Recorder

    Recorder(p).close()
    return "holds no samples"
