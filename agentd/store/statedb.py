"""The node's state database (``<state_dir>/jobs.db``): one connection and one lock per file.

The job store (agentd.store.jobstore) and the job-move journal (agentd.store.migration_journal)
keep their tables in the same file. Both get it from :meth:`StateDB.open`, which hands every
caller in the process the same open handle for a path (counted: the connection closes with the
last :meth:`StateDB.close`), so there is one connection, one lock and one schema upgrade per
file, and a transaction of one never interleaves with a write of the other.

Opening checks the file first (each fault reported in :attr:`StateDB.problems`, naming the file):
- not SQLite, truncated or otherwise damaged: moved aside to ``jobs.db.corrupt-<time>`` (never
  deleted) and a fresh file is started;
- a schema newer than this agentd knows: moved aside to ``jobs.db.schema-<N>-<time>`` unchanged,
  so the newer agentd can still use it, and a fresh file is started.
A full disk raises :class:`StoreError` with ``disk_full`` set instead of crashing the caller.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import sqlite_utils

from agentd.store.schema import SchemaTooNew
from agentd.store.schema_state import STATE_SCHEMA

__all__ = ["StateDB", "StoreError", "is_disk_full", "move_aside", "store_error"]

log = logging.getLogger(__name__)

_SIDE_FILES = ("-wal", "-shm")
#: How long a write waits for another process's lock on the file (an old agentd, a sqlite3 shell).
BUSY_TIMEOUT_S = 10.0
T = TypeVar("T")


class StoreError(Exception):
    """The state database could not be opened or written. ``str()`` names the file, the cause and
    the remedy; ``disk_full`` is set when the cause is a full (or over-quota) disk."""

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


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


_registry_lock = threading.Lock()
_open: dict[Path, StateDB] = {}


class StateDB:
    """One open state database: :attr:`db` (one connection, WAL) guarded by :attr:`lock`.

    Get it with :meth:`open`, never the constructor; hold :attr:`lock` for every statement and
    transaction (:meth:`write` does both).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        #: What was wrong with the file when it was opened (it was moved aside), in words.
        self.problems: list[str] = []
        self._refs = 1
        try:
            self.db = self._open_checked()
        except (sqlite3.Error, OSError) as exc:  # OSError: moving a damaged file aside failed
            raise store_error(path, "open the job store", exc) from None
        self._identity = _identity(path)

    @classmethod
    def open(cls, path: Path) -> StateDB:
        """The process's handle on ``path``, opened (checked, upgraded) on first use. Raises
        :class:`StoreError` when the file cannot be opened at all (a full disk, an unreadable
        directory)."""
        key = Path(os.path.abspath(path))
        with _registry_lock:
            state = _open.get(key)
            # the file was replaced or removed under the open handle (a restored backup): reopen
            if state is not None and state._identity == _identity(key):
                state._refs += 1
                return state
            state = cls(key)
            _open[key] = state
            return state

    def close(self) -> None:
        """Drop this caller's use; the connection closes when the last user closes."""
        with _registry_lock:
            self._refs -= 1
            if self._refs > 0:
                return
            if _open.get(self.path) is self:
                del _open[self.path]
        with self.lock:
            self.db.conn.close()

    def _connect(self) -> sqlite_utils.Database:
        conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=BUSY_TIMEOUT_S)
        return sqlite_utils.Database(conn)

    def _open_checked(self) -> sqlite_utils.Database:
        db = self._connect()
        try:
            check = db.execute("PRAGMA quick_check(1)").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {check[0] if check else 'no answer'}")
            STATE_SCHEMA.check(db, self.path)
        except sqlite3.DatabaseError as exc:
            db.conn.close()
            if is_disk_full(exc) or (isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)):
                raise
            moved = move_aside(self.path, "corrupt")
            self._problem(f"job store {self.path} is damaged ({exc}); moved aside to {moved.name} and started a "
                          "fresh one; jobs are recovered from their job dirs")
            db = self._connect()
        except SchemaTooNew as exc:
            db.conn.close()
            moved = move_aside(self.path, f"schema-{exc.version}")
            self._problem(f"job store {self.path} has schema version {exc.version}, newer than the {exc.latest} this "
                          f"agentd knows; kept unchanged as {moved.name} (a newer agentd can use it) and started a "
                          "fresh one; jobs are recovered from their job dirs")
            db = self._connect()
        try:
            db.enable_wal()
            db.execute("PRAGMA synchronous=NORMAL")
            STATE_SCHEMA.upgrade(db, self.path)
        except sqlite3.Error:
            db.conn.close()
            raise
        return db

    def _problem(self, message: str) -> None:
        log.error("%s", message)
        self.problems.append(message)

    @property
    def schema_version(self) -> int:
        with self.lock:
            return STATE_SCHEMA.version(self.db)

    def write(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` in one transaction under the lock. Raises :class:`StoreError` naming ``what``."""
        with self.lock:
            try:
                with self.db.conn:
                    return fn()
            except sqlite3.Error as exc:
                raise store_error(self.path, what, exc) from None
