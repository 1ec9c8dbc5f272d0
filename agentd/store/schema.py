"""Schema versions of every SQLite file Fleetdeck writes: one small registry, used everywhere.

A :class:`Schema` is an ordered list of versioned steps for one kind of file (the node's state
database, a recording). ``PRAGMA user_version`` in the file is the marker: a file is at version
N when steps 1..N have run. :meth:`Schema.upgrade` runs the missing steps, each with its new
marker in one ``BEGIN IMMEDIATE`` transaction, so a file is always at a whole version (even if the
process is killed mid-step) and two processes upgrading one file at once do each step once. A file
newer than this build raises :class:`SchemaTooNew`, whose message names the file, its version and
the remedy. "Schema step" is the word for a change of tables; "migration" means moving a job
between nodes (agentd.control.migration), nothing else.

    RECORDING = Schema("recording")

    @RECORDING.step(1)
    def _create(db: sqlite_utils.Database) -> None:
        db["meta"].create({"key": str, "value": str}, pk="key")

    RECORDING.upgrade(db, path)   # runs the steps this file has not had yet
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

__all__ = ["Conn", "Schema", "SchemaTooNew", "Step", "user_version"]

#: One schema step: changes the tables of a file from version N-1 to N (inside a transaction).
Step = Callable[[sqlite_utils.Database], None]
#: What reading a version needs: a plain connection (a reader's, read-only) or a sqlite-utils one.
Conn = sqlite3.Connection | sqlite_utils.Database


class SchemaTooNew(Exception):
    """A file has a schema version newer than this build knows; ``str()`` names the file, the
    version and the remedy."""

    def __init__(self, kind: str, path: Path, version: int, latest: int, remedy: str) -> None:
        self.kind, self.path, self.version, self.latest, self.remedy = kind, path, version, latest, remedy
        #: What is wrong, without the remedy (for callers that know a better one).
        self.problem = (f"{kind} {path} has schema version {version}, newer than the {latest} this build of "
                        "Fleetdeck knows")
        super().__init__(f"{self.problem}; {remedy}")


class Schema:
    """The ordered schema steps of one kind of file.

    ``legacy`` gives the version of a file written before its kind used ``user_version`` (the
    file reads 0 there); it is called only when ``user_version`` is 0.
    """

    def __init__(self, kind: str, *, remedy: str = "upgrade Fleetdeck to use it",
                 legacy: Callable[[Conn], int] | None = None) -> None:
        self.kind = kind
        self.remedy = remedy
        self.steps: dict[int, Step] = {}
        self._legacy = legacy

    def step(self, version: int) -> Callable[[Step], Step]:
        """Register the step that brings a file from ``version - 1`` to ``version``."""

        def register(fn: Step) -> Step:
            if version < 1:
                raise ValueError(f"{self.kind} schema step {version} ({fn.__name__}): versions start at 1")
            if version in self.steps:
                raise ValueError(f"{self.kind} schema step {version} registered twice ({fn.__name__})")
            self.steps[version] = fn
            return fn

        return register

    @property
    def latest(self) -> int:
        """The version a file has after :meth:`upgrade` (0: no steps registered)."""
        return max(self.steps, default=0)

    def version(self, db: Conn) -> int:
        """The version the file is at (0: empty, or not one of ours)."""
        marked = int(db.execute("PRAGMA user_version").fetchone()[0])
        if marked == 0 and self._legacy is not None:
            return self._legacy(db)
        return marked

    def check(self, db: Conn, path: Path) -> int:
        """The file's version; raises :class:`SchemaTooNew` when it is newer than :attr:`latest`."""
        version = self.version(db)
        if version > self.latest:
            raise SchemaTooNew(self.kind, path, version, self.latest, self.remedy)
        return version

    def upgrade(self, db: sqlite_utils.Database, path: Path) -> int:
        """Run the steps the file has not had, in order; return the version it had before.

        Raises :class:`SchemaTooNew` (nothing is changed) and whatever a step raises (that step
        is rolled back; the file stays at the version before it).
        """
        before = self.check(db, path)
        missing = sorted(v for v in self.steps if v > before)
        if not missing and before == int(db.execute("PRAGMA user_version").fetchone()[0]):
            return before
        if not missing:  # a legacy file already at the latest version: only mark it
            self._run(db, path, before, None)
            return before
        for version in missing:
            self._run(db, path, version, self.steps[version])
        return before

    def _run(self, db: sqlite_utils.Database, path: Path, version: int, step: Step | None) -> None:
        conn = db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            # another process may have upgraded the file while we waited for the write lock
            if step is not None and self.check(db, path) >= version:
                conn.execute("COMMIT")
                return
            if step is not None:
                step(db)
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def user_version(conn: sqlite3.Connection) -> int:
    """``PRAGMA user_version`` of an open file (the schema marker)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])
