"""Broken recordings for the tests: each maker writes one into ``p`` and returns a regex that
the error message must match."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from agentd.store.schema_recording import SCHEMA_VERSION
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


# ---- hostile files: made by someone who wants the reader to hang, blow up or run SQL --------
# Each maker returns the regex of the one error line; the makers of files that must replay
# (with a warning) are in DAMAGED below.


def _sql(p: Path, *statements: str, params: tuple = ()) -> None:
    conn = sqlite3.connect(p)
    for st in statements:
        conn.execute(st, params if "?" in st else ())
    conn.commit()
    conn.close()


def view_for_table(p: Path) -> str:
    """``events`` replaced by a view that would loop for ever (a recursive CTE)."""
    make_recording(p, seconds=3)
    _sql(p, "DROP TABLE events",
         "CREATE VIEW events AS WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) "
         "SELECT i AS id, 1 AS node_id, 1.0 AS wall_s, 0 AS seq, 'x' AS kind, NULL AS job_id, NULL AS actor, "
         "1 AS ok, 'x' AS message, NULL AS data FROM c")
    return "contains a view.*'events'"


def trigger(p: Path) -> str:
    """A trigger that writes to another table whenever ``meta`` changes (``recording set``)
    or a sample is appended (the recorder). The file is otherwise a good recording."""
    make_recording(p, seconds=3)
    _sql(p, "CREATE TABLE pwned (what TEXT)",
         "CREATE TRIGGER evil AFTER UPDATE ON meta BEGIN INSERT INTO pwned VALUES ('meta'); END",
         "CREATE TRIGGER evil2 AFTER INSERT ON meta BEGIN INSERT INTO pwned VALUES ('meta insert'); END",
         "CREATE TRIGGER evil3 AFTER INSERT ON samples BEGIN INSERT INTO pwned VALUES ('sample'); END")
    return "contains a trigger.*'evil"


def generated_column(p: Path) -> str:
    """``samples.wall_s`` computed by an expression instead of stored."""
    make_recording(p, seconds=3)
    _sql(p, "ALTER TABLE samples RENAME TO s_old",
         "CREATE TABLE samples (node_id INTEGER NOT NULL, n INTEGER NOT NULL, seq INTEGER, w REAL, "
         "wall_s REAL GENERATED ALWAYS AS (w * 1.0) VIRTUAL, mono_s REAL, cpu_busy_s REAL, cpu_total_s REAL, "
         "load_1 REAL, mem_used_bytes INTEGER, gpu_count INTEGER, gpu_mem_used_bytes INTEGER, "
         "gpu_power_mw INTEGER, job_count INTEGER, PRIMARY KEY (node_id, n))")
    return "generated\\) column 'wall_s'"


def fifo(p: Path) -> str:
    """A named pipe: a blocking open() would wait for a writer for ever."""
    os.mkfifo(p)
    return "is a FIFO"


def symlink_to_fifo(p: Path) -> str:
    target = p.with_name(p.name + ".pipe")
    os.mkfifo(target)
    p.symlink_to(target)
    return "is a FIFO \\(named pipe\\) \\(through a symbolic link\\)"


def device(p: Path) -> str:
    """A symlink to /dev/zero: an endless stream of bytes."""
    p.symlink_to("/dev/zero")
    return "is a character device"


def directory(p: Path) -> str:
    p.mkdir()
    return "is a directory"


def absurd_time(p: Path, value: float = 1e300) -> str:
    make_recording(p, seconds=5)
    _sql(p, "UPDATE samples SET wall_s = ? WHERE n = 3", params=(value,))
    return "sample time of .*which is not a time"


def negative_time(p: Path) -> str:
    return absurd_time(p, -5.0)


def infinite_time(p: Path) -> str:
    return absurd_time(p, float("inf"))


def text_time(p: Path) -> str:
    make_recording(p, seconds=5)
    _sql(p, "UPDATE samples SET wall_s = 'soon' WHERE n = 2")
    return "sample time of 'soon'"


def out_of_order(p: Path) -> str:
    """Sample times that jump back and forth: every time window would span the whole node."""
    make_recording(p, seconds=3)
    conn = sqlite3.connect(p)
    node_id, = conn.execute("SELECT id FROM nodes ORDER BY id LIMIT 1").fetchone()
    start, = conn.execute("SELECT min(wall_s) FROM samples").fetchone()
    rows = [(node_id, 1000 + i, start + (0 if i % 2 else 10_000_000) + i * 1e-3, 0.0) for i in range(12_000)]
    conn.executemany("INSERT INTO samples (node_id, n, wall_s, mono_s) VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return "out of time order"


def huge_string(p: Path) -> str:
    """A 100 MB node name (a value larger than the reader's limit)."""
    make_recording(p, seconds=3)
    _sql(p, "UPDATE nodes SET name = printf('%.*c', 100000000, 'x') WHERE id = (SELECT min(id) FROM nodes)")
    return "larger than .* bytes|node name of 100000000 characters"


def many_nodes(p: Path) -> str:
    make_recording(p, seconds=3)
    _sql(p, "INSERT INTO nodes (key, name, endpoint) WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
            "WHERE i < 200000) SELECT 'k' || i, 'n' || i, '' FROM c")
    return "lists 200002 nodes"


def not_sqlite_random(p: Path) -> str:
    p.write_bytes(os.urandom(64 * 1024))
    return "is not a SQLite file"


def _replace_chunk(p: Path, body: bytes, which: str = "n0 = 0") -> None:
    conn = sqlite3.connect(p)
    conn.execute(f"UPDATE chunks SET body = ? WHERE {which}", (body,))
    conn.commit()
    conn.close()


def bomb_chunk(p: Path) -> str:
    """One chunk of each node is a zlib bomb: ~1 MB that inflates to 1 GiB."""
    import zlib

    from agentd.store.recording_codec import CHUNK_MAGIC

    make_recording(p, seconds=150)
    z = zlib.compressobj(9)
    bomb = z.compress(b"\0" * 2**30) + z.flush()
    _replace_chunk(p, CHUNK_MAGIC + bomb)
    return "decompresses to more than"


def forged_counts_chunk(p: Path) -> str:
    """A small chunk whose payload claims 16 M rows of a big shape (would tile gigabytes)."""
    import zlib

    import msgspec

    from agentd.store.recording_codec import CHUNK_MAGIC

    make_recording(p, seconds=150)
    payload = msgspec.msgpack.encode({"rows": 16_000_000, "shape": [1] * 16_000_000,
                                      "groups": [[1, b"", b""]], "raw": {}, "procs": {}})
    _replace_chunk(p, CHUNK_MAGIC + zlib.compress(payload, 9))
    return "length <= 4096"


def truncated_chunk(p: Path) -> str:
    make_recording(p, seconds=150)
    conn = sqlite3.connect(p)
    conn.execute("UPDATE chunks SET body = substr(body, 1, length(body) / 2) WHERE n0 = 0")
    conn.commit()
    conn.close()
    return "truncated"


def wrong_type_chunk(p: Path) -> str:
    """A chunk body that is text, and a chunk whose n1 is a string."""
    make_recording(p, seconds=150)
    _sql(p, "UPDATE chunks SET body = 'hello' WHERE n0 = 0",
         "UPDATE chunks SET n1 = 'many' WHERE n0 = 60 AND node_id = (SELECT min(node_id) FROM chunks)")
    return "not a blob"


#: Files that replay with a warning: damaged chunks are skipped, the rest is shown.
DAMAGED = [bomb_chunk, forged_counts_chunk, truncated_chunk, wrong_type_chunk]
#: Files refused with one line.
HOSTILE = [view_for_table, trigger, generated_column, fifo, symlink_to_fifo, device, directory, absurd_time,
           negative_time, infinite_time, text_time, huge_string, many_nodes, not_sqlite_random, newer]
