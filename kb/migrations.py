"""Schema versions of the side stores: each store's numbered steps, applied in place on SQLite and PostgreSQL alike.

A store declares `Schema(name, steps)`; step n (from 1) is the script that takes its tables from version n-1 to n,
one text for both engines or one per engine. The table `kb_schema` (one row per store) records the version a
database holds; `migrate` applies the missing steps and the new version in one transaction, so a process that
opens the database while another migrates it waits (SQLite's write lock, a PostgreSQL advisory lock) and then finds
the work done. Version 1 of every store is the schema written before versions existed (CREATE ... IF NOT EXISTS),
so a file from then is adopted as it is. A database newer than this code is refused, never written.
"""
from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Mapping

COMMENT = re.compile(r"--[^\n]*")
ADVISORY_LOCK = 0x6B625F736368  # "kb_sch": serialises migrations of one PostgreSQL database across processes

VERSIONS_TABLE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS kb_schema (store TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID",
    "postgres": "CREATE TABLE IF NOT EXISTS kb_schema (store TEXT PRIMARY KEY, version INTEGER NOT NULL)",
}


class SchemaError(Exception):
    """A database whose schema this code cannot use (written by a newer version of KB Search)."""


@dataclass(frozen=True)
class Schema:
    """A store's tables as numbered steps: `steps[n - 1]` migrates version n-1 to n. A step is one SQL script for
    both engines, or a mapping {"sqlite": ..., "postgres": ...}."""

    store: str
    steps: tuple[str | Mapping[str, str], ...]

    @property
    def version(self) -> int:
        return len(self.steps)

    def script(self, version: int, engine: str) -> str:
        step = self.steps[version - 1]
        return step if isinstance(step, str) else step[engine]


def statements(script: str) -> list[str]:
    """The statements of a script (comments dropped first: they may hold semicolons)."""
    return [s.strip() for s in COMMENT.sub("", script).split(";") if s.strip()]


def _apply(conn: Any, schema: Schema, engine: str) -> None:
    """Inside the migration's transaction: bring `schema` to its version, or refuse a newer database."""
    conn.execute(VERSIONS_TABLE[engine])
    row = conn.execute("SELECT version FROM kb_schema WHERE store = ?", (schema.store,)).fetchone()
    found = 0 if row is None else int(row[0])
    if found > schema.version:
        raise SchemaError(f"the {schema.store} tables are at schema version {found}, newer than this KB Search "
                          f"knows ({schema.version}): upgrade KB Search, never downgrade a shared database")
    for version in range(found + 1, schema.version + 1):
        for statement in statements(schema.script(version, engine)):
            conn.execute(statement)
    if found != schema.version:
        conn.execute("INSERT INTO kb_schema (store, version) VALUES (?, ?) ON CONFLICT (store) DO UPDATE SET "
                     "version = excluded.version", (schema.store, schema.version))


def migrate(conn: Any, schema: Schema, timeout: float, synchronous: str = "NORMAL") -> None:
    """Bring a store's tables on `conn` (a kb.database.Connection) to `schema.version`, in one transaction.

    SQLite: WAL first, then the write lock taken at once (BEGIN IMMEDIATE), so that processes opening a new file
    together (`kb serve --workers N`, `kb keys` beside the service) wait on the busy timeout instead of being refused
    a lock upgrade; a busy answer is retried until `timeout`. PostgreSQL: a transaction-scoped advisory lock.
    """
    if conn.engine == "postgres":
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(?)", (ADVISORY_LOCK,))
            _apply(conn, schema, "postgres")
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            with conn.transaction(write=True):
                _apply(conn, schema, "sqlite")
            return
        except sqlite3.OperationalError as exc:
            if not ("locked" in str(exc) or "busy" in str(exc)) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)
