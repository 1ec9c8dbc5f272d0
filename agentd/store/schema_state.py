"""The schema of the node's state database (``<state_dir>/jobs.db``): job store and job-move journal.

One file, one :class:`~agentd.store.schema.Schema`, ``PRAGMA user_version`` as its marker:

1. the job store: ``meta``, ``jobs`` (latest row per job), ``transitions`` (one row per change);
2. the job-move journal: ``job_migrations`` (one row per move and side), ``job_migration_steps``.

Files written before this registry existed carry no ``user_version``: their job tables were
versioned in a ``_migrations`` table (name "jobstore") and the journal created its tables with
"if not exists" whenever it opened the file. :func:`_legacy_version` reads the first; the steps
use "if not exists", so such a file upgrades in place. ``_migrations`` is left as it was, so an
older agentd still opens the file.
"""

from __future__ import annotations

import sqlite_utils

from agentd.store.schema import Conn, Schema

__all__ = ["JOURNAL_STEPS_TABLE", "JOURNAL_TABLE", "LEGACY_TABLE", "STATE_SCHEMA"]

#: Where agentd before the schema registry kept the job store's version (read, never written).
LEGACY_TABLE = "_migrations"
JOURNAL_TABLE = "job_migrations"
JOURNAL_STEPS_TABLE = "job_migration_steps"


def _legacy_version(db: Conn) -> int:
    """The job-store version an old file recorded in ``_migrations`` (0: none)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [LEGACY_TABLE]).fetchone() is None:
        return 0
    row = db.execute(f"SELECT MAX(version) FROM {LEGACY_TABLE} WHERE name = 'jobstore'").fetchone()
    return int(row[0] or 0)


STATE_SCHEMA = Schema("job store", legacy=_legacy_version,
                      remedy="kept unchanged for the newer agentd that wrote it")


@STATE_SCHEMA.step(1)
def _jobs(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db.table("jobs").create({"id": str, "n": int, "state": str, "info": str, "runtime": str, "updated_s": float}, pk="id",
                      if_not_exists=True)
    db.table("jobs").create_index(["state"], if_not_exists=True)
    db.table("transitions").create({"id": int, "job_id": str, "wall_s": float, "from_state": str, "to_state": str,
                              "actor": str, "reason": str}, pk="id", if_not_exists=True)
    db.table("transitions").create_index(["job_id"], if_not_exists=True)


@STATE_SCHEMA.step(2)
def _job_move_journal(db: sqlite_utils.Database) -> None:
    db.table(JOURNAL_TABLE).create(
        {
            "id": str, "side": str, "job_id": str, "phase": str, "mode": str, "spec_json": str,
            "source_node": str, "target": str, "target_key": str, "was_paused": int,
            "resume": int, "size_bytes": int, "sha256": str, "bytes_done": int,
            "checkpoint_dir": str, "new_job_id": str, "reason": str,
            "started_wall_s": float, "updated_wall_s": float, "extra_json": str,
        },
        pk=("id", "side"),
        if_not_exists=True,
    )
    db.table(JOURNAL_STEPS_TABLE).create(
        {"migration_id": str, "side": str, "wall_s": float, "phase": str, "message": str},
        if_not_exists=True,
    )
    db.table(JOURNAL_STEPS_TABLE).create_index(["migration_id"], if_not_exists=True)
