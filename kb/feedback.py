"""FeedbackStore: agents' "Was this helpful?" answers recorded in SQLite for quality work and reports."""
from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from kb.articles import validate_article_id
from kb.errors import BadRequest
from kb.redaction import redact
from kb.sqlite_setup import prepare_wal

SOURCES = ("search", "suggest", "article")
ANSWER_ID = re.compile(r"^[0-9a-f]{16}$")  # as kb/events.py makes them
MAX_ID_CHARS = 1000  # article and passage ids are paths and slugs; anything longer is not one

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


class FeedbackStore:
    """Append-only feedback table in its own SQLite file (WAL); safe to share between threads.

    Every call opens its own connection (SQLite connections are not shared across threads); writes in
    this process are serialised by a lock, and other processes wait on SQLite's busy timeout. The query is stored
    redacted (kb/redaction.py), or not at all with `store_text=False`; rows older than the analytics retention are
    deleted by the event log (`delete_before`).
    """

    def __init__(self, path: Path, max_query_chars: int = 20_000, timeout: float = 10.0, store_text: bool = True):
        self.path, self.max_query_chars, self.timeout = Path(path), max_query_chars, timeout
        self.store_text = store_text
        self._write_lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            prepare_wal(conn, SCHEMA, self.timeout, synchronous="FULL")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=self.timeout)
        conn.row_factory = sqlite3.Row
        try:
            with conn:  # commit on success, roll back on error
                yield conn
        finally:
            conn.close()

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
        """Store one yes/no answer; returns its id."""
        row = self.validate(query, article_id, passage_id, helpful, source, index_version, answer_id)
        with self._write_lock, self._connect() as conn:
            cursor = conn.execute("INSERT INTO feedback (created, query, article_id, passage_id, helpful, source, "
                                  "index_version) VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            return int(cursor.lastrowid)

    def delete_before(self, cutoff: datetime) -> int:
        """Delete the answers recorded before `cutoff` (retention, run by kb/events.py); how many were deleted."""
        with self._write_lock, self._connect() as conn:
            created = cutoff.astimezone(timezone.utc).isoformat(timespec="milliseconds")
            return conn.execute("DELETE FROM feedback WHERE created < ?", (created,)).rowcount

    def summary(self) -> dict:
        """Totals and, per article, how often it was marked helpful / not helpful (most feedback first)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT article_id, sum(helpful) AS yes, sum(1 - helpful) AS no FROM feedback "
                                "GROUP BY article_id ORDER BY count(*) DESC, article_id").fetchall()
        articles = [{"article_id": r["article_id"], "helpful": r["yes"], "not_helpful": r["no"],
                     "total": r["yes"] + r["no"]} for r in rows]
        helpful = sum(a["helpful"] for a in articles)
        not_helpful = sum(a["not_helpful"] for a in articles)
        return {"total": helpful + not_helpful, "helpful": helpful, "not_helpful": not_helpful,
                "articles": articles}

    def recent(self, limit: int = 50) -> list[dict]:
        """The latest `limit` (1..1000) answers, newest first."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise BadRequest(f"limit must be an integer from 1 to 1000, got {limit!r}")
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM feedback ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{**dict(r), "helpful": bool(r["helpful"])} for r in rows]
