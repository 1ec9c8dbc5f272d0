"""Schema version and steps: registered once, applied in order, atomically."""

from __future__ import annotations

import sqlite3

import pytest
import sqlite_utils

from agentd.store.recording import Recorder
from agentd.store.schema_recording import RECORDING_SCHEMA, SCHEMA_VERSION, upgrade


def test_versions_are_contiguous_from_one():
    assert sorted(RECORDING_SCHEMA.steps) == list(range(1, SCHEMA_VERSION + 1))


def test_registering_a_version_twice_fails():
    with pytest.raises(ValueError, match="registered twice"):
        RECORDING_SCHEMA.step(1)(lambda db: None)


def test_new_file_gets_current_version_and_wal(tmp_path):
    p = tmp_path / "v.db"
    Recorder(p).close()
    conn = sqlite3.connect(p)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_failed_step_leaves_file_at_previous_version(tmp_path, monkeypatch):
    p = tmp_path / "m.db"
    conn = sqlite3.connect(p, isolation_level=None)
    db = sqlite_utils.Database(conn)

    def broken(db: sqlite_utils.Database) -> None:
        db["half_done"].create({"x": int})
        raise RuntimeError("boom")

    monkeypatch.setitem(RECORDING_SCHEMA.steps, SCHEMA_VERSION + 1, broken)
    with pytest.raises(RuntimeError):
        upgrade(db, p)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert "half_done" not in db.table_names() and "samples" in db.table_names()
    conn.close()
