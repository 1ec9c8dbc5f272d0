"""Journal of job moves (migrations), on both sides, in the node's state database.

Every phase change is written before the action it announces is taken, so a daemon killed
mid-migration finds on restart exactly where it stopped and can resume or roll back
(``MigrationSource.recover`` / ``MigrationTarget.recover``). Two tables of its own:
``job_migrations`` (one row per migration and side, the current phase) and ``migration_steps``
(an append-only log of every step, for the audit trail and post-mortems). The tables are created
by the state database's schema (agentd.store.schema_state); the journal shares the job store's
connection and lock (agentd.store.statedb), so there is one connection per file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from agentd.protocol.migration import MigrationMode
from agentd.store.schema_state import JOURNAL_STEPS_TABLE, JOURNAL_TABLE
from agentd.store.statedb import StateDB

MIGRATIONS_TABLE = JOURNAL_TABLE
STEPS_TABLE = JOURNAL_STEPS_TABLE

# Phases of the source side; the last three are final.
SOURCE_PHASES = ("requested", "checkpointing", "transferring", "committing", "done", "rolled_back", "failed")
# Phases of the target side.
TARGET_PHASES = ("receiving", "received", "starting", "committed", "aborted")
FINAL_PHASES = frozenset({"done", "rolled_back", "failed", "committed", "aborted"})


@dataclass
class MigrationRecord:
    """One migration as one side sees it. ``side`` is "source" or "target"."""

    id: str
    side: str
    job_id: str  # source: the job here; target: the source's job id
    phase: str
    mode: MigrationMode = "checkpoint"
    spec_json: str = "{}"
    source_node: str = ""
    target: str = ""  # source: target endpoint
    target_key: str = ""
    was_paused: bool = False
    resume: bool = False
    size_bytes: int = 0
    sha256: str = ""
    bytes_done: int = 0
    checkpoint_dir: str = ""
    new_job_id: str = ""
    reason: str = ""
    started_wall_s: float = 0.0
    updated_wall_s: float = 0.0
    extra_json: str = "{}"

    @property
    def final(self) -> bool:
        return self.phase in FINAL_PHASES

    @property
    def extra(self) -> dict[str, Any]:
        value = json.loads(self.extra_json or "{}")
        return value if isinstance(value, dict) else {}


_COLUMNS = {f.name for f in fields(MigrationRecord)}


@dataclass
class MigrationJournal:
    """The job-move tables in the SQLite file ``db_path`` (the node's state database, ``jobs.db``).

    Thread-safe: the daemon's RPC thread and migration worker threads share one journal, and the
    job store shares its connection and lock (:meth:`StateDB.open`). Raises
    :class:`agentd.store.statedb.StoreError` when the file cannot be opened.
    """

    db_path: Path
    clock: Callable[[], float] = time.time
    _state: StateDB = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._state = StateDB.open(self.db_path)
        self._lock = self._state.lock
        self._db = self._state.db

    def close(self) -> None:
        self._state.close()

    def create(self, rec: MigrationRecord, message: str = "") -> MigrationRecord:
        """Insert a new migration (its first step is logged with ``message``)."""
        now = self.clock()
        rec.started_wall_s = rec.started_wall_s or now
        rec.updated_wall_s = now
        with self._lock, self._db.conn:
            self._db.table(MIGRATIONS_TABLE).insert(asdict(rec), replace=True)
            self._step(rec.id, rec.side, rec.phase, message or f"{rec.side} {rec.phase}", now)
        return rec

    def update(self, rec: MigrationRecord, message: str = "", **changes: Any) -> MigrationRecord:
        """Change fields of ``rec`` (in memory and on disk); log a step when the phase changes
        or a message is given."""
        unknown = set(changes) - _COLUMNS
        if unknown:
            raise ValueError(f"unknown migration journal fields {sorted(unknown)}")
        now = self.clock()
        old_phase = rec.phase
        for k, v in changes.items():
            setattr(rec, k, v)
        rec.updated_wall_s = now
        with self._lock, self._db.conn:
            self._db.table(MIGRATIONS_TABLE).update((rec.id, rec.side), {**changes, "updated_wall_s": now})
            if message or rec.phase != old_phase:
                self._step(rec.id, rec.side, rec.phase, message or rec.phase, now)
        return rec

    def note(self, rec: MigrationRecord, message: str) -> None:
        """Log a step without changing the record."""
        with self._lock, self._db.conn:
            self._step(rec.id, rec.side, rec.phase, message, self.clock())

    def _step(self, mid: str, side: str, phase: str, message: str, now: float) -> None:
        self._db.table(STEPS_TABLE).insert({"migration_id": mid, "side": side, "wall_s": now, "phase": phase, "message": message})

    def get(self, mid: str, side: str) -> MigrationRecord | None:
        with self._lock:
            rows = list(self._db.table(MIGRATIONS_TABLE).rows_where("id = ? and side = ?", [mid, side]))
        return _record(rows[0]) if rows else None

    def unfinished(self, side: str) -> list[MigrationRecord]:
        """Migrations of ``side`` not in a final phase, oldest first."""
        final = sorted(FINAL_PHASES)
        marks = ",".join("?" * len(final))
        with self._lock:
            rows = list(self._db.table(MIGRATIONS_TABLE).rows_where(
                f"side = ? and phase not in ({marks})", [side, *final], order_by="started_wall_s"))
        return [_record(r) for r in rows]

    def all(self, side: str | None = None) -> list[MigrationRecord]:
        with self._lock:
            if side is None:
                rows = list(self._db.table(MIGRATIONS_TABLE).rows_where(order_by="started_wall_s"))
            else:
                rows = list(self._db.table(MIGRATIONS_TABLE).rows_where("side = ?", [side], order_by="started_wall_s"))
        return [_record(r) for r in rows]

    def steps(self, mid: str) -> list[dict[str, Any]]:
        """The step log of one migration (both sides when both live in this file), in order."""
        with self._lock:
            return list(self._db.table(STEPS_TABLE).rows_where("migration_id = ?", [mid], order_by="rowid"))


def _record(row: dict[str, Any]) -> MigrationRecord:
    row = {k: v for k, v in row.items() if k in _COLUMNS}
    row["was_paused"] = bool(row.get("was_paused"))
    row["resume"] = bool(row.get("resume"))
    return MigrationRecord(**row)
