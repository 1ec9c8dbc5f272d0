"""The node's state database: one connection for the job store and the job-move journal, old files
upgraded in place, newer or damaged files moved aside with a message that names them."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import msgspec

from agentd.protocol.jobs import JobInfo, JobSpec
from agentd.store.jobstore import DB_NAME, JobStore
from agentd.store.migration_journal import MigrationJournal, MigrationRecord
from agentd.store.schema_state import STATE_SCHEMA

# The schema as agentd wrote it before the schema registry (sqlite-utils' DDL of that code): the
# job tables versioned in ``_migrations``, the journal's tables created "if not exists" on open.
OLD_JOBSTORE_SQL = """
CREATE TABLE "_migrations" ("name" TEXT, "version" INTEGER, "applied_s" REAL, PRIMARY KEY ("name", "version"));
CREATE TABLE "meta" ("key" TEXT PRIMARY KEY, "value" TEXT);
CREATE TABLE "jobs" ("id" TEXT PRIMARY KEY, "n" INTEGER, "state" TEXT, "info" TEXT, "runtime" TEXT,
                     "updated_s" REAL);
CREATE INDEX "idx_jobs_state" ON "jobs" ("state");
CREATE TABLE "transitions" ("id" INTEGER PRIMARY KEY, "job_id" TEXT, "wall_s" REAL, "from_state" TEXT,
                            "to_state" TEXT, "actor" TEXT, "reason" TEXT);
CREATE INDEX "idx_transitions_job_id" ON "transitions" ("job_id");
INSERT INTO _migrations VALUES ('jobstore', 1, 1700000000.0);
"""
OLD_JOURNAL_SQL = """
CREATE TABLE "job_migrations" ("id" TEXT, "side" TEXT, "job_id" TEXT, "phase" TEXT, "mode" TEXT,
  "spec_json" TEXT, "source_node" TEXT, "target" TEXT, "target_key" TEXT, "was_paused" INTEGER, "resume" INTEGER,
  "size_bytes" INTEGER, "sha256" TEXT, "bytes_done" INTEGER, "checkpoint_dir" TEXT, "new_job_id" TEXT,
  "reason" TEXT, "started_wall_s" REAL, "updated_wall_s" REAL, "extra_json" TEXT, PRIMARY KEY ("id", "side"));
CREATE TABLE "job_migration_steps" ("migration_id" TEXT, "side" TEXT, "wall_s" REAL, "phase" TEXT, "message" TEXT);
CREATE INDEX "idx_job_migration_steps_migration_id" ON "job_migration_steps" ("migration_id");
"""


def _job(job_id: str = "n1.1", state: str = "running") -> JobInfo:
    return JobInfo(id=job_id, node="n1", name="train", state=state, spec=JobSpec(argv=["sleep", "60"]))


def _write_old_file(path: Path, journal: bool = True) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(OLD_JOBSTORE_SQL + (OLD_JOURNAL_SQL if journal else ""))
    with conn:
        conn.execute("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?)",
                     ("n1.1", 1, "running", msgspec.json.encode(_job()).decode(), json.dumps({"pid": 4242}), 1.0))
        conn.execute("INSERT INTO meta VALUES ('next_job', '8')")
        if journal:
            conn.execute("INSERT INTO job_migrations (id, side, job_id, phase, started_wall_s) "
                         "VALUES ('m1', 'source', 'n1.1', 'transferring', 1.0)")
    conn.close()


def _fds_open_on(path: Path) -> int:
    target = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                count += 1
        except OSError:
            pass
    return count


def test_job_store_and_journal_share_one_connection(tmp_path):
    path = tmp_path / DB_NAME
    store = JobStore(path)
    journal = MigrationJournal(path)
    try:
        assert _fds_open_on(path) == 1, "the job store and the journal opened the file twice"
        assert journal._state is store._state and journal._lock is store._lock
        store.save(_job(), 1, {})
        journal.create(MigrationRecord(id="m1", side="source", job_id="n1.1", phase="requested"))
        store.close()  # the journal still uses the file
        journal.update(journal.get("m1", "source"), phase="checkpointing")
        assert journal.get("m1", "source").phase == "checkpointing"
    finally:
        journal.close()
    assert _fds_open_on(path) == 0, "closing both users did not close the file"
    again = JobStore(path)  # a fresh handle after the last close
    try:
        assert [info.id for info, *_ in again.load()] == ["n1.1"]
    finally:
        again.close()


def test_jobs_db_written_by_the_old_code_opens_and_upgrades(tmp_path):
    path = tmp_path / DB_NAME
    _write_old_file(path)
    store = JobStore(path)
    journal = MigrationJournal(path)
    try:
        assert not store.problems, store.problems
        assert store.schema_version == STATE_SCHEMA.latest == 2
        loaded = store.load()
        assert [(info.id, n, runtime) for info, n, runtime, _ in loaded] == [("n1.1", 1, {"pid": 4242})]
        assert store.high_water() == 7
        assert [r.id for r in journal.unfinished("source")] == ["m1"]
    finally:
        journal.close()
        store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        # an older agentd still finds its version marker and uses the file as before
        assert conn.execute("SELECT name, version FROM _migrations").fetchall() == [("jobstore", 1)]
    finally:
        conn.close()


def test_journal_only_file_of_the_old_code_opens(tmp_path):
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_JOURNAL_SQL + "INSERT INTO job_migrations (id, side, job_id, phase, started_wall_s) "
                       "VALUES ('m2', 'target', 'n2.5', 'received', 1.0);")
    conn.close()
    journal = MigrationJournal(path)
    try:
        assert [r.id for r in journal.unfinished("target")] == ["m2"]
    finally:
        journal.close()


def test_newer_state_file_is_moved_aside_and_named(tmp_path):
    path = tmp_path / DB_NAME
    _write_old_file(path, journal=False)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    store = JobStore(path)
    try:
        assert len(store.problems) == 1
        text = store.problems[0]
        assert str(path) in text and "schema version 99" in text and "newer than the 2" in text
        aside = list(tmp_path.glob(f"{DB_NAME}.schema-99-*"))
        assert len(aside) == 1 and store.load() == []
    finally:
        store.close()
    conn = sqlite3.connect(aside[0])
    try:  # kept unchanged for the newer agentd
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
        assert conn.execute("SELECT id FROM jobs").fetchall() == [("n1.1",)]
    finally:
        conn.close()
