"""prepare_wal(conn, schema): WAL and a side store's tables, safe when several processes open a new file at once."""
from __future__ import annotations

import re
import sqlite3
import time

COMMENT = re.compile(r"--[^\n]*")


def statements(schema: str) -> list[str]:
    """The statements of a schema script (comments dropped first: they may hold semicolons)."""
    return [s for s in COMMENT.sub("", schema).split(";") if s.strip()]


def prepare_wal(conn: sqlite3.Connection, schema: str, timeout: float, synchronous: str = "NORMAL") -> None:
    """Switch `conn` to WAL and create `schema` in one write transaction.

    Processes that open a new file together (`kb serve --workers N`, `kb keys` beside the service) can get
    SQLITE_BUSY at once, without SQLite's busy timeout: it refuses a lock upgrade that could deadlock, as in
    `executescript` of CREATE statements after a read. Taking the write lock first (BEGIN IMMEDIATE) lets the
    busy timeout apply, and a busy answer is retried until `timeout`: contention, not an unwritable file.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in statements(schema):
                    conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return
        except sqlite3.OperationalError as exc:
            if not ("locked" in str(exc) or "busy" in str(exc)) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


# Primary result codes after which a connection is opened again rather than kept: it was opened read-only (SQLite
# falls back to that on a read-only file and never upgrades), its file went away or its I/O failed. After SQLITE_FULL,
# BUSY or LOCKED the connection is sound and keeps its shared memory mapped, so reads go on while the disk is full.
REOPEN_AFTER = {8: "READONLY", 10: "IOERR", 11: "CORRUPT", 14: "CANTOPEN", 26: "NOTADB"}


def reopen_after(exc: BaseException) -> bool:
    """Should a connection that raised `exc` be closed and opened again next time?"""
    code = getattr(exc, "sqlite_errorcode", None)
    return not isinstance(code, int) or (code & 0xFF) in REOPEN_AFTER
