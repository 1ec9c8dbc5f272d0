"""The one schema-version registry (agentd.store.schema): steps in order, atomic, newer files refused."""

from __future__ import annotations

import sqlite3
import threading

import pytest
import sqlite_utils

from agentd.store.schema import Schema, SchemaTooNew


def _db(path):
    return sqlite_utils.Database(sqlite3.connect(path, check_same_thread=False))


def test_steps_run_once_in_order_and_mark_user_version(tmp_path):
    schema = Schema("test file")
    calls = []

    @schema.step(2)
    def second(db):
        calls.append(2)
        db.table("b").create({"x": int})

    @schema.step(1)
    def first(db):
        calls.append(1)
        db.table("a").create({"x": int})

    db = _db(tmp_path / "f.db")
    try:
        assert schema.upgrade(db, tmp_path / "f.db") == 0
        assert schema.upgrade(db, tmp_path / "f.db") == 2  # nothing runs twice
        assert calls == [1, 2]
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2 == schema.latest
    finally:
        db.close()


def test_a_step_registered_twice_or_below_one_is_refused():
    schema = Schema("test file")
    schema.step(1)(lambda db: None)
    with pytest.raises(ValueError, match="test file schema step 1 registered twice"):
        schema.step(1)(lambda db: None)
    with pytest.raises(ValueError, match="versions start at 1"):
        schema.step(0)(lambda db: None)


def test_a_failed_step_leaves_the_file_at_the_version_before(tmp_path):
    schema = Schema("test file")
    schema.step(1)(lambda db: db.table("a").create({"x": int}))

    @schema.step(2)
    def broken(db):
        db.table("half_done").create({"x": int})
        raise RuntimeError("boom")

    db = _db(tmp_path / "f.db")
    try:
        with pytest.raises(RuntimeError, match="boom"):
            schema.upgrade(db, tmp_path / "f.db")
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        assert "half_done" not in db.table_names() and "a" in db.table_names()
        assert not db.conn.in_transaction
    finally:
        db.close()


def test_a_newer_file_is_named_with_its_version_and_the_remedy(tmp_path):
    path = tmp_path / "new.db"
    db = _db(path)
    db.execute("PRAGMA user_version = 7")
    schema = Schema("widget file", remedy="upgrade Fleetdeck to open it")
    schema.step(1)(lambda db: db.table("a").create({"x": int}))
    try:
        with pytest.raises(SchemaTooNew) as err:
            schema.upgrade(db, path)
        assert str(err.value) == (f"widget file {path} has schema version 7, newer than the 1 this build of "
                                  "Fleetdeck knows; upgrade Fleetdeck to open it")
        assert "a" not in db.table_names()  # nothing was changed
    finally:
        db.close()


def test_legacy_version_is_adopted_and_marked(tmp_path):
    schema = Schema("test file", legacy=lambda db: 1 if "old" in db.table_names() else 0)
    schema.step(1)(lambda db: db.table("old").create({"x": int}))
    schema.step(2)(lambda db: db.table("new").create({"x": int}))
    path = tmp_path / "legacy.db"
    db = _db(path)
    try:
        db.table("old").create({"x": int})  # as the code before user_version left it
        assert schema.version(db) == 1
        assert schema.upgrade(db, path) == 1
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert {"old", "new"} <= set(db.table_names())
    finally:
        db.close()


def test_two_connections_upgrading_at_once_run_each_step_once(tmp_path):
    schema = Schema("test file")
    calls = []
    schema.step(1)(lambda db: (calls.append(1), db.table("a").create({"x": int})))
    path = tmp_path / "race.db"
    dbs = [_db(path), _db(path)]
    errors: list[BaseException] = []

    def run(db):
        try:
            schema.upgrade(db, path)
        except Exception as exc:  # noqa: BLE001 -- any error of either thread fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(db,)) for db in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for db in dbs:
        db.close()
    assert not errors and calls == [1]
