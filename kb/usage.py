"""UsageLog: how often searches returned each article, in SQLite; article ids and dates only, never query text."""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from kb.database import Database, KeptConnection, as_database
from kb.errors import StoreUnavailable
from kb.migrations import Schema
from kb.side_store import SideStoreHealth

log = logging.getLogger("kb.usage")

# Version 1 is the schema from before versions (kb/migrations.py).
SCHEMA = Schema("usage", ({
    "sqlite": """
CREATE TABLE IF NOT EXISTS returned (
    article_id TEXT PRIMARY KEY,
    times INTEGER NOT NULL,             -- responses (search or suggest) that listed the article
    first_returned TEXT NOT NULL,       -- ISO date, UTC
    last_returned TEXT NOT NULL
) WITHOUT ROWID;
""",
    "postgres": """
CREATE TABLE IF NOT EXISTS returned (
    article_id TEXT PRIMARY KEY,
    times BIGINT NOT NULL,
    first_returned TEXT NOT NULL,
    last_returned TEXT NOT NULL
);
"""},))
MAX_ID_CHARS = 1000
LINGER = 0.5  # seconds `record_later` counts wait in memory before one transaction writes them (as the event log's)


class UsageLog:
    """Per-article counters of search results in KB_USAGE_DB (a SQLite file, created on the first `record`) or
    KB_DATABASE_URL, where every replica adds to the same counts.

    One kept connection, used under a lock, so an instance can be shared by the service's threads (kb/database.py);
    WAL lets `kb check` read the file while the service writes it. Customer text is never stored: callers pass ids.

    Counting never fails the search it counts: a database that cannot be written (read-only, full disk, a server out
    of reach) is counted and logged once by `health` (and once more when it is written again), and those responses
    are not counted. A server out of reach is not tried again for a few seconds (kb/database.py), so it costs
    searches no wait each.

    The service counts with `record_later`: in memory, written by a thread of its own within LINGER seconds, so that
    a search never waits for the store (0.39 ms of a search on SQLite, a round trip on PostgreSQL); this log's reads
    and `close` write what is pending first. A crash loses at most the last LINGER seconds of counts.
    """

    def __init__(self, where: Database | Path, timeout: float = 10.0):
        self.database = as_database(where, "KB_USAGE_DB", timeout)
        self.path = self.database.where
        self._kept = KeptConnection(self.database, SCHEMA)
        self.health = SideStoreHealth("usage", self.database.where, self.database.setting, log,
                                      "the articles searches return are not counted for `kb check`")
        self._pending: Counter[str] = Counter()  # record_later's counts not written yet
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None

    def record(self, article_ids: Iterable[str]) -> None:
        """Count one response that returned these articles (each id once however often it is listed), now."""
        self._write(Counter(ids_of(article_ids)))

    def record_later(self, article_ids: Iterable[str]) -> None:
        """`record`, written by the log's writer thread within LINGER seconds (with other responses' counts)."""
        ids = ids_of(article_ids)
        if not ids:
            return
        with self._pending_lock:
            self._pending.update(ids)
            if self._writer is None:  # the first count
                self._writer = threading.Thread(target=self._run, name="usage-writer", daemon=True)
                self._writer.start()
        self._wake.set()

    def flush(self) -> None:
        """Write the counts `record_later` holds."""
        with self._pending_lock:
            pending, self._pending = self._pending, Counter()
        self._write(pending)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            time.sleep(LINGER)  # let more responses' counts join this transaction
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the writer must outlive one bad batch (database errors: `health`)
                log.exception("could not write the usage counts")

    def _write(self, counts: Counter[str]) -> None:
        if not counts:
            return
        ids = sorted(counts)
        today = datetime.now(timezone.utc).date().isoformat()

        def count(db) -> None:
            with db.transaction(write=True):  # ids in order: concurrent writers lock rows in one order
                db.executemany("INSERT INTO returned VALUES (?, ?, ?, ?) ON CONFLICT (article_id) DO UPDATE SET "
                               "times = returned.times + excluded.times, last_returned = excluded.last_returned",
                               [(i, counts[i], today, today) for i in ids])

        try:
            self._kept.write(count)
        except self.database.errors as exc:
            self.health.failed(exc)
            return
        self.health.succeeded()

    def _query(self, sql: str) -> list[tuple]:
        """Rows of a read (after writing what is pending); [] before anything was recorded; StoreUnavailable (503)
        when the database cannot be read."""
        self.flush()
        try:
            return self._kept.read(lambda db: [tuple(r) for r in db.execute(sql).fetchall()], [])
        except self.database.errors as exc:
            raise StoreUnavailable(f"the usage log cannot be read right now ({type(exc).__name__}: {exc}); "
                                   f"the operator should check {self.database.setting}={self.database.where}",
                                   store="usage") from None

    def returned(self) -> dict[str, int]:
        """Article id -> number of responses that returned it."""
        return dict(self._query("SELECT article_id, times FROM returned"))

    def has_data(self) -> bool:
        """Has any search been recorded yet?"""
        return bool(self._query("SELECT 1 FROM returned LIMIT 1"))

    def since(self) -> str | None:
        """ISO date of the first recorded search, None before any."""
        rows = self._query("SELECT min(first_returned) FROM returned")
        return rows[0][0] if rows else None

    def close(self) -> None:
        """Write what is pending and close the connection (a later call opens it again)."""
        self.flush()
        self._kept.close()


def ids_of(article_ids: Iterable[str]) -> set[str]:
    """The article ids of one response worth counting, each once."""
    return {i for i in article_ids if isinstance(i, str) and 0 < len(i) <= MAX_ID_CHARS}
