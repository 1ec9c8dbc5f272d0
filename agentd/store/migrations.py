"""A tiny migration registry for sqlite-utils databases: register steps once, apply in order.

    jobs_schema = Migrations("jobstore")

    @jobs_schema(1)
    def create_jobs(db): db["jobs"].create({...}, pk="id")

    jobs_schema.apply(db)   # runs the steps this database has not had yet
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlite_utils

MIGRATIONS_TABLE = "_migrations"
Step = Callable[[sqlite_utils.Database], None]


class Migrations:
    """An ordered set of schema steps for one named schema (several schemas may share a file)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.steps: dict[int, Step] = {}

    def __call__(self, version: int) -> Callable[[Step], Step]:
        def register(fn: Step) -> Step:
            if version in self.steps:
                raise ValueError(f"schema {self.name!r} already has a migration {version}")
            self.steps[version] = fn
            return fn

        return register

    @property
    def latest(self) -> int:
        return max(self.steps, default=0)

    def version(self, db: sqlite_utils.Database) -> int:
        """The version this database is at (0: never migrated)."""
        if MIGRATIONS_TABLE not in db.table_names():
            return 0
        rows = db.execute(f"SELECT MAX(version) FROM {MIGRATIONS_TABLE} WHERE name = ?", [self.name]).fetchone()
        return rows[0] or 0

    def apply(self, db: sqlite_utils.Database) -> int:
        """Run pending steps, each in its own transaction; returns the new version."""
        if MIGRATIONS_TABLE not in db.table_names():
            db[MIGRATIONS_TABLE].create({"name": str, "version": int, "applied_s": float}, pk=("name", "version"))
        current = self.version(db)
        for version in sorted(v for v in self.steps if v > current):
            with db.conn:
                self.steps[version](db)
                db[MIGRATIONS_TABLE].insert({"name": self.name, "version": version, "applied_s": time.time()})
            current = version
        return current
