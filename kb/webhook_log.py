"""WebhookLog: which helpdesk tickets a webhook answered within the replay window, shared by every worker process.

`kb serve --workers N` runs N processes, each with its own replay cache of answers and its own write-back queue. A
helpdesk retry of the same ticket that reaches another worker must not post a second note: the first process to
answer a ticket claims it here, atomically, and only the claimant counts the answer and queues the note.

Ticket ids and times only, never ticket text: the answers themselves stay in each process's memory.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable

from kb.sqlite_setup import prepare_wal

log = logging.getLogger("kb.webhooks")

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_tickets (
    source TEXT NOT NULL,               -- zendesk, freshdesk, generic
    ticket_id TEXT NOT NULL,            -- the helpdesk's ticket id (no subject, no description)
    internal INTEGER NOT NULL,          -- 1: answered for a caller who sees internal articles
    first_seen REAL NOT NULL,           -- unix seconds of the claim; the row expires a replay window later
    note INTEGER NOT NULL DEFAULT 0,    -- 1: the claimant queued a write-back note
    UNIQUE (source, ticket_id, internal)
);
CREATE INDEX IF NOT EXISTS webhook_tickets_first_seen ON webhook_tickets(first_seen);
"""
EXPIRE_PER_WRITE = 100  # expired rows deleted per claim: more than one claim adds, so the table stays bounded


class WebhookLog:
    """(source, ticket id, audience) -> first seen, in a SQLite file (WAL) shared by every worker process.

    One connection, used under a lock by this process's threads; other processes wait on SQLite's busy timeout.
    When the file cannot be opened or written (read-only disk, locked past the timeout), `claim` answers True, so
    the caller falls back to its own per-process rule; the first failure of a run of them is logged, each counted.
    """

    def __init__(self, path: Path, window: float, timeout: float = 5.0, clock: Callable[[], float] = time.time):
        self.path, self.window, self.timeout, self.clock = Path(path), float(window), timeout, clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self.errors = 0
        self._failing = False

    def _connection(self) -> sqlite3.Connection:
        """The open connection (call with the lock held); the file is created on the first claim."""
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False, isolation_level=None)
            try:
                prepare_wal(conn, SCHEMA, self.timeout)  # retried while other processes create it too
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def claim(self, source: str, ticket_id: str, internal: bool) -> bool:
        """True for exactly one caller, across processes, per ticket and audience within the replay window (and
        whenever the file cannot be written); False when another caller claimed it less than `window` ago."""
        now = self.clock()
        cutoff = now - self.window
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute("DELETE FROM webhook_tickets WHERE rowid IN (SELECT rowid FROM webhook_tickets "
                                 "WHERE first_seen <= ? ORDER BY first_seen LIMIT ?)", (cutoff, EXPIRE_PER_WRITE))
                    # Insert, or take over a row that expired but was not deleted yet; a live row is left alone.
                    won = conn.execute(
                        "INSERT INTO webhook_tickets (source, ticket_id, internal, first_seen) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (source, ticket_id, internal) DO UPDATE SET first_seen = excluded.first_seen, "
                        "note = 0 WHERE webhook_tickets.first_seen <= ?",
                        (source, ticket_id, int(internal), now, cutoff)).rowcount == 1
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, OSError) as exc:
                self._failed(exc)
                return True
            self._recovered()
            return won

    def noted(self, source: str, ticket_id: str, internal: bool) -> None:
        """Record that the claimant queued a write-back note for the ticket (a failure here is only counted; nothing
        is tried while the file cannot be written, as the claim already fell back)."""
        with self._lock:
            if self._failing:
                return
            try:
                self._connection().execute(
                    "UPDATE webhook_tickets SET note = 1 WHERE source = ? AND ticket_id = ? AND internal = ?",
                    (source, ticket_id, int(internal)))
            except (sqlite3.Error, OSError) as exc:
                self._failed(exc)

    def rows(self) -> list[tuple[str, str, int, float, int]]:
        """Every row (source, ticket_id, internal, first_seen, note), oldest first: for tests and inspection."""
        with self._lock:
            return self._connection().execute(
                "SELECT source, ticket_id, internal, first_seen, note FROM webhook_tickets ORDER BY first_seen"
            ).fetchall()

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None  # open it again next time: the disk may be writable by then
        if not self._failing:
            self._failing = True
            log.warning("webhook log %s cannot be written (%s: %s): replays are recognised within each worker "
                        "process only until it can, so a helpdesk retry that reaches another worker may post a "
                        "second note (KB_WEBHOOK_DB)", self.path, type(exc).__name__, exc)

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.info("webhook log %s is written again", self.path)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
