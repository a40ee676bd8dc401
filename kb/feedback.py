"""FeedbackStore: agents' "Was this helpful?" answers recorded in SQLite for quality work and reports."""
from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, TypeVar

from kb.articles import validate_article_id
from kb.errors import BadRequest, StoreUnavailable
from kb.redaction import redact
from kb.side_store import SideStoreHealth
from kb.sqlite_setup import prepare_wal, reopen_after

log = logging.getLogger("kb.feedback")
T = TypeVar("T")

SOURCES = ("search", "suggest", "article")
ANSWER_ID = re.compile(r"^[0-9a-f]{16}$")  # as kb/events.py makes them
MAX_ID_CHARS = 1000  # article and passage ids are paths and slugs; anything longer is not one
SUMMARY_LIMIT, SUMMARY_MAX_LIMIT = 100, 1000  # articles per page of the summary: default and most

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    created TEXT NOT NULL,              -- ISO 8601 UTC
    query TEXT NOT NULL,                -- redacted (kb/redaction.py); '' on an article page without a search, when
                                        -- only the answer_id was sent, or with KB_ANALYTICS_STORE_TEXT=false
    article_id TEXT NOT NULL,
    passage_id TEXT,
    helpful INTEGER NOT NULL CHECK (helpful IN (0, 1)),
    source TEXT NOT NULL CHECK (source IN ('search', 'suggest', 'article')),
    index_version TEXT                  -- build id of the index that produced the result, when known
);
CREATE INDEX IF NOT EXISTS feedback_article ON feedback(article_id);
CREATE INDEX IF NOT EXISTS feedback_created ON feedback(created);
"""


def check_article_id(article_id: object) -> str:
    """A valid-looking article id (a relative content path); the article itself may no longer exist."""
    if not isinstance(article_id, str) or not article_id.strip():
        raise BadRequest("article_id is empty: give the id of the article the feedback is about")
    if len(article_id) > MAX_ID_CHARS:
        raise BadRequest(f"article_id is {len(article_id)} characters long; the limit is {MAX_ID_CHARS}")
    return validate_article_id(article_id)


def delete_feedback_before(path: Path, cutoff: datetime, timeout: float = 30.0) -> int:
    """Delete the answers recorded before `cutoff` from the feedback file at `path` (retention, run by kb/events.py
    beside the service's own store); how many were deleted. sqlite3.Error when the file cannot be written."""
    created = cutoff.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    conn = sqlite3.connect(path, timeout=timeout)
    try:
        with conn:
            return conn.execute("DELETE FROM feedback WHERE created < ?", (created,)).rowcount
    except sqlite3.OperationalError as exc:
        if str(exc).startswith("no such table"):
            return 0
        raise
    finally:
        conn.close()


class FeedbackStore:
    """Append-only feedback table in its own SQLite file (WAL); safe to share between threads.

    One connection, opened on first use and kept, used under a lock by this process's threads; other processes (the
    workers of `kb serve --workers N`, retention) wait on SQLite's busy timeout. The query is stored redacted
    (kb/redaction.py), or not at all with `store_text=False`; rows older than the analytics retention are deleted by
    the event log (`delete_before`).

    A file that cannot be written (read-only file or folder, full disk) never stops the service: the store starts
    anyway, `record` raises StoreUnavailable (503) while it lasts, reads go on where SQLite can still read, and
    `health` counts the failures and logs the first one and the recovery (kb/side_store.py).
    """

    def __init__(self, path: Path, max_query_chars: int = 20_000, timeout: float = 10.0, store_text: bool = True):
        self.path, self.max_query_chars, self.timeout = Path(path), max_query_chars, timeout
        self.store_text = store_text
        self.health = SideStoreHealth("feedback", self.path, "KB_FEEDBACK_DB", log,
                                      "POST /api/feedback and /feedback answer 503")
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._ready = False  # WAL and the schema are in place
        with self._lock:
            try:
                self._connection(write=True)
            except (sqlite3.Error, OSError) as exc:
                self._failed(exc)

    def _connection(self, write: bool) -> sqlite3.Connection | None:
        """The kept connection (call with the lock held), WAL and schema prepared first for a write; None for a read
        of a file that does not exist yet (reading never creates it)."""
        if self._conn is None:
            if not write and not self.path.is_file():
                return None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            self._conn, self._ready = conn, False
        if write and not self._ready:
            prepare_wal(self._conn, SCHEMA, self.timeout, synchronous="FULL")
            self._ready = True
        return self._conn

    def _read(self, query: Callable[[sqlite3.Connection], T], empty: T) -> T:
        """`query` run on the connection, `empty` when there is no file or table yet (reading never creates them);
        StoreUnavailable (503) when SQLite cannot read the file either."""
        with self._lock:
            try:
                conn = self._connection(write=False)
                return empty if conn is None else query(conn)
            except (sqlite3.Error, OSError) as exc:
                if isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("no such table"):
                    return empty
                self._drop(exc)
                raise StoreUnavailable(f"the feedback store cannot be read right now ({type(exc).__name__}: {exc}); "
                                       "the operator should check KB_FEEDBACK_DB", store="feedback") from None

    def _failed(self, exc: BaseException) -> StoreUnavailable:
        """A failed write (call with the lock held): counted and said once (health), the connection dropped when it
        cannot recover by itself (opened read-only, I/O error)."""
        self._drop(exc)
        return self.health.failed(exc)

    def _drop(self, exc: BaseException) -> None:
        if self._conn is not None and reopen_after(exc):
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn, self._ready = None, False

    def _write(self, sql: str, params: tuple) -> sqlite3.Cursor:
        """Run one write in its own transaction; StoreUnavailable (503) when the file cannot be written."""
        with self._lock:
            for fresh in (self._conn is None, True):  # a kept connection may be stale (opened read-only): once more
                try:
                    conn = self._connection(write=True)
                    with conn:  # commit on success, roll back on error
                        cursor = conn.execute(sql, params)
                    break
                except (sqlite3.Error, OSError) as exc:
                    if isinstance(exc, sqlite3.IntegrityError):
                        raise
                    if fresh or not reopen_after(exc):
                        raise self._failed(exc) from None
                    self._drop(exc)
        self.health.succeeded()
        return cursor

    def close(self) -> None:
        """Close the connection (a later call opens it again)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn, self._ready = None, False

    def validate(self, query: object, article_id: object, passage_id: object, helpful: object,
                 source: object, index_version: object, answer_id: object = None) -> tuple:
        """The row to insert, or BadRequest naming the field that is wrong. An `answer_id` (the response the
        feedback is about, kb/events.py) stands in for the query, which may then be empty."""
        if source not in SOURCES:
            raise BadRequest(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        query = "" if query is None else query
        if not isinstance(query, str):
            raise BadRequest("query must be a string")
        if len(query) > self.max_query_chars:
            raise BadRequest(f"query is {len(query)} characters long; the limit is {self.max_query_chars}")
        query = query.strip()
        if answer_id is not None and (not isinstance(answer_id, str) or not ANSWER_ID.match(answer_id)):
            raise BadRequest("answer_id must be the 16 hexadecimal characters a search or suggest response returned")
        if not query and source != "article" and answer_id is None:
            raise BadRequest(f"query is empty: feedback on a {source} result needs the answer_id or the query "
                             "that produced it")
        check_article_id(article_id)
        if passage_id is not None and (not isinstance(passage_id, str) or len(passage_id) > MAX_ID_CHARS):
            raise BadRequest(f"passage_id must be a string of at most {MAX_ID_CHARS} characters")
        if not isinstance(helpful, bool):
            raise BadRequest(f"helpful must be true or false, got {helpful!r}")
        if index_version is not None and (not isinstance(index_version, str) or len(index_version) > MAX_ID_CHARS):
            raise BadRequest("index_version must be a short string")
        created = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        query = redact(query) if self.store_text else ""
        return (created, query, article_id, passage_id or None, int(helpful), source, index_version)

    def record(self, query: str, article_id: str, helpful: bool, passage_id: str | None = None,
               source: str = "search", index_version: str | None = None, answer_id: str | None = None) -> int:
        """Store one yes/no answer; returns its id. StoreUnavailable (503) when the file cannot be written."""
        row = self.validate(query, article_id, passage_id, helpful, source, index_version, answer_id)
        cursor = self._write("INSERT INTO feedback (created, query, article_id, passage_id, helpful, source, "
                             "index_version) VALUES (?, ?, ?, ?, ?, ?, ?)", row)
        return int(cursor.lastrowid)

    def delete_before(self, cutoff: datetime) -> int:
        """Delete the answers recorded before `cutoff` (retention, run by kb/events.py); how many were deleted."""
        created = cutoff.astimezone(timezone.utc).isoformat(timespec="milliseconds")
        return self._write("DELETE FROM feedback WHERE created < ?", (created,)).rowcount

    def summary(self, limit: int = SUMMARY_LIMIT, offset: int = 0) -> dict:
        """Totals, and one page of the articles by how often each was marked helpful / not helpful (most feedback
        first, then by id): `limit` (1..1000) articles from `offset`; `next_offset` is None on the last page."""
        for name, value, low, high in (("limit", limit, 1, SUMMARY_MAX_LIMIT), ("offset", offset, 0, None)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low or (high and value > high):
                raise BadRequest(f"{name} must be an integer from {low}{f' to {high}' if high else ' up'}, "
                                 f"got {value!r}")
        def page(conn: sqlite3.Connection) -> tuple[tuple, list]:
            conn.execute("BEGIN")  # one read transaction: the totals and the page of the same moment
            try:
                totals = conn.execute("SELECT count(*), coalesce(sum(helpful), 0), count(DISTINCT article_id) "
                                      "FROM feedback").fetchone()
                return tuple(totals), conn.execute(
                    "SELECT article_id, sum(helpful) AS yes, sum(1 - helpful) AS no FROM feedback GROUP BY article_id "
                    "ORDER BY count(*) DESC, article_id LIMIT ? OFFSET ?", (limit, offset)).fetchall()
            finally:
                conn.rollback()

        (total, helpful, article_count), rows = self._read(page, ((0, 0, 0), []))
        articles = [{"article_id": r["article_id"], "helpful": r["yes"], "not_helpful": r["no"],
                     "total": r["yes"] + r["no"]} for r in rows]
        following = offset + len(articles)
        return {"total": total, "helpful": helpful, "not_helpful": total - helpful, "article_count": article_count,
                "limit": limit, "offset": offset, "next_offset": following if following < article_count else None,
                "articles": articles}

    def recent(self, limit: int = 50) -> list[dict]:
        """The latest `limit` (1..1000) answers, newest first."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise BadRequest(f"limit must be an integer from 1 to 1000, got {limit!r}")
        rows = self._read(lambda conn: conn.execute("SELECT * FROM feedback ORDER BY id DESC LIMIT ?",
                                                    (limit,)).fetchall(), [])
        return [{**dict(r), "helpful": bool(r["helpful"])} for r in rows]
