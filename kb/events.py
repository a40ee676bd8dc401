"""EventLog: searches, suggestions and what agents did with them, queued and written by one thread (SQLite or
PostgreSQL, kb/database.py)."""
from __future__ import annotations

import hashlib
import logging
import os
import queue
import secrets
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import numpy as np

from kb import event_rollups
from kb.database import KeptConnection, side_database
from kb.errors import BadRequest, StoreUnavailable
from kb.event_schema import ANSWER_KINDS, SCHEMA
from kb.feedback import ANSWER_ID, delete_feedback_before
from kb.redaction import redact
from kb.side_store import SideStoreHealth

log = logging.getLogger("kb.events")

ACTIONS = ("open", "copy", "insert", "link", "feedback")
BATCH = 500                  # events per transaction at most
LINGER = 0.5                 # seconds the writer collects events before a transaction (flush and close cut it short)
ENCODE_BATCH = 32            # queries per encode_queries call of the writer
WRITER_NICENESS = 10         # added to the writer thread's niceness (at most 19): requests first on a busy machine
RETENTION_EVERY = 24 * 3600  # seconds between retention runs
ROLLUP_EVERY = 600           # seconds between looks for days to roll up (a day closed, later events on a closed day)
REFUSE_SECONDS = 5.0         # after a failed write, POST /api/events answers 503 this long before one is tried again
MAX_TEXT = 1000              # characters of redacted query kept per event
MAX_FIELD = 200              # source, language, product
MAX_ID = 1000                # article ids
INSERT = ("INSERT INTO events (id, at, day, kind, source, answer_id, language, product, query, query_key, "
          "topic_vector, confidence, confident, latency_ms, result_count, article_id, position, helpful) "
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
WRITE_LOCK = 0x6B625F657674  # "kb_evt": PostgreSQL advisory lock of event ids (the writers of every replica)


def new_answer_id() -> str:
    """A random id for one search or suggest response (16 hex characters), sent back with actions on it."""
    return secrets.token_hex(8)


def query_key(redacted: str) -> str:
    """sha256 (16 hex characters) of the normalised redacted query: equal queries group without their text."""
    return hashlib.sha256(" ".join(redacted.lower().split()).encode()).hexdigest()[:16]


def quantise(vectors: np.ndarray) -> list[bytes]:
    """L2-normalised float vectors as int8 bytes (scale 1/127), one `dim`-byte blob each."""
    return [row.tobytes() for row in np.clip(np.rint(np.asarray(vectors) * 127), -127, 127).astype(np.int8)]


def stamp(at: float) -> tuple[str, str]:
    """(ISO 8601 UTC with milliseconds and Z, YYYY-MM-DD) of a unix time."""
    moment = datetime.fromtimestamp(at, timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return text, text[:10]


def _clip(value: Any, limit: int) -> str | None:
    return None if value is None else str(value)[:limit]


class EventLog:
    """The analytics event log (KB_ANALYTICS_DB, or KB_DATABASE_URL shared by every replica): a bounded queue filled
    by requests, emptied by one writer thread.

    `record_answer` and `record_action` only put a tuple on the queue: they never wait and never raise (a full queue
    drops the event and counts it). The writer takes up to BATCH events per transaction, redacts query text
    (kb/redaction.py; no text at all with KB_ANALYTICS_STORE_TEXT=false, the query key and topic vector are still
    computed), embeds the redacted queries in batches for their topic vectors, and once a day deletes events and
    feedback older than KB_ANALYTICS_RETENTION_DAYS. A database it cannot write (a read-only or full disk, a server
    out of reach or read-only) never stops the service: its events are counted in `errors`, `health` logs the first
    failure and the recovery once each (kb/side_store.py), and `unavailable()` gives POST /api/events its 503
    meanwhile.
    """

    def __init__(self, settings, encoder=None):
        if settings.analytics_retention_days < 1:
            raise BadRequest(f"KB_ANALYTICS_RETENTION_DAYS must be at least 1, got {settings.analytics_retention_days}")
        self.database = side_database(settings, "analytics")  # KB_ANALYTICS_DB, or KB_DATABASE_URL
        self.database.timeout = 30.0
        self.path = self.database.where
        self._kept = KeptConnection(self.database, SCHEMA)
        self.feedback = side_database(settings, "feedback")  # KB_FEEDBACK_DB, or KB_DATABASE_URL
        self.store_text = bool(settings.analytics_store_text)
        self.retention_days = int(settings.analytics_retention_days)
        self.encoder = encoder
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(settings.analytics_queue_size)))
        self._cond = threading.Condition()
        self._pending = 0            # put on the queue and not yet written (or failed)
        self._dropped = self._written = self._errors = 0
        self.batches = 0             # transactions written
        self._stop = threading.Event()
        self._hurry = threading.Event()  # flush() or close() is waiting: write without lingering
        self._thread: threading.Thread | None = None
        self._next_purge = 0.0       # time.monotonic() of the next retention run; 0: at start
        self._purging = True         # the first retention run has not finished yet
        self._next_rollup = 0.0      # time.monotonic() of the next look for days to roll up; 0: at start
        self._rollup_days: list[str] = []  # closed days still to roll up in this round, and its newest event id
        self._rollup_target = 0
        self._said: set[str] = set()
        self.health = SideStoreHealth("analytics", self.database.where, self.database.setting, log,
                                      "search and suggest events are counted as errors, POST /api/events answers 503")

    # ---- request side: never blocks, never raises ----------------------------------------------------------
    def record_answer(self, kind: str, source: str, answer_id: str | None, query: str | None,
                      results: Iterable[tuple[str, float]] = (), language: str | None = None,
                      product: str | None = None, confidence: float | None = None, confident: bool | None = None,
                      latency_ms: float | None = None, embedded: str | None = None) -> bool:
        """Queue a search or suggest answer: the cleaned query (redacted by the writer), the articles returned as
        (article id, score) in order. `embedded`: what the answer embedded instead of the query's words (the English
        rendering of an Indonesian search); the topic vector is then its vector, so the writer reuses the one the
        search computed, as long as redaction changes neither text. False when it was dropped (queue full) or could
        not be queued."""
        try:
            return self._put(("answer", time.time(), kind, source, answer_id, language, product, query,
                              tuple(results), confidence, confident, latency_ms, embedded))
        except Exception:  # noqa: BLE001 - recording must never fail the request it records
            self._count_error("queue")
            return False

    def record_action(self, kind: str, source: str, article_id: str, answer_id: str | None = None,
                      position: int | None = None, product: str | None = None, helpful: bool | None = None) -> bool:
        """Queue what an agent did with an answer: open, copy, insert, link or feedback (with `helpful`)."""
        try:
            return self._put(("action", time.time(), kind, source, answer_id, article_id, position, product, helpful))
        except Exception:  # noqa: BLE001
            self._count_error("queue")
            return False

    def _put(self, event: tuple) -> bool:
        with self._cond:
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                self._dropped += 1
                return False
            self._pending += 1
            return True

    def unavailable(self) -> StoreUnavailable | None:
        """The 503 of POST /api/events while the last write failed (for REFUSE_SECONDS after it: then one event is let
        through, so the log finds out when it can write again even without searches), else None."""
        health = self.health
        if health.failing and time.monotonic() - health.last_failure < REFUSE_SECONDS:
            return health.unavailable()
        return None

    def stats(self) -> dict[str, int]:
        """{queued, dropped, written, errors}: events waiting now, and since start dropped, written and failed."""
        with self._cond:
            return {"queued": self._queue.qsize(), "dropped": self._dropped, "written": self._written,
                    "errors": self._errors}

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="event-log-writer", daemon=True)
            self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event is written (or failed) and the start-up retention run is done."""
        self._hurry.set()
        try:
            with self._cond:
                return self._cond.wait_for(lambda: self._pending == 0 and not self._purging, timeout)
        finally:
            self._hurry.clear()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (within `timeout`), then stop the writer and close the connection."""
        self._stop.set()
        self._hurry.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._kept.close()

    # ---- writer thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:  # the writer yields the CPU to requests: a lower priority for this thread only (Linux), where allowed
            me = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, me, min(19, os.getpriority(os.PRIO_PROCESS, me) + WRITER_NICENESS))
        except (AttributeError, OSError):
            pass
        try:
            try:
                self._kept.write(lambda db: None)  # the file and its tables exist from the start, for the reports
            except self.database.errors as exc:
                self.health.failed(exc)
            while True:
                if time.monotonic() >= self._next_purge:
                    self._retain()
                if self._rollup_days or time.monotonic() >= self._next_rollup:
                    self._roll_up()
                try:
                    batch = [self._queue.get(timeout=0.2)]
                except queue.Empty:
                    if self._stop.is_set():
                        break
                    continue
                self._collect(batch)
                try:
                    self._write(batch)
                finally:
                    with self._cond:
                        self._pending -= len(batch)
                        self._cond.notify_all()
        finally:
            self._kept.close()

    def _collect(self, batch: list[tuple]) -> None:
        """Add queued events to `batch` for up to LINGER seconds (one transaction, one model call for many events
        instead of one each, and fewer wake-ups beside the requests), or until BATCH or someone waits."""
        deadline = time.monotonic() + LINGER
        while len(batch) < BATCH:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._hurry.is_set():
                return
            try:
                batch.append(self._queue.get(timeout=min(remaining, 0.05)))
            except queue.Empty:
                pass

    def _retain(self) -> None:
        self._next_purge = time.monotonic() + RETENTION_EVERY
        try:
            self.purge()
        except Exception as exc:  # noqa: BLE001 - an unwritable file: try again tomorrow
            self._say("retention", "analytics retention could not run (tried again in 24 h): %s", exc)
        finally:
            with self._cond:
                self._purging = False
                self._cond.notify_all()

    def _roll_up(self) -> None:
        """Roll up one closed day (kb/event_rollups.py), so that the writer goes back to the queue between two days;
        every ROLLUP_EVERY seconds look for the days to roll up, then move the watermark once they are done."""
        if self.health.failing:  # the database cannot be written (health says so): rolled up once a write works
            self._rollup_days, self._next_rollup = [], time.monotonic() + 1
            return
        try:
            if not self._rollup_days:
                self._next_rollup = time.monotonic() + ROLLUP_EVERY
                today = datetime.now(timezone.utc).date()
                self._rollup_target, self._rollup_days = self._kept.write(lambda db: event_rollups.pending(db, today))
            if self._rollup_days:
                day, target = self._rollup_days.pop(0), self._rollup_target
                self._kept.write(lambda db: event_rollups.roll_up(db, day, target))
            if not self._rollup_days:
                target = self._rollup_target
                self._kept.write(lambda db: target == event_rollups.watermark(db)
                                 or event_rollups.set_watermark(db, target))
        except Exception as exc:  # noqa: BLE001 - reports read the events of days without rollups: nothing is lost
            self._rollup_days = []
            self._say("rollup", "analytics rollups could not be written (tried again in 10 minutes): %s", exc)

    def purge(self, now: datetime | None = None) -> dict[str, int]:
        """Delete events (with their results), their days' rollups and feedback older than the retention;
        {"events", "feedback"}."""
        cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=self.retention_days)
        deleted = {"events": 0, "feedback": 0}
        failures = []  # one database that cannot be written does not keep the other's retention from running
        at = stamp(cutoff.timestamp())[0]

        def delete(db) -> int:
            with db.transaction(write=True):
                event_rollups.lock(db, event_rollups.ROLLUP_LOCK)
                db.execute("DELETE FROM results WHERE event_id IN (SELECT id FROM events WHERE at < ?)", (at,))
                events = db.execute("DELETE FROM events WHERE at < ?", (at,)).rowcount
                event_rollups.delete_through(db, at[:10])  # its last day is rolled up again if kept
                return events

        if self.database.exists():
            try:
                deleted["events"] = self._kept.write(delete)
            except self.database.errors as exc:
                failures.append(f"events in {self.database.where} ({self.database.setting}): "
                                f"{type(exc).__name__}: {exc}")
        if self.feedback.exists():
            try:
                deleted["feedback"] = delete_feedback_before(self.feedback, cutoff)
            except self.feedback.errors as exc:
                failures.append(f"feedback in {self.feedback.where} ({self.feedback.setting}): "
                                f"{type(exc).__name__}: {exc}")
        if any(deleted.values()):
            log.info("analytics retention (%d days): deleted %d events and %d feedback answers", self.retention_days,
                     deleted["events"], deleted["feedback"])
        if failures:
            raise StoreUnavailable("could not delete old " + "; nor old ".join(failures), store="analytics")
        return deleted

    def _write(self, batch: list[tuple]) -> None:
        rows: list[tuple[tuple, list[tuple], str | None]] = []
        for event in batch:
            try:
                rows.append(self._row(event))
            except Exception:  # noqa: BLE001 - one malformed event is not written, the others are
                self._count_error("event")
            time.sleep(0)  # let request threads have the interpreter between two redactions
        topics = self._topics([text for _, _, text in rows])

        def insert(db) -> None:
            """One transaction; ids one more than the largest, taken under the write lock, so that ids grow in the
            order events are committed whichever replica writes them (kb/event_schema.py)."""
            with db.transaction(write=True):
                event_rollups.lock(db, WRITE_LOCK)
                first = (db.execute("SELECT max(id) FROM events").fetchone()[0] or 0) + 1
                db.executemany(INSERT, [(first + k, *values[:9], topic, *values[10:])
                                        for k, ((values, _, _), topic) in enumerate(zip(rows, topics))])
                db.executemany("INSERT INTO results VALUES (?, ?, ?, ?)",
                               [(first + k, *result) for k, (_, results, _) in enumerate(rows) for result in results])

        try:
            if rows:
                self._kept.write(insert)
        except self.database.errors as exc:  # a connection that cannot recover is reopened (kb/database.py)
            with self._cond:
                self._errors += len(rows)
            self.health.failed(exc)
            return
        with self._cond:
            self._written += len(rows)
            self.batches += 1
        self.health.succeeded()

    def _row(self, event: tuple) -> tuple[tuple, list[tuple], str | None]:
        """(events row, results rows, redacted text to embed as its topic or None) of a queued event."""
        if event[0] == "answer":
            (_, at, kind, source, answer_id, language, product, query, results, confidence, confident, latency,
             embedded) = event
            if kind not in ANSWER_KINDS:
                raise ValueError(f"not an answer kind: {kind!r}")
            text = redact(str(query or "")).strip()[:MAX_TEXT]
            topic = text
            if embedded and text == str(query or "").strip()[:MAX_TEXT] and redact(embedded) == embedded:
                topic = embedded.strip()[:MAX_TEXT]  # nothing to redact in either: the vector the answer computed
            ranked = [(position, _clip(aid, MAX_ID), float(score)) for position, (aid, score) in enumerate(results, 1)]
            values = (*stamp(at), kind, _clip(source, MAX_FIELD), _clip(answer_id, 64), _clip(language, MAX_FIELD),
                      _clip(product, MAX_FIELD), text if self.store_text else None, query_key(text), None,
                      None if confidence is None else float(confidence), None if confident is None else int(confident),
                      None if latency is None else round(float(latency), 3), len(ranked), None, None, None)
            return values, ranked, topic
        _, at, kind, source, answer_id, article_id, position, product, helpful = event
        if kind not in ACTIONS:
            raise ValueError(f"not an action: {kind!r}")
        values = (*stamp(at), kind, _clip(source, MAX_FIELD), _clip(answer_id, 64), None, _clip(product, MAX_FIELD),
                  None, None, None, None, None, None, None, _clip(article_id, MAX_ID),
                  None if position is None else int(position), None if helpful is None else int(bool(helpful)))
        return values, [], None

    def _topics(self, texts: list[str | None]) -> list[bytes | None]:
        """int8 topic vectors of the redacted answer texts (None for actions and empty texts), embedded in batches."""
        topics: list[bytes | None] = [None] * len(texts)
        wanted = [k for k, text in enumerate(texts) if text]
        if self.encoder is None or not wanted:
            return topics
        wanted.sort(key=lambda k: len(texts[k]))  # batches of similar length: little padding
        # beside the requests: a session of the encoder's own when it has one (kb/embedder.py), not the requests'
        encode = getattr(self.encoder, "encode_queries_beside", None) or self.encoder.encode_queries
        try:
            for lo in range(0, len(wanted), ENCODE_BATCH):
                chunk = wanted[lo:lo + ENCODE_BATCH]
                for k, blob in zip(chunk, quantise(encode([texts[k] for k in chunk]))):
                    topics[k] = blob
        except Exception as exc:  # noqa: BLE001 - events are still written, without topics
            self._say("encode", "topic vectors of analytics events could not be computed: %s", exc)
        return topics

    # ---- counting and saying ------------------------------------------------------------------------------
    def _count_error(self, what: str) -> None:
        with self._cond:
            self._errors += 1
        self._say(what, "an analytics event could not be recorded (%s)", what)

    def _say(self, what: str, message: str, *args: Any) -> None:
        """Log a problem once per kind (it may repeat on every batch)."""
        if what not in self._said:
            self._said.add(what)
            log.error(message, *args)
