"""A small analytics event log with known answers, written straight into the tables of kb/event_schema.py (a SQLite
file, or a PostgreSQL database: the `side_db` fixture's)."""
from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Callable

import numpy as np

from kb.database import Database, as_database
from kb.event_schema import SCHEMA
from kb.migrations import migrate

A = "Outlook/outlook-password-prompt"
B = "Teams/teams-microphone-not-working"
C = "OneDrive/onedrive-sync-stuck"
D = "id/teams-kamera-tidak-berfungsi"
START = dt.date(2026, 3, 1)  # a Sunday: the first week of a weekly report is this one day

# 8-dimensional topic directions: outlook, teams, vpn, and a few for small differences within a topic
BASIS = np.eye(8, dtype=np.float32)
SYNTHETIC = {
    "outlook password": BASIS[0],
    "sandi outlook": BASIS[0] + 0.2 * BASIS[3],
    "teams camera": BASIS[1] + 0.1 * BASIS[4],
    "kamera teams": BASIS[1] - 0.1 * BASIS[4],
    "vpn drops": BASIS[2],
    "vpn keeps dropping": BASIS[2] + 0.3 * BASIS[5],
    "lexical words": BASIS[6],
}
ARTICLE_VECTORS = {A: BASIS[0], B: 0.6 * BASIS[1] + 0.8 * BASIS[6], C: BASIS[2] + BASIS[7], D: BASIS[1]}


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def quantise(v: np.ndarray) -> bytes:
    return np.clip(np.rint(unit(v) * 127), -127, 127).astype(np.int8).tobytes()


def key(text: str) -> str:
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()[:16]


class LogWriter:
    """Rows as the event log writes them (ids in the order given), for tests: one open transaction, committed by
    `commit()` and `close()`."""

    def __init__(self, where: Database | Path, start: dt.date = START,
                 vector: Callable[[str], np.ndarray] | None = None, store_text: bool = True):
        self.database = as_database(where, "KB_ANALYTICS_DB", 10.0)
        self.conn = self.database.connect()
        migrate(self.conn, SCHEMA, 10.0)
        self.conn.execute("BEGIN")
        self.start, self.store_text = start, store_text
        self.vector = vector or (lambda text: SYNTHETIC[text])

    def day(self, offset: int) -> str:
        return (self.start + dt.timedelta(days=offset)).isoformat()

    def insert(self, offset: int, values: dict, at: str = "10:00:00.000") -> int:
        """One events row on day `offset` (at `at`, UTC) with the next id."""
        day = self.day(offset)
        event_id = (self.conn.execute("SELECT max(id) FROM events").fetchone()[0] or 0) + 1
        columns = {"id": event_id, "at": f"{day}T{at}Z", "day": day, **values}
        self.conn.execute(f"INSERT INTO events ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                          list(columns.values()))
        return event_id

    def answer(self, name: str, offset: int, kind: str, source: str, language: str | None, query: str,
               confident: int | None, latency: float, results: list[str], product: str | None = None,
               vector: bool = True) -> str:
        event_id = self.insert(offset, {
            "kind": kind, "source": source, "answer_id": name, "language": language, "product": product,
            "query": query if self.store_text else None, "query_key": key(query),
            "topic_vector": quantise(self.vector(query)) if vector else None,
            "confidence": None if confident is None else (0.9 if confident else 0.2), "confident": confident,
            "latency_ms": latency, "result_count": len(results)})
        self.conn.executemany("INSERT INTO results VALUES (?, ?, ?, ?)",
                              [(event_id, pos, article, 1.0 - pos / 10) for pos, article in enumerate(results, 1)])
        return name

    def action(self, offset: int, kind: str, article: str, answer: str | None, position: int = 1,
               helpful: int | None = None, source: str = "page", product: str | None = None) -> None:
        self.insert(offset, {"kind": kind, "source": source, "answer_id": answer, "article_id": article,
                              "position": position, "helpful": helpful, "product": product})

    def commit(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.execute("BEGIN")

    def close(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.close()


def write_known_log(where: Database | Path, start: dt.date = START, vector: Callable[[str], np.ndarray] | None = None,
                    store_text: bool = True) -> Path:
    """The log tests/test_reports.py states its expected numbers for (days are offsets from `start`).

    In the 14 days start..start+13: 10 answers (5 searches, 5 suggestions), 10 actions; one answer dated the day
    before `start` is written between in-range answers (ids out of time order), two fall after the range.
    """
    log = LogWriter(where, start, vector, store_text)
    log.answer("a1", 0, "search", "page", "en", "outlook password", 1, 10, [A, B])
    log.answer("a2", 0, "search", "page", "en", "outlook password", 1, 20, [A, C])
    log.answer("a3", 1, "search", "api:crm", "en", "teams camera", 0, 30, [B, D], product="Teams")
    log.answer("a10", -1, "search", "page", "en", "outlook password", 1, 15, [B])  # the day before, written late
    log.answer("a4", 1, "suggest", "widget", "id", "kamera teams", 0, 40, [D, B])
    log.answer("a5", 2, "suggest", "webhook:zendesk", "en", "vpn drops", 0, 50, [C])
    log.answer("a6", 7, "suggest", "widget", "en", "outlook password", 1, 60, [A])
    log.answer("a7", 8, "search", "page", "id", "sandi outlook", 1, 70, [A, B])
    log.answer("a11", 9, "search", "page", "en", "lexical words", None, 5, [B])
    log.answer("a12", 11, "suggest", "webhook:zendesk", "en", "vpn keeps dropping", 0, 90, [C])
    log.answer("a8", 13, "suggest", "webhook:zendesk", "en", "vpn drops", 0, 80, [C, A])
    log.answer("a9", 14, "search", "page", "en", "outlook password", 1, 25, [A])  # the day after
    log.action(0, "open", A, "a1", 1)
    log.action(0, "open", C, "a2", 2)
    log.action(0, "copy", A, "a1", 1)
    log.action(0, "feedback", A, "a1", 1, helpful=1)
    log.action(1, "feedback", D, "a4", 1, helpful=0, source="widget")
    log.action(2, "insert", C, "a5", 1, source="webhook:zendesk")
    log.action(7, "insert", A, "a6", 1, source="widget")
    log.action(7, "link", A, "a6", 1, source="widget")
    log.action(8, "feedback", A, "a7", 1, helpful=0)
    log.action(13, "feedback", C, "a8", 1, helpful=1, source="widget")
    log.action(14, "open", A, "a9", 1)  # after the range
    log.close()
    return where
