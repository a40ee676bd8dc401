"""UsageLog: how often searches returned each article, in SQLite; article ids and dates only, never query text."""
from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from kb.errors import StoreUnavailable
from kb.side_store import SideStoreHealth
from kb.sqlite_setup import prepare_wal, reopen_after

log = logging.getLogger("kb.usage")

SCHEMA = """
CREATE TABLE IF NOT EXISTS returned (
    article_id TEXT PRIMARY KEY,
    times INTEGER NOT NULL,             -- responses (search or suggest) that listed the article
    first_returned TEXT NOT NULL,       -- ISO date, UTC
    last_returned TEXT NOT NULL
) WITHOUT ROWID;
"""
MAX_ID_CHARS = 1000


class UsageLog:
    """Per-article counters of search results; the file is created on the first `record`.

    One connection, used under a lock, so an instance can be shared by the service's threads; WAL lets
    `kb check` read the file while the service writes it. Customer text is never stored: callers pass ids.

    Counting never fails the search it counts: a file that cannot be written (read-only, full disk) is counted and
    logged once by `health` (and once more when it is written again), and those responses are not counted.
    """

    def __init__(self, path: Path, timeout: float = 10.0):
        self.path, self.timeout = Path(path), timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._ready = False  # WAL and the table are in place
        self.health = SideStoreHealth("usage", self.path, "KB_USAGE_DB", log,
                                      "the articles searches return are not counted for `kb check`")

    def _connection(self, create: bool) -> sqlite3.Connection | None:
        """The open connection (call with the lock held), WAL and table prepared first for a write (`create`); None
        when the file does not exist and create is False."""
        if self._conn is None:
            if not create and not self.path.is_file():
                return None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False)
            self._ready = False
        if create and not self._ready:
            prepare_wal(self._conn, SCHEMA, self.timeout)
            self._ready = True
        return self._conn

    def record(self, article_ids: Iterable[str]) -> None:
        """Count one response that returned these articles (each id once however often it is listed)."""
        ids = sorted({i for i in article_ids if isinstance(i, str) and 0 < len(i) <= MAX_ID_CHARS})
        if not ids:
            return
        today = datetime.now(timezone.utc).date().isoformat()
        with self._lock:
            for fresh in (self._conn is None, True):  # a kept connection may be stale (opened read-only): once more
                try:
                    conn = self._connection(create=True)
                    with conn:
                        conn.executemany(
                            "INSERT INTO returned VALUES (?, 1, ?, ?) ON CONFLICT(article_id) DO UPDATE SET "
                            "times = times + 1, last_returned = excluded.last_returned",
                            [(i, today, today) for i in ids])
                    break
                except (sqlite3.Error, OSError) as exc:
                    self._drop(exc)
                    if fresh or not reopen_after(exc):
                        self.health.failed(exc)
                        return
        self.health.succeeded()

    def _drop(self, exc: BaseException) -> None:
        """Close a connection that cannot recover by itself (opened read-only, I/O error); call with the lock held."""
        if self._conn is not None and reopen_after(exc):
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn, self._ready = None, False

    def _query(self, sql: str) -> list[tuple]:
        """Rows of a read; [] before the file exists; StoreUnavailable (503) when SQLite cannot read it."""
        with self._lock:
            try:
                conn = self._connection(create=False)
                return [] if conn is None else conn.execute(sql).fetchall()
            except (sqlite3.Error, OSError) as exc:
                if isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("no such table"):
                    return []  # a file being created by another process, or an empty one
                self._drop(exc)
                raise StoreUnavailable(f"the usage log cannot be read right now ({type(exc).__name__}: {exc}); "
                                       f"the operator should check KB_USAGE_DB={self.path}", store="usage") from None

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
        """Close the connection (a later call opens it again)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn, self._ready = None, False
