"""The schema of a recording file: its versioned steps on the shared registry (agentd.store.schema).

A recording is one SQLite file in WAL mode. ``PRAGMA user_version`` holds the schema version;
each step registers itself once with ``@RECORDING_SCHEMA.step(N)`` and runs in order inside one
transaction, so a file is always at a whole version. docs/recording.md documents the tables.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from agentd.store.recording_codec import (
    CHUNK_ROWS,
    ShapeBook,
    SplitSample,
    decode_sample,
    decode_v1_row,
    encode_chunk,
    split_sample,
)
from agentd.store.schema import Schema, user_version

__all__ = ["RECORDING_SCHEMA", "SAMPLE_COLUMNS", "SCHEMA_VERSION", "schema_version", "upgrade"]

RECORDING_SCHEMA = Schema("recording", remedy="upgrade Fleetdeck to open it")
schema_version = user_version


@RECORDING_SCHEMA.step(1)
def _v1_initial(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("nodes").create({"id": int, "key": str, "name": str, "endpoint": str}, pk="id")
    db.table("nodes").create_index(["key"], unique=True)
    # One row per node-sample. ``body`` is zlib(msgpack(NodeSample)) for a keyframe
    # (n == key_n), else a delta against the previous row of the same node (see
    # recording_codec.py). The scalar columns are raw values for quick SQL.
    db.table("samples").create(
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
    db.table("samples").create_index(["node_id", "n"], unique=True)
    db.table("samples").create_index(["node_id", "wall_s"])
    db.table("inventory").create({"id": int, "node_id": int, "wall_s": float, "body": bytes}, pk="id")
    db.table("inventory").create_index(["node_id", "wall_s"])
    # A snapshot replaces everything known about a node (the Clone pattern); its job rows carry
    # the snapshot's wall_s, so "jobs at T" = latest row per job since the last snapshot <= T.
    db.table("snapshots").create({"id": int, "node_id": int, "wall_s": float, "seq": int}, pk="id")
    db.table("snapshots").create_index(["node_id", "wall_s"])
    db.table("jobs").create(
        {"id": int, "node_id": int, "wall_s": float, "seq": int, "job_id": str, "state": str, "body": bytes}, pk="id"
    )
    db.table("jobs").create_index(["node_id", "wall_s"])
    db.table("events").create(
        {
            "id": int, "node_id": int, "wall_s": float, "seq": int, "kind": str, "job_id": str,
            "actor": str, "ok": int, "message": str, "data": str,
        },
        pk="id",
    )
    db.table("events").create_index(["wall_s"])
    db.table("links").create({"id": int, "node_id": int, "wall_s": float, "state": str, "detail": str}, pk="id")
    db.table("links").create_index(["node_id", "wall_s"])


#: Per-sample SQL columns of the v2 ``samples`` table besides node_id, n, seq (raw values).
SAMPLE_COLUMNS = ("wall_s", "mono_s", "cpu_busy_s", "cpu_total_s", "load_1", "mem_used_bytes", "gpu_count",
                  "gpu_mem_used_bytes", "gpu_power_mw", "job_count")


def create_v2_sample_tables(conn: sqlite3.Connection) -> None:
    """The v2 sample tables (see docs/recording.md, "The file")."""
    # One small row per node-sample, for SQL and for finding samples by time; no body. WITHOUT
    # ROWID: the primary key is the table, so (node_id, n) costs no second index.
    conn.execute(
        "CREATE TABLE samples (node_id INTEGER NOT NULL, n INTEGER NOT NULL, seq INTEGER, wall_s REAL NOT NULL, "
        "mono_s REAL NOT NULL, cpu_busy_s REAL, cpu_total_s REAL, load_1 REAL, mem_used_bytes INTEGER, "
        "gpu_count INTEGER, gpu_mem_used_bytes INTEGER, gpu_power_mw INTEGER, job_count INTEGER, "
        "PRIMARY KEY (node_id, n)) WITHOUT ROWID"
    )
    conn.execute("CREATE INDEX idx_samples_node_id_wall_s ON samples (node_id, wall_s)")
    # The full samples: CHUNK_ROWS consecutive samples of one node per row (recording_codec.py).
    conn.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, node_id INTEGER NOT NULL, n0 INTEGER NOT NULL, "
                 "n1 INTEGER NOT NULL, body BLOB NOT NULL)")
    conn.execute("CREATE UNIQUE INDEX idx_chunks_node_id_n0 ON chunks (node_id, n0)")
    # Samples of the open chunk, committed every second; moved into a chunk when it is full.
    conn.execute("CREATE TABLE tail (node_id INTEGER NOT NULL, n INTEGER NOT NULL, body BLOB NOT NULL, "
                 "PRIMARY KEY (node_id, n))")
    conn.execute("CREATE TABLE shapes (id INTEGER PRIMARY KEY, template BLOB NOT NULL, slots BLOB NOT NULL)")


@RECORDING_SCHEMA.step(2)
def _v2_chunks(db: sqlite_utils.Database) -> None:
    """Samples move from one delta-coded row each into chunks of CHUNK_ROWS (about a third of
    the size); the per-sample SQL columns stay, in a slimmer table."""
    conn = db.conn
    conn.execute("ALTER TABLE samples RENAME TO samples_v1")
    conn.execute("DROP INDEX IF EXISTS idx_samples_node_id_n")
    conn.execute("DROP INDEX IF EXISTS idx_samples_node_id_wall_s")
    create_v2_sample_tables(conn)
    book = ShapeBook()
    cols = ", ".join(SAMPLE_COLUMNS)
    for (node_id,) in conn.execute("SELECT DISTINCT node_id FROM samples_v1").fetchall():
        conn.execute(f"INSERT INTO samples (node_id, n, seq, {cols}) SELECT node_id, n, seq, {cols} "
                     "FROM samples_v1 WHERE node_id = ?", (node_id,))
        prev: bytes | None = None
        rows: list[tuple[int, int, SplitSample]] = []
        cur = conn.execute("SELECT n, n = key_n, body FROM samples_v1 WHERE node_id = ? ORDER BY n", (node_id,))
        for n, is_key, body in cur:
            raw = prev = decode_v1_row(prev, bool(is_key), body)
            split = split_sample(decode_sample(raw))
            rows.append((n, book.id_for(split), split))
            if len(rows) == CHUNK_ROWS:
                _insert_chunk(conn, node_id, rows)
                rows = []
        if rows:
            _insert_chunk(conn, node_id, rows)
    conn.executemany("INSERT INTO shapes (id, template, slots) VALUES (?, ?, ?)", book.take_pending())
    conn.execute("DROP TABLE samples_v1")


def _insert_chunk(conn: sqlite3.Connection, node_id: int, rows: list[tuple[int, int, SplitSample]]) -> None:
    body = encode_chunk([(sid, split) for _, sid, split in rows])
    conn.execute("INSERT INTO chunks (node_id, n0, n1, body) VALUES (?, ?, ?, ?)", (node_id, rows[0][0], rows[-1][0], body))


#: The version this build writes (the latest step).
SCHEMA_VERSION = RECORDING_SCHEMA.latest


def upgrade(db: sqlite_utils.Database, path: Path) -> int:
    """Bring the recording ``db`` (the file ``path``) to :data:`SCHEMA_VERSION`; return the
    version it had before. Raises :class:`agentd.store.schema.SchemaTooNew`."""
    return RECORDING_SCHEMA.upgrade(db, path)
