"""The daemon's job state in SQLite: one row per job (latest), one row per state transition.

A restarted agentd reads it back to re-adopt jobs that kept running while it was down.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import sqlite_utils

from agentd.protocol.jobs import JobInfo
from agentd.store.migrations import Migrations

DB_NAME = "jobs.db"
SCHEMA = Migrations("jobstore")


@SCHEMA(1)
def _create(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["jobs"].create({"id": str, "n": int, "state": str, "info": str, "runtime": str, "updated_s": float}, pk="id")
    db["jobs"].create_index(["state"])
    db["transitions"].create({"id": int, "job_id": str, "wall_s": float, "from_state": str, "to_state": str,
                              "actor": str, "reason": str}, pk="id")
    db["transitions"].create_index(["job_id"])


class JobStore:
    """Thread-safe (one lock) access to ``<state_dir>/jobs.db`` in WAL mode."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        conn = sqlite3.connect(str(path), check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            SCHEMA.apply(self.db)

    @property
    def schema_version(self) -> int:
        return SCHEMA.version(self.db)

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    def next_job_number(self) -> int:
        """The next job number, persisted before it is handed out, so numbers are never reused."""
        with self._lock, self.db.conn:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'next_job'").fetchone()
            n = int(row[0]) if row else 1
            self.db["meta"].upsert({"key": "next_job", "value": str(n + 1)}, pk="key")
            return n

    def save(self, info: JobInfo, n: int, runtime: dict[str, Any]) -> None:
        """Write the job's latest state (and its private runtime data: pids, cgroups, dirs)."""
        row = {"id": info.id, "n": n, "state": info.state, "info": msgspec.json.encode(info).decode(),
               "runtime": json.dumps(runtime), "updated_s": time.time()}
        with self._lock, self.db.conn:
            self.db["jobs"].upsert(row, pk="id")

    def transition(self, job_id: str, from_state: str, to_state: str, actor: str = "", reason: str = "",
                   wall_s: float | None = None) -> None:
        """Record one state change."""
        row = {"job_id": job_id, "wall_s": time.time() if wall_s is None else wall_s, "from_state": from_state,
               "to_state": to_state, "actor": actor, "reason": reason}
        with self._lock, self.db.conn:
            self.db["transitions"].insert(row)

    def load(self) -> list[tuple[JobInfo, int, dict[str, Any]]]:
        """Every job, oldest first, with its number and runtime data."""
        with self._lock:
            rows = list(self.db.execute("SELECT info, n, runtime FROM jobs ORDER BY n"))
        return [(msgspec.json.decode(r[0], type=JobInfo), r[1], json.loads(r[2])) for r in rows]

    def forget(self, job_ids: list[str]) -> None:
        """Delete ended jobs and their transitions (retention)."""
        if not job_ids:
            return
        with self._lock, self.db.conn:
            for i in range(0, len(job_ids), 500):  # SQLite's bound-parameter limit
                chunk = job_ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                self.db.execute(f"DELETE FROM jobs WHERE id IN ({marks})", chunk)
                self.db.execute(f"DELETE FROM transitions WHERE job_id IN ({marks})", chunk)

    def transitions(self, job_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db["transitions"].rows_where("job_id = ?", [job_id], order_by="id"))
