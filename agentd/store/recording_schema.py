"""The schema of a recording file and its migrations.

A recording is one SQLite file in WAL mode. ``PRAGMA user_version`` holds the schema version;
each migration registers itself once with :func:`migration` and runs in order inside one
transaction, so a file is always at a whole version. docs/recording.md documents the tables.
"""

from __future__ import annotations

import sqlite3
from typing import Callable

import sqlite_utils

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migration", "migrate", "schema_version"]

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: dict[int, Migration] = {}


def migration(version: int) -> Callable[[Migration], Migration]:
    """Register the migration that brings a file from ``version - 1`` to ``version``."""

    def register(fn: Migration) -> Migration:
        if version in MIGRATIONS:
            raise ValueError(f"recording migration {version} registered twice ({fn.__name__})")
        MIGRATIONS[version] = fn
        return fn

    return register


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


@migration(1)
def _v1_initial(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["nodes"].create({"id": int, "key": str, "name": str, "endpoint": str}, pk="id")
    db["nodes"].create_index(["key"], unique=True)
    # One row per node-sample. ``body`` is zlib(msgpack(NodeSample)) for a keyframe
    # (n == key_n), else a delta against the previous row of the same node (see
    # recording_codec.py). The scalar columns are raw values for quick SQL.
    db["samples"].create(
        {
            "id": int, "node_id": int, "n": int, "key_n": int, "seq": int,
            "wall_s": float, "mono_s": float,
            "cpu_busy_s": float, "cpu_total_s": float, "load_1": float, "mem_used_bytes": int,
            "gpu_count": int, "gpu_mem_used_bytes": int, "gpu_power_mw": int, "job_count": int,
            "body": bytes,
        },
        pk="id",
        not_null={"node_id", "n", "key_n", "wall_s", "mono_s", "body"},
    )
    db["samples"].create_index(["node_id", "n"], unique=True)
    db["samples"].create_index(["node_id", "wall_s"])
    db["inventory"].create({"id": int, "node_id": int, "wall_s": float, "body": bytes}, pk="id")
    db["inventory"].create_index(["node_id", "wall_s"])
    # A snapshot replaces everything known about a node (the Clone pattern); its job rows carry
    # the snapshot's wall_s, so "jobs at T" = latest row per job since the last snapshot <= T.
    db["snapshots"].create({"id": int, "node_id": int, "wall_s": float, "seq": int}, pk="id")
    db["snapshots"].create_index(["node_id", "wall_s"])
    db["jobs"].create(
        {"id": int, "node_id": int, "wall_s": float, "seq": int, "job_id": str, "state": str, "body": bytes}, pk="id"
    )
    db["jobs"].create_index(["node_id", "wall_s"])
    db["events"].create(
        {
            "id": int, "node_id": int, "wall_s": float, "seq": int, "kind": str, "job_id": str,
            "actor": str, "ok": int, "message": str, "data": str,
        },
        pk="id",
    )
    db["events"].create_index(["wall_s"])
    db["links"].create({"id": int, "node_id": int, "wall_s": float, "state": str, "detail": str}, pk="id")
    db["links"].create_index(["node_id", "wall_s"])


SCHEMA_VERSION = max(MIGRATIONS)


def migrate(db: sqlite_utils.Database) -> int:
    """Bring ``db`` to :data:`SCHEMA_VERSION`; return the version it had before."""
    before = schema_version(db.conn)
    for version in range(before + 1, SCHEMA_VERSION + 1):
        with db.atomic():  # a file is always at a whole version, even if we are killed here
            MIGRATIONS[version](db)
            db.conn.execute(f"PRAGMA user_version = {version}")
    return before
