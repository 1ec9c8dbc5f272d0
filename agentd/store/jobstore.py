"""The daemon's job state in SQLite: one row per job (latest), one row per state transition.

A restarted agentd reads it back to re-adopt jobs that kept running while it was down.

Faults it survives (each reported in :attr:`JobStore.problems`, naming the file and the row):
- a file that is not SQLite, truncated or otherwise damaged: moved aside to
  ``jobs.db.corrupt-<time>`` (never deleted) and a fresh store is started;
- a schema newer than this agentd knows: moved aside to ``jobs.db.schema-<N>-<time>`` unchanged, so
  the newer agentd can still use it;
- a row whose JSON cannot be decoded: skipped (the manager recovers the job from its job dir);
- a full disk: writes raise :class:`StoreError` with ``disk_full`` set instead of crashing the caller.
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import sqlite_utils

from agentd.protocol.jobs import JobInfo
from agentd.store.migrations import Migrations

log = logging.getLogger(__name__)

DB_NAME = "jobs.db"
SCHEMA = Migrations("jobstore")
_SIDE_FILES = ("-wal", "-shm")


@SCHEMA(1)
def _create(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["jobs"].create({"id": str, "n": int, "state": str, "info": str, "runtime": str, "updated_s": float}, pk="id")
    db["jobs"].create_index(["state"])
    db["transitions"].create({"id": int, "job_id": str, "wall_s": float, "from_state": str, "to_state": str,
                              "actor": str, "reason": str}, pk="id")
    db["transitions"].create_index(["job_id"])


class StoreError(Exception):
    """The job store could not be opened or written. ``str()`` names the file, the cause and the
    remedy; ``disk_full`` is set when the cause is a full (or over-quota) disk."""

    def __init__(self, message: str, disk_full: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.disk_full = disk_full


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC/EDQUOT and SQLite's SQLITE_FULL ("database or disk is full")."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.Error) and "full" in str(exc).lower()


def store_error(path: Path, what: str, exc: BaseException) -> StoreError:
    """A StoreError for ``exc`` raised while doing ``what`` to ``path``."""
    if is_disk_full(exc):
        return StoreError(f"state disk full: cannot {what} in {path} ({exc}); free space on that file "
                          "system (agentd retries by itself)", disk_full=True)
    return StoreError(f"cannot {what} in {path}: {exc}; see the agentd log")


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S")


def move_aside(path: Path, tag: str) -> Path:
    """Rename ``path`` (and its WAL side files) to ``path.<tag>-<time>``; never deletes."""
    target = path.with_name(f"{path.name}.{tag}-{_stamp()}")
    i = 1
    while target.exists():
        target = path.with_name(f"{path.name}.{tag}-{_stamp()}.{i}")
        i += 1
    path.replace(target)
    for side in _SIDE_FILES:
        src = path.with_name(path.name + side)
        if src.exists():
            src.replace(target.with_name(target.name + side))
    return target


class JobStore:
    """Thread-safe (one lock) access to ``<state_dir>/jobs.db`` in WAL mode.

    Raises :class:`StoreError` when the file cannot be opened at all (a full disk, an unreadable
    directory); a damaged or newer file is moved aside instead (see the module docstring).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.problems: list[str] = []
        try:
            self.db = self._open_checked()
        except (sqlite3.Error, OSError) as exc:  # OSError: moving a damaged file aside failed
            raise store_error(path, "open the job store", exc) from None

    def _connect(self) -> sqlite_utils.Database:
        conn = sqlite3.connect(str(self.path), check_same_thread=False)
        return sqlite_utils.Database(conn)

    def _open_checked(self) -> sqlite_utils.Database:
        db = self._connect()
        try:
            check = db.execute("PRAGMA quick_check(1)").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {check[0] if check else 'no answer'}")
            version = SCHEMA.version(db)
        except sqlite3.DatabaseError as exc:
            if is_disk_full(exc) or isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                db.conn.close()
                raise
            db.conn.close()
            moved = move_aside(self.path, "corrupt")
            self._problem(f"job store {self.path} is damaged ({exc}); moved aside to {moved.name} and started a "
                          "fresh one; jobs are recovered from their job dirs")
            db = self._connect()
            version = 0
        if version > SCHEMA.latest:
            db.conn.close()
            moved = move_aside(self.path, f"schema-{version}")
            self._problem(f"job store {self.path} has schema version {version}, newer than the {SCHEMA.latest} this "
                          f"agentd knows; kept unchanged as {moved.name} (a newer agentd can use it) and started a "
                          "fresh one; jobs are recovered from their job dirs")
            db = self._connect()
        try:
            db.enable_wal()
            db.execute("PRAGMA synchronous=NORMAL")
            with self._lock:
                SCHEMA.apply(db)
        except sqlite3.Error:
            db.conn.close()
            raise
        return db

    def _problem(self, message: str) -> None:
        log.error("%s", message)
        self.problems.append(message)

    @property
    def schema_version(self) -> int:
        return SCHEMA.version(self.db)

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    def _write(self, what: str, fn: Any) -> Any:
        with self._lock:
            try:
                with self.db.conn:
                    return fn()
            except sqlite3.Error as exc:
                raise store_error(self.path, what, exc) from None

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
                    lambda: self.db["meta"].upsert({"key": "next_job", "value": str(n + 1)}, pk="key"))

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
        self._write(f"save job {info.id}", lambda: self.db["jobs"].upsert(row, pk="id"))

    def transition(self, job_id: str, from_state: str, to_state: str, actor: str = "", reason: str = "",
                   wall_s: float | None = None) -> None:
        """Record one state change. Raises StoreError."""
        row = {"job_id": job_id, "wall_s": time.time() if wall_s is None else wall_s, "from_state": from_state,
               "to_state": to_state, "actor": actor, "reason": reason}
        self._write(f"record a transition of job {job_id}", lambda: self.db["transitions"].insert(row))

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
                    raise ValueError(f"runtime is {type(extra).__name__}, not an object")
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
            return list(self.db["transitions"].rows_where("job_id = ?", [job_id], order_by="id"))
