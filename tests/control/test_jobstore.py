"""The daemon's job store: WAL, schema steps applied once, one row per transition."""

from __future__ import annotations

import sqlite3

from agentd.store.jobstore import DB_NAME, SCHEMA, JobStore
from tests.control.control_helpers import PY, spec, wait_for


def test_every_transition_is_a_row(manager):
    m, _ = manager
    job = m.submit(spec([PY, "-c", "import time\ntime.sleep(0.3)"]), actor="gina")
    m.pause(job.id, actor="gina")
    m.set_priority(job.id, 2, actor="gina")
    m.resume(job.id, actor="gina")
    wait_for(lambda: (m.tick(), m.get(job.id).state == "succeeded")[1], 10, "the job to finish")
    db = sqlite3.connect(m.state_dir / DB_NAME)
    try:
        rows = db.execute("SELECT from_state, to_state, actor FROM transitions WHERE job_id = ? ORDER BY id",
                          [job.id]).fetchall()
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
    assert [(a, b) for a, b, _ in rows] == [("", "queued"), ("queued", "running"), ("running", "paused"),
                                             ("paused", "paused"), ("paused", "running"), ("running", "succeeded")]
    assert rows[2][2] == "gina"


def test_schema_steps_apply_once(tmp_path):
    path = tmp_path / DB_NAME
    store = JobStore(path)
    assert store.schema_version == SCHEMA.latest == 2
    store.close()
    store = JobStore(path)  # reopening applies nothing twice
    assert store.schema_version == 2 and not store.problems
    store.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    finally:
        db.close()
