"""WebhookLog: which helpdesk tickets a webhook answered within the replay window, shared by every worker process.

`kb serve --workers N` runs N processes, each with its own replay cache of answers and its own write-back queue. A
helpdesk retry of the same ticket that reaches another worker must not post a second note: the first process to
answer a ticket claims it here, atomically, and only the claimant counts the answer and queues the note.

Ticket ids and times only, never ticket text: the answers themselves stay in each process's memory.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from kb.database import Connection, Database, KeptConnection, as_database
from kb.migrations import Schema

log = logging.getLogger("kb.webhooks")

# Version 1 is the schema from before versions (kb/migrations.py).
SCHEMA = Schema("webhooks", ({
    "sqlite": """
CREATE TABLE IF NOT EXISTS webhook_tickets (
    source TEXT NOT NULL,               -- zendesk, freshdesk, generic
    ticket_id TEXT NOT NULL,            -- the helpdesk's ticket id (no subject, no description)
    internal INTEGER NOT NULL,          -- 1: answered for a caller who sees internal articles
    first_seen REAL NOT NULL,           -- unix seconds of the claim; the row expires a replay window later
    note INTEGER NOT NULL DEFAULT 0,    -- 1: the claimant queued a write-back note
    UNIQUE (source, ticket_id, internal)
);
CREATE INDEX IF NOT EXISTS webhook_tickets_first_seen ON webhook_tickets(first_seen);
""",
    "postgres": """
CREATE TABLE IF NOT EXISTS webhook_tickets (
    source TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    internal INTEGER NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    note INTEGER NOT NULL DEFAULT 0,
    UNIQUE (source, ticket_id, internal)
);
CREATE INDEX IF NOT EXISTS webhook_tickets_first_seen ON webhook_tickets(first_seen);
"""},))
EXPIRE_PER_WRITE = 100  # expired rows deleted per claim: more than one claim adds, so the table stays bounded


class WebhookLog:
    """(source, ticket id, audience) -> first seen, in a database every worker process shares: KB_WEBHOOK_DB (a
    SQLite file in WAL mode), or KB_DATABASE_URL, where every replica shares it too.

    One kept connection, used under a lock by this process's threads (kb/database.py); other processes wait on
    SQLite's busy timeout or PostgreSQL's row locks. When the database cannot be opened or written (read-only disk or
    database, locked past the timeout, a server out of reach), `claim` answers True, so the caller falls back to its
    own per-process rule; the first failure of a run of them is logged, each counted.
    """

    def __init__(self, where: Database | Path, window: float, timeout: float = 5.0,
                 clock: Callable[[], float] = time.time):
        self.database = as_database(where, "KB_WEBHOOK_DB", timeout)
        self.path = self.database.where
        self.window, self.clock = float(window), clock
        self._kept = KeptConnection(self.database, SCHEMA)
        self.errors = 0
        self._failing = False

    def claim(self, source: str, ticket_id: str, internal: bool) -> bool:
        """True for exactly one caller, across processes, per ticket and audience within the replay window (and
        whenever the database cannot be written); False when another caller claimed it less than `window` ago."""
        now = self.clock()
        cutoff = now - self.window

        def claim(db: Connection) -> bool:
            with db.transaction(write=True):
                db.execute("DELETE FROM webhook_tickets WHERE (source, ticket_id, internal) IN (SELECT source, "
                           "ticket_id, internal FROM webhook_tickets WHERE first_seen <= ? ORDER BY first_seen "
                           "LIMIT ?)", (cutoff, EXPIRE_PER_WRITE))
                # Insert, or take over a row that expired but was not deleted yet; a live row is left alone (on
                # PostgreSQL a concurrent claim waits for the row and then finds it live).
                return db.execute(
                    "INSERT INTO webhook_tickets (source, ticket_id, internal, first_seen) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (source, ticket_id, internal) DO UPDATE SET first_seen = excluded.first_seen, "
                    "note = 0 WHERE webhook_tickets.first_seen <= ?",
                    (source, ticket_id, int(internal), now, cutoff)).rowcount == 1

        try:
            won = self._kept.write(claim)
        except self.database.errors as exc:
            self._failed(exc)
            return True
        self._recovered()
        return won

    def noted(self, source: str, ticket_id: str, internal: bool) -> None:
        """Record that the claimant queued a write-back note for the ticket (a failure here is only counted; nothing
        is tried while the database cannot be written, as the claim already fell back)."""
        if self._failing:
            return
        try:
            self._kept.write(lambda db: db.execute(
                "UPDATE webhook_tickets SET note = 1 WHERE source = ? AND ticket_id = ? AND internal = ?",
                (source, ticket_id, int(internal))))
        except self.database.errors as exc:
            self._failed(exc)

    def rows(self) -> list[tuple[str, str, int, float, int]]:
        """Every row (source, ticket_id, internal, first_seen, note), oldest first: for tests and inspection."""
        return self._kept.read(lambda db: [tuple(r) for r in db.execute(
            "SELECT source, ticket_id, internal, first_seen, note FROM webhook_tickets ORDER BY first_seen, "
            "source, ticket_id").fetchall()], [])

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if not self._failing:
            self._failing = True
            log.warning("webhook log %s cannot be written (%s: %s): replays are recognised within each worker "
                        "process only until it can, so a helpdesk retry that reaches another worker may post a "
                        "second note (%s)", self.database.where, type(exc).__name__, exc, self.database.setting)

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.info("webhook log %s is written again", self.database.where)

    def close(self) -> None:
        self._kept.close()
