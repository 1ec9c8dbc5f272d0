"""The daemon's job state in SQLite: one row per job (latest), one row per state transition.

A restarted agentd reads it back to re-adopt jobs that kept running while it was down. The tables
live in the node's state database (agentd.store.statedb: one connection and one lock, shared with
the job-move journal; schema in agentd.store.schema_state).

Faults it survives (each reported in :attr:`JobStore.problems`, naming the file and the row):
- a damaged file or one with a newer schema: moved aside by :class:`StateDB` (see there);
- a row whose JSON cannot be decoded: skipped (the manager recovers the job from its job dir);
- a full disk: writes raise :class:`StoreError` with ``disk_full`` set instead of crashing the caller.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec

from agentd.protocol.jobs import JobInfo
from agentd.store.schema_state import STATE_SCHEMA
from agentd.store.statedb import (
    StateDB,
    StoreError,
    is_disk_full,
    move_aside,
    store_error,
)

__all__ = ["DB_NAME", "SCHEMA", "JobStore", "StoreError", "is_disk_full", "move_aside", "store_error"]

log = logging.getLogger(__name__)

DB_NAME = "jobs.db"
#: The schema of the file the job store lives in (shared with the job-move journal).
SCHEMA = STATE_SCHEMA


class JobStore:
    """Thread-safe access to the job tables of ``<state_dir>/jobs.db`` (the state database's lock).

    Raises :class:`StoreError` when the file cannot be opened at all (a full disk, an unreadable
    directory); a damaged or newer file is moved aside instead (see agentd.store.statedb).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._state = StateDB.open(path)
        self._lock = self._state.lock
        self.db = self._state.db
        self.problems: list[str] = list(self._state.problems)

    def _problem(self, message: str) -> None:
        log.error("%s", message)
        self.problems.append(message)

    @property
    def schema_version(self) -> int:
        return self._state.schema_version

    def close(self) -> None:
        self._state.close()

    def _write(self, what: str, fn: Any) -> Any:
        return self._state.write(what, fn)

    def high_water(self) -> int:
        """The highest job number this store has handed out (0: none)."""
        with self._lock:
            try:
                row = self.db.execute("SELECT value FROM meta WHERE key = 'next_job'").fetchone()
                top = self.db.execute("SELECT MAX(n) FROM jobs").fetchone()
            except sqlite3.Error as exc:
                log.warning("cannot read the job number high-water mark from %s: %s", self.path, exc)
                return 0
        try:
            from_meta = int(row[0]) - 1 if row else 0
        except (TypeError, ValueError):
            from_meta = 0
        return max(from_meta, int(top[0] or 0) if top else 0)

    def set_high_water(self, n: int) -> None:
        """Record that job numbers up to ``n`` are used. Raises StoreError."""
        self._write("record a job number",
                    lambda: self.db.table("meta").upsert({"key": "next_job", "value": str(n + 1)}, pk="key"))

    def next_job_number(self, floor: int = 0) -> int:
        """The next job number above both this store's mark and ``floor``, persisted before it is
        handed out, so numbers are never reused. Raises StoreError."""
        n = max(self.high_water(), floor) + 1
        self.set_high_water(n)
        return n

    def save(self, info: JobInfo, n: int, runtime: dict[str, Any]) -> None:
        """Write the job's latest state (and its private runtime data: pids, cgroups, dirs).
        Raises StoreError."""
        row = {"id": info.id, "n": n, "state": info.state, "info": msgspec.json.encode(info).decode(),
               "runtime": json.dumps(runtime), "updated_s": time.time()}
        self._write(f"save job {info.id}", lambda: self.db.table("jobs").upsert(row, pk="id"))

    def transition(self, job_id: str, from_state: str, to_state: str, actor: str = "", reason: str = "",
                   wall_s: float | None = None) -> None:
        """Record one state change. Raises StoreError."""
        row = {"job_id": job_id, "wall_s": time.time() if wall_s is None else wall_s, "from_state": from_state,
               "to_state": to_state, "actor": actor, "reason": reason}
        self._write(f"record a transition of job {job_id}", lambda: self.db.table("transitions").insert(row))

    def load(self) -> list[tuple[JobInfo, int, dict[str, Any], float]]:
        """Every readable job, oldest first: (info, number, runtime data, updated_s). A row that
        cannot be decoded is skipped and named in :attr:`problems`."""
        with self._lock:
            try:
                rows = list(self.db.execute("SELECT id, info, n, runtime, updated_s FROM jobs ORDER BY n"))
            except sqlite3.Error as exc:
                self._problem(f"job store {self.path}: cannot read the jobs table ({exc}); "
                              "jobs are recovered from their job dirs")
                return []
        out = []
        for job_id, info, n, runtime, updated in rows:
            try:
                decoded = msgspec.json.decode(info, type=JobInfo)
                extra = json.loads(runtime)
                if not isinstance(extra, dict):
                    raise TypeError(f"runtime is {type(extra).__name__}, not an object")
                out.append((decoded, int(n), extra, float(updated or 0.0)))
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError) as exc:
                self._problem(f"job store {self.path}: row id={job_id!r} (job number {n}) cannot be read ({exc}); "
                              "the row is kept; the job is recovered from its job dir if it has one")
        return out

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
            return list(self.db.table("transitions").rows_where("job_id = ?", [job_id], order_by="id"))
