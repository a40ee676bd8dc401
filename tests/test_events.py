"""The analytics event log (kb/events.py) and its routes: writer, queue, retention, text, sources, POST /api/events.
The log's own cases run on SQLite and on a real PostgreSQL (the `side_db` fixture), and so do replicas sharing one."""
import html
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from fastapi.testclient import TestClient

from indexer.build import build_index
from kb.database import Database, as_database
from kb.errors import BadRequest, StoreUnavailable
import kb.events as events_module
from kb.events import BATCH, WRITER_NICENESS, EventLog, query_key, quantise, stamp
from kb.feedback import FeedbackStore
from kb.keys import KeyStore
from kb.settings import load_settings
from search.app import create_app
from search.routes.events import event_source
from tests.conftest import TinyEncoder

TICKET_WORDS = ("quuxwobble", "Rina Wijaya", "0812-3456-7890", "rina@contoso.com")
TICKET = {"subject": "Outlook password quuxwobble",
          "body": "Hi Rina,\nOutlook keeps asking for my password after the quuxwobble update; mail to "
                  "rina@contoso.com bounces and error 0x8004010F shows. Call me on 0812-3456-7890.\n"
                  "Thanks,\nRina Wijaya"}


def settings_for(tmp_path, db: Database | None = None, **extra):
    """Settings with every side store in tmp_path, or in `db` when it is a PostgreSQL database (KB_DATABASE_URL)."""
    values = {"analytics_db": tmp_path / "analytics.sqlite", "feedback_db": tmp_path / "feedback.sqlite",
              "usage_db": tmp_path / "usage.sqlite", "auth_db": tmp_path / "auth.sqlite",
              "webhook_db": tmp_path / "webhooks.sqlite", "reload_poll_seconds": 0, **extra}
    if db is not None and db.engine == "postgres":
        values["database_url"] = db.target
    elif db is not None:
        values["analytics_db"] = db.path
    return load_settings({}, **values)


def rows(where, sql="SELECT * FROM events ORDER BY id", args=()):
    """Rows of the event log (a SQLite file or a Database) as dicts, read on a connection of their own."""
    conn = as_database(where, "KB_ANALYTICS_DB", 10).connect()
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


@pytest.fixture
def log_(tmp_path, side_db):
    """An EventLog on each engine (the analytics tables in tmp_path/analytics.sqlite or a fresh PostgreSQL)."""
    log = EventLog(settings_for(tmp_path, side_db("analytics")), TinyEncoder())
    yield log
    log.close()


# ---- the log itself ----------------------------------------------------------------------------------------

def test_answer_and_action_are_written_redacted_with_key_topic_and_results(log_, tmp_path):
    log_.start()
    assert log_.record_answer("suggest", "webhook:zendesk", "0123456789abcdef",
                              "Outlook fails for rina@contoso.com, call 0812-3456-7890, error 0x8004010F",
                              [("Outlook/a", 0.91), ("Outlook/b", 0.5)], language="en", confidence=0.8,
                              confident=True, latency_ms=12.3456)
    assert log_.record_action("open", "page", "Outlook/a", "0123456789abcdef", 1, "Outlook")
    assert log_.flush(10)
    answer, action = rows(log_.database)
    redacted = "Outlook fails for [email], call [phone], error 0x8004010F"
    assert answer["query"] == redacted and answer["query_key"] == query_key(redacted)
    assert (answer["kind"], answer["source"], answer["answer_id"], answer["language"]) == \
        ("suggest", "webhook:zendesk", "0123456789abcdef", "en")
    assert (answer["confidence"], answer["confident"], answer["latency_ms"], answer["result_count"]) == \
        (0.8, 1, 12.346, 2)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", answer["at"]) and answer["day"] == answer["at"][:10]
    vector = np.frombuffer(answer["topic_vector"], dtype=np.int8)
    expected = TinyEncoder().encode_queries([redacted])[0]
    assert vector.shape == (64,) and np.allclose(vector / 127, expected, atol=1 / 127)
    assert rows(log_.database, "SELECT position, article_id, score FROM results ORDER BY position") \
        == [{"position": 1, "article_id": "Outlook/a", "score": 0.91}, {"position": 2, "article_id": "Outlook/b",
                                                                          "score": 0.5}]
    assert (action["kind"], action["article_id"], action["position"], action["product"], action["query"],
            action["topic_vector"]) == ("open", "Outlook/a", 1, "Outlook", None, None)
    assert log_.stats() == {"queued": 0, "dropped": 0, "written": 2, "errors": 0}


def test_the_writer_thread_runs_at_a_lower_priority_than_the_requests(log_):
    log_.start()
    assert log_.flush(10)
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert os.getpriority(os.PRIO_PROCESS, log_._thread.native_id) == min(19, base + WRITER_NICENESS)


def test_writer_batches_up_to_500_events_a_transaction(log_, tmp_path):
    for n in range(1200):  # all queued before the writer starts: it must take them 500 at a time
        assert log_.record_action("copy", "page", f"A/{n}")
    log_.start()
    assert log_.flush(30)
    assert BATCH == 500 and log_.batches == 3
    assert log_.stats()["written"] == 1200
    assert len(rows(log_.database)) == 1200
    assert [r["id"] for r in rows(log_.database)] == list(range(1, 1201))


class StuckEncoder(TinyEncoder):
    """An encoder that blocks until released: the writer hangs in its first batch."""

    def __init__(self):
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def encode_queries(self, texts):
        self.entered.set()
        self.release.wait(30)
        return super().encode_queries(texts)


def test_a_full_queue_drops_and_counts_and_never_blocks(tmp_path):
    encoder = StuckEncoder()
    log = EventLog(settings_for(tmp_path, analytics_queue_size=10), encoder)
    log.start()
    try:
        log.record_answer("search", "page", "0123456789abcdef", "outlook", [])
        assert encoder.entered.wait(10)  # the writer holds that one event, stuck
        slowest = 0.0
        for n in range(100):
            started = time.perf_counter()
            log.record_answer("search", "page", None, f"query {n}", [("A/b", 1.0)])
            slowest = max(slowest, time.perf_counter() - started)
        assert slowest < 0.05
        assert log.stats() == {"queued": 10, "dropped": 90, "written": 0, "errors": 0}
    finally:
        encoder.release.set()
    assert log.flush(10)
    assert log.stats() == {"queued": 0, "dropped": 90, "written": 11, "errors": 0}
    log.close()


def test_recording_never_raises_and_a_malformed_event_is_counted(log_, tmp_path):
    assert log_.record_answer("search", "page", None, "q", results=None) is False  # not iterable: never queued
    assert log_.record_answer("search", "page", None, "q", results=[("only-an-id",)]) is True  # fails in the writer
    assert log_.record_action("explode", "page", "A/b") is True                              # not an action
    assert log_.record_action("copy", "page", "A/b") is True
    log_.start()
    assert log_.flush(10)
    assert log_.stats() == {"queued": 0, "dropped": 0, "written": 1, "errors": 3}
    assert [r["kind"] for r in rows(log_.database)] == ["copy"]


def test_no_text_at_all_when_store_text_is_false(tmp_path, side_db):
    db = side_db("analytics")
    log = EventLog(settings_for(tmp_path, db, analytics_store_text=False), TinyEncoder())
    secret = "zebracorn mailbox quota for budi.santoso@example.com"
    log.record_answer("suggest", "widget", "0123456789abcdef", secret, [("Outlook/a", 0.7)])
    log.start()
    assert log.flush(10)
    (row,) = rows(db)
    assert row["query"] is None and row["query_key"] == query_key("zebracorn mailbox quota for [email]")
    assert row["topic_vector"] is not None  # topics are computed at write time, from the redacted text
    if db.engine == "sqlite":
        raw = b"".join(p.read_bytes() for p in tmp_path.glob(f"{db.path.name}*"))
        assert any(p.name.endswith("-wal") for p in tmp_path.glob(f"{db.path.name}*"))  # the WAL was read too
    else:  # every text column of every table of the database, as PostgreSQL prints it
        conn = db.connect()
        tables = [t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        raw = "".join(str(tuple(r)) for t in tables for r in conn.execute(f"SELECT * FROM {t}")).encode()
        conn.close()
    for word in ("zebracorn", "budi.santoso", "[email]", "mailbox quota"):
        assert word.encode() not in raw
    log.close()


def test_retention_deletes_old_events_results_and_feedback_at_start(tmp_path, side_db):
    db = side_db("analytics")
    settings = settings_for(tmp_path, db, analytics_retention_days=30)
    old, recent = stamp(time.time() - 31 * 86400)[0], stamp(time.time() - 29 * 86400)[0]
    log = EventLog(settings, None)
    log.start()  # creates the tables; nothing old yet
    assert log.flush(10)
    log.close()
    conn = db.connect()
    for n, at in enumerate((old, recent, old)):
        conn.execute("INSERT INTO events (id, at, day, kind, source) VALUES (?, ?, ?, 'search', 'page')",
                     (n + 1, at, at[:10]))
        conn.execute("INSERT INTO results VALUES (?, 1, 'A/b', 0.5)", (n + 1,))
    feedback = FeedbackStore(side_db("feedback") if db.engine == "postgres" else settings.feedback_db)
    feedback.record("new words", "Outlook/a", True)
    feedback_conn = feedback.database.connect()
    feedback_conn.execute("INSERT INTO feedback (created, query, article_id, helpful, source) VALUES (?, 'old', "
                          "'A/b', 1, 'search')",
                          ((datetime.now(timezone.utc) - timedelta(days=31)).isoformat(timespec="milliseconds"),))
    feedback_conn.close()
    conn.close()
    log = EventLog(settings, None)
    log.start()
    assert log.flush(10)  # waits for the start-up retention run
    log.close()
    assert [r["id"] for r in rows(db)] == [2]
    assert [r["event_id"] for r in rows(db, "SELECT event_id FROM results")] == [2]
    assert [r["query"] for r in feedback.recent()] == ["new words"]
    feedback.close()


def test_retention_of_events_runs_when_the_feedback_file_cannot_be_written(tmp_path):
    from tests.faults import read_only

    settings = settings_for(tmp_path, analytics_db=tmp_path / "a" / "analytics.sqlite",
                            feedback_db=tmp_path / "f" / "feedback.sqlite", analytics_retention_days=30)
    FeedbackStore(settings.feedback_db).close()
    log = EventLog(settings, None)
    log.start()
    assert log.record_action("copy", "page", "A/b") and log.flush(10)
    log.close()
    old = (datetime.now(timezone.utc) - timedelta(days=31)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    with sqlite3.connect(settings.analytics_db) as db:
        db.execute("UPDATE events SET at = ?", (old,))
    with read_only(settings.feedback_db):
        with pytest.raises(StoreUnavailable) as info:
            EventLog(settings, None).purge()
    assert rows(settings.analytics_db) == []  # the events went all the same
    assert "feedback in" in info.value.message and "KB_FEEDBACK_DB" in info.value.message
    assert "events in" not in info.value.message


def test_retention_runs_daily(tmp_path, monkeypatch):
    log = EventLog(settings_for(tmp_path), None)
    runs = []
    monkeypatch.setattr(log, "purge", lambda: runs.append(1))
    log.start()
    assert log.flush(10) and runs == [1]
    log._next_purge = time.monotonic()  # a day later
    log.record_action("copy", "page", "A/b")
    assert log.flush(10)
    deadline = time.monotonic() + 10
    while runs != [1, 1] and time.monotonic() < deadline:  # checked at the top of the writer's next loop
        time.sleep(0.05)
    assert runs == [1, 1] and log._next_purge > time.monotonic() + 86000
    log.close()


def test_retention_must_be_a_day_or_more(tmp_path):
    with pytest.raises(BadRequest, match="KB_ANALYTICS_RETENTION_DAYS"):
        EventLog(settings_for(tmp_path, analytics_retention_days=0))


def test_an_unwritable_file_is_logged_once_and_counted(tmp_path, caplog):
    (tmp_path / "blocker").write_text("a file where the folder should be")
    log = EventLog(settings_for(tmp_path, analytics_db=tmp_path / "blocker" / "analytics.sqlite"), None)
    with caplog.at_level(logging.ERROR, logger="kb.events"):
        log.start()
        for _ in range(3):
            assert log.record_action("copy", "page", "A/b")
            assert log.flush(10)
    assert log.stats() == {"queued": 0, "dropped": 0, "written": 0, "errors": 3}
    said = [r.getMessage() for r in caplog.records if r.name == "kb.events"]
    assert len(said) == 1 and "cannot be written" in said[0] and "blocker" in said[0]
    log.close()


def test_an_unwritable_log_refuses_post_events_for_a_while_and_says_when_it_writes_again(tmp_path, caplog,
                                                                                         monkeypatch):
    (tmp_path / "blocker").write_text("a file where the folder should be")
    log = EventLog(settings_for(tmp_path, analytics_db=tmp_path / "blocker" / "analytics.sqlite"), None)
    with caplog.at_level(logging.INFO, logger="kb.events"):
        log.start()
        assert log.flush(10) and log.health.failing  # the file cannot even be created: said at start
        refusal = log.unavailable()
        assert refusal.status == 503 and refusal.code == "store_unavailable" and "KB_ANALYTICS_DB" in refusal.message
        monkeypatch.setattr(events_module, "REFUSE_SECONDS", 0.0)
        assert log.unavailable() is None  # after REFUSE_SECONDS one event is let through, to find out
        (tmp_path / "blocker").unlink()  # the operator fixes the disk
        assert log.record_action("copy", "page", "A/b") and log.flush(10)
        assert not log.health.failing and log.stats()["written"] == 1 and log.unavailable() is None
    lines = [r.getMessage() for r in caplog.records if r.name == "kb.events"]
    assert len(lines) == 2 and "cannot be written" in lines[0] and "written again" in lines[1], lines
    log.close()


def test_post_events_is_a_503_while_the_log_cannot_write_and_searches_go_on(service):
    client, settings = service
    article = client.get("/api/search", params={"q": "outlook password"}).json()["results"][0]["id"]
    events = client.app.state.kb.events
    assert events.flush(10)  # the search's event written first: its success would clear the failure below
    events.health.failed(sqlite3.OperationalError("database or disk is full"))  # as the writer finds it
    response = client.post("/api/events", json={"kind": "copy", "article_id": article, "source": "page"})
    assert response.status_code == 503 and response.headers["retry-after"] == "30"
    assert response.json()["error"]["code"] == "store_unavailable"
    assert "disk is full" in response.json()["error"]["message"]
    assert client.get("/api/search", params={"q": "outlook password"}).status_code == 200
    assert client.post("/api/suggest", json=TICKET).status_code == 200
    events.health.succeeded()
    assert client.post("/api/events", json={"kind": "copy", "article_id": article, "source": "page"}).status_code == 202


def test_close_writes_what_is_queued(tmp_path, side_db):
    log = EventLog(settings_for(tmp_path, side_db("analytics")), None)
    for _ in range(5):
        log.record_action("link", "widget", "A/b")
    log.start()
    log.close()
    assert len(rows(log.database)) == 5


REPLICA = r"""
import sys
from kb.events import EventLog
from kb.settings import load_settings
from tests.conftest import TinyEncoder

name, url, folder = sys.argv[1:4]
log = EventLog(load_settings({}, database_url=url, analytics_db=f"{folder}/{name}.sqlite",
                             feedback_db=f"{folder}/{name}-feedback.sqlite"), TinyEncoder())
log.start()
print("ready", flush=True)
sys.stdin.readline()  # the go: both replicas write at once
for n in range(300):
    log.record_answer("search", f"api:{name}", f"{name}-{n}", f"outlook password {n % 7}", [("Outlook/a", 0.9)],
                      "en", None, 0.9, True, 10.0 + n % 5)
    log.record_action("open", "page", "Outlook/a", f"{name}-{n}", 1, "Outlook")
assert log.flush(60)
log.close()
print(log.stats()["written"], flush=True)
"""


def test_replicas_write_one_postgres_and_any_report_sees_both(postgres_server, tmp_path):
    """Two service processes (replicas) write their events into one PostgreSQL at the same moment: no id is taken
    twice, ids grow in commit order, and a report from either side counts every event; no SQLite file appears."""
    from search.reports import Reports, parse_filters
    from tests.conftest import REPO, release_together, stop_process

    url = postgres_server.create_database()
    procs = [subprocess.Popen([sys.executable, "-c", REPLICA, name, url, str(tmp_path)], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("one", "two")]
    try:
        release_together(procs)
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            assert out.split() == ["600"]
    finally:
        for proc in procs:
            stop_process(proc, signal.SIGKILL)
    written = rows(Database.postgres(url), "SELECT id, source FROM events ORDER BY id")
    assert [r["id"] for r in written] == list(range(1, 1201))
    assert {r["source"] for r in written} == {"api:one", "api:two", "page"}
    today = datetime.now(timezone.utc).date()
    summary = Reports(Database.postgres(url)).summary(parse_filters(today.isoformat(), today.isoformat()))
    assert summary["totals"]["searches"] == 600 and summary["latency_ms"]["search"]["count"] == 600
    assert {s["source"]: s["searches"] for s in summary["sources"]} == {"api:one": 300, "api:two": 300}
    queries = Reports(Database.postgres(url)).queries(parse_filters(today.isoformat(), today.isoformat()))
    assert queries["answers"] == 600 and queries["distinct_queries"] == 7
    assert list(tmp_path.glob("*.sqlite")) == []


def test_a_read_only_or_unreachable_postgres_never_fails_a_request(postgres_server, tmp_path, caplog):
    """A failover (the database turned read-only): recording never raises or waits, the writer counts its errors
    and says so once, POST /api/events gets its 503 naming KB_DATABASE_URL, reports still read; written again once
    the database is. A server out of reach: the same, and the reports are a 503."""
    from search.reports import EventLogUnreadable, Reports, parse_filters
    from tests.postgres import ReadOnly

    url = postgres_server.create_database()
    log = EventLog(settings_for(tmp_path, Database.postgres(url)), None)
    with caplog.at_level(logging.INFO, logger="kb.events"):
        log.start()
        assert log.record_action("copy", "page", "A/b") and log.flush(10)
        fault = ReadOnly(postgres_server, url)
        for _ in range(3):
            started = time.perf_counter()
            assert log.record_action("copy", "page", "A/b")
            assert time.perf_counter() - started < 0.05
            assert log.flush(20)
        assert log.health.failing and log.stats()["errors"] == 3
        refusal = log.unavailable()
        assert refusal.status == 503 and "KB_DATABASE_URL" in refusal.message
        today = parse_filters(*[datetime.now(timezone.utc).date().isoformat()] * 2)
        reports = Reports(Database.postgres(url))  # read on a read-only database: but for a product filter, whose
        assert reports.articles(today)["articles"][0]["copied"] == 1  # temporary tables it cannot create
        assert reports.summary(today)["totals"]["answers"] == 0 and reports.gaps(today)["gap_events"] == 0
        with pytest.raises(EventLogUnreadable):
            reports.articles(parse_filters(today.since.isoformat(), product="Outlook"))
        fault.release()
        assert log.record_action("copy", "page", "A/b") and log.flush(20)
        assert not log.health.failing and log.stats()["written"] == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "kb.events"]
    assert len(lines) == 2 and "analytics store cannot be written: KB_DATABASE_URL=" in lines[0], lines
    assert "written again" in lines[1]
    log.close()

    gone = "postgresql://kb@/kb?host=/nonexistent/socket/dir"
    log = EventLog(settings_for(tmp_path, Database.postgres(gone)), None)
    log.start()
    assert log.record_action("copy", "page", "A/b") and log.flush(20)
    assert log.stats()["errors"] == 1 and log.unavailable().status == 503
    log.close()
    with pytest.raises(EventLogUnreadable) as info:
        Reports(Database.postgres(gone)).summary(parse_filters())
    assert info.value.status == 503 and "KB_DATABASE_URL" in info.value.message


def test_quantise_is_int8_scaled_by_127():
    blob = quantise(np.array([[1.0, -1.0, 0.5, 0.0]], dtype=np.float32))[0]
    assert np.frombuffer(blob, dtype=np.int8).tolist() == [127, -127, 64, 0]


# ---- through the service -------------------------------------------------------------------------------------

@pytest.fixture
def service(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(tmp_path, content_dir=content_copy, index_dir=tmp_path / "index")
    build_index(settings, tiny_encoder, progress=False)
    with TestClient(create_app(settings, encoder=tiny_encoder), raise_server_exceptions=False) as client:
        yield client, settings


def events_of(client, settings, kind=None):
    assert client.app.state.kb.events.flush(10)
    found = rows(settings.analytics_db)
    return [r for r in found if kind is None or r["kind"] == kind]


def test_every_answer_route_records_its_source_and_returns_its_answer_id(service):
    client, settings = service
    calls = [
        (client.get("/api/search", params={"q": "outlook password", "product": "Outlook"}), "search", "api:open"),
        (client.get("/api/search", params={"q": "outlook password"}, headers={"X-KB-Source": "widget"}),
         "search", "widget"),
        (client.post("/api/suggest", json=TICKET, headers={"X-KB-Source": "cli"}), "suggest", "api:open"),
        (client.post("/api/suggest", json=TICKET, headers={"X-KB-Source": "Widget"}), "suggest", "widget"),
        (client.post("/api/webhooks/zendesk", json={"ticket": {"id": "7", "subject": TICKET["subject"],
                                                               "description": TICKET["body"]}}),
         "suggest", "webhook:zendesk"),
        (client.post("/api/webhooks/freshdesk", json={"ticket_id": 8, "subject": TICKET["subject"],
                                                      "description": TICKET["body"]}), "suggest", "webhook:freshdesk"),
        (client.post("/api/webhooks/generic", json={"id": "9", "subject": TICKET["subject"], "body": TICKET["body"]}),
         "suggest", "webhook:generic"),
    ]
    ids = []
    for response, _, _ in calls:
        assert response.status_code == 200, response.text
        ids.append(response.json()["answer_id"])
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids) and len(set(ids)) == len(ids)
    page = client.get("/", params={"q": "teams microphone"}, headers={"X-KB-Source": "widget"})
    posted = client.post("/suggest", data=TICKET)
    assert page.status_code == posted.status_code == 200
    recorded = events_of(client, settings)
    assert [(r["kind"], r["source"], r["answer_id"]) for r in recorded] == \
        [(kind, source, i) for (_, kind, source), i in zip(calls, ids)] + \
        [("search", "page", recorded[-2]["answer_id"]), ("suggest", "page", recorded[-1]["answer_id"])]
    first = recorded[0]
    assert first["product"] == "Outlook" and first["query"] == "outlook password" and first["language"] == "en"
    assert first["result_count"] == len(calls[0][0].json()["results"]) and first["latency_ms"] > 0
    assert first["confidence"] == calls[0][0].json()["confidence"]
    results = rows(settings.analytics_db, "SELECT article_id, score FROM results WHERE event_id = ? ORDER BY position",
                   (first["id"],))
    assert [(r["article_id"], r["score"]) for r in results] == \
        [(hit["id"], hit["score"]) for hit in calls[0][0].json()["results"]]
    for row in recorded[2:]:  # suggestions: the cleaned query, redacted; never the ticket's own words and people
        if row["kind"] == "suggest":
            assert "quuxwobble" in row["query"] and "0x8004010F" in row["query"]
            assert not any(w in row["query"] for w in TICKET_WORDS[1:]) and "Rina" not in row["query"]


def test_a_key_is_recorded_by_its_name(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(tmp_path, content_dir=content_copy, index_dir=tmp_path / "index", auth="required")
    build_index(settings, tiny_encoder, progress=False)
    _, secret = KeyStore(settings.auth_db).create("zendesk-prod", ["search", "suggest", "feedback"])
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        headers = {"X-API-Key": secret}
        assert client.get("/api/search", params={"q": "outlook"}, headers=headers).status_code == 200
        assert client.post("/api/suggest", json=TICKET, headers={**headers, "X-KB-Source": "api:forged"}
                           ).status_code == 200
        assert [r["source"] for r in events_of(client, settings)] == ["api:zendesk-prod", "api:zendesk-prod"]


def test_a_replayed_webhook_keeps_its_answer_id_and_records_once(service):
    client, settings = service
    body = {"ticket": {"id": "42", "subject": TICKET["subject"], "description": TICKET["body"]}}
    first, again = (client.post("/api/webhooks/zendesk", json=body) for _ in range(2))
    assert again.headers["X-KB-Replayed"] == "true"
    assert first.json()["answer_id"] == again.json()["answer_id"]
    assert len(events_of(client, settings, "suggest")) == 1


def test_post_events_records_actions(service):
    client, settings = service
    answer = client.post("/api/suggest", json=TICKET).json()
    article = answer["articles"][0]["id"]
    for kind, source in (("open", "widget"), ("copy", "page"), ("insert", "widget"), ("link", "widget")):
        response = client.post("/api/events", json={"kind": kind, "answer_id": answer["answer_id"],
                                                    "article_id": article, "position": 1, "source": source})
        assert response.status_code == 202 and response.json() == {"recorded": True}
    assert client.post("/api/events", json={"kind": "copy", "article_id": article, "source": "page"}).status_code == 202
    actions = [r for r in events_of(client, settings) if r["kind"] != "suggest"]
    assert [(r["kind"], r["source"], r["answer_id"], r["position"], r["article_id"]) for r in actions] == [
        ("open", "widget", answer["answer_id"], 1, article), ("copy", "page", answer["answer_id"], 1, article),
        ("insert", "widget", answer["answer_id"], 1, article), ("link", "widget", answer["answer_id"], 1, article),
        ("copy", "page", None, None, article)]
    assert actions[0]["product"] == client.get(f"/api/articles/{article}").json()["product"]


@pytest.mark.parametrize("body, status, code", [
    ({"kind": "open", "article_id": "Outlook/no-such-article", "source": "page"}, 404, "article_not_found"),
    ({"kind": "open", "article_id": "../../etc/passwd", "source": "page"}, 404, "article_not_found"),
    ({"kind": "feedback", "article_id": "Outlook/outlook-password-prompt", "source": "page"}, 422, "invalid_request"),
    ({"kind": "print", "article_id": "Outlook/outlook-password-prompt", "source": "page"}, 422, "invalid_request"),
    ({"kind": "open", "article_id": "Outlook/outlook-password-prompt", "source": "api"}, 422, "invalid_request"),
    ({"kind": "open", "article_id": "Outlook/outlook-password-prompt"}, 422, "invalid_request"),
    ({"kind": "open", "source": "page"}, 422, "invalid_request"),
    ({"kind": "open", "article_id": "Outlook/outlook-password-prompt", "source": "page", "position": 0}, 400,
     "bad_request"),
    ({"kind": "open", "article_id": "Outlook/outlook-password-prompt", "source": "page", "position": 101}, 400,
     "bad_request"),
    ({"kind": "open", "article_id": "Outlook/outlook-password-prompt", "source": "page", "position": "1"}, 422,
     "invalid_request"),
    ({"kind": "open", "article_id": "Outlook/outlook-password-prompt", "source": "page", "answer_id": "rina@x.com"},
     400, "bad_request"),
    ({"kind": "open", "article_id": "x" * 1001, "source": "page"}, 422, "invalid_request"),
    (["not", "an", "object"], 422, "invalid_request"),
])
def test_post_events_validation(service, body, status, code):
    client, settings = service
    response = client.post("/api/events", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert events_of(client, settings) == []


def test_post_events_malformed_json_is_400(service):
    client, _ = service
    response = client.post("/api/events", content=b"{kind", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_json"


def test_an_internal_article_is_not_found_for_a_key_without_internal(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(tmp_path, content_dir=content_copy, index_dir=tmp_path / "index", auth="required")
    build_index(settings, tiny_encoder, progress=False)
    store = KeyStore(settings.auth_db)
    _, plain = store.create("widget", ["suggest", "feedback"])
    _, inner = store.create("inner", ["feedback", "internal"])
    body = {"kind": "open", "article_id": "internal/escalation-policy", "source": "widget"}
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        assert client.post("/api/events", json=body, headers={"X-API-Key": plain}).status_code == 404
        assert client.post("/api/events", json=body, headers={"X-API-Key": inner}).status_code == 202
        _, search_only = store.create("reader", ["search"])
        assert client.post("/api/events", json=body, headers={"X-API-Key": search_only}).status_code == 403


def test_feedback_records_an_event_and_accepts_an_answer_id_instead_of_the_query(service):
    client, settings = service
    answer = client.post("/api/suggest", json=TICKET).json()
    article = answer["articles"][0]["id"]
    response = client.post("/api/feedback", json={"answer_id": answer["answer_id"], "article_id": article,
                                                  "helpful": False, "source": "suggest"},
                           headers={"X-KB-Source": "widget"})
    assert response.status_code == 201, response.text
    form = client.post("/feedback", data={"answer_id": answer["answer_id"], "article_id": article, "helpful": "yes",
                                          "source": "suggest"}, follow_redirects=False)
    assert form.status_code == 303
    old_style = client.post("/api/feedback", json={"query": "call rina@contoso.com", "article_id": article,
                                                   "helpful": True})
    assert old_style.status_code == 201
    bad = client.post("/api/feedback", json={"answer_id": "not-an-id", "article_id": article, "helpful": True,
                                             "source": "suggest"})
    assert bad.status_code == 400
    feedback = [(r["kind"], r["source"], r["answer_id"], r["helpful"], r["article_id"])
                for r in events_of(client, settings, "feedback")]
    assert feedback == [("feedback", "widget", answer["answer_id"], 0, article),
                        ("feedback", "page", answer["answer_id"], 1, article),
                        ("feedback", "api:open", None, 1, article)]
    stored = [r["query"] for r in client.app.state.kb.feedback.recent()]
    assert stored == ["call [email]", "", ""]


def test_feedback_stores_no_query_when_text_is_off(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(tmp_path, content_dir=content_copy, index_dir=tmp_path / "index",
                            analytics_store_text=False)
    build_index(settings, tiny_encoder, progress=False)
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        assert client.post("/api/feedback", json={"query": "outlook zebracorn",
                                                  "article_id": "Outlook/outlook-password-prompt",
                                                  "helpful": True}).status_code == 201
        assert client.app.state.kb.feedback.recent()[0]["query"] == ""


# ---- the /suggest page: no ticket text in URLs or forms; opens recorded from ?from=&pos= --------------------------

def links_and_fields(page: str) -> list[str]:
    """Every link and form target, and every hidden field as name=value, unescaped."""
    hrefs = re.findall(r'(?:href|action)="([^"]*)"', page)
    hidden = re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)"', page)
    return [html.unescape(v) for v in hrefs + [f"{name}={value}" for name, value in hidden]]


def test_the_suggest_page_puts_no_ticket_text_in_links_or_forms(service):
    client, settings = service
    response = client.post("/suggest", data=TICKET)
    assert response.status_code == 200
    answer_id = events_of(client, settings, "suggest")[0]["answer_id"]
    html = response.text
    results = html[html.index('id="answers-heading"'):]  # the form above still holds what the agent pasted
    values = links_and_fields(results)
    article_links = [v for v in values if "/articles/" in v]
    assert article_links and all(f"from={answer_id}" in v and "&pos=" in v for v in article_links)
    assert any(v == f"answer_id={answer_id}" for v in values)
    cleaned = client.post("/api/suggest", json=TICKET).json()["query"]["text"]
    for value in values:
        assert "q=" not in value and "query=" not in value
        for word in (*TICKET_WORDS, "Outlook password", cleaned[:20], "keeps asking"):
            assert word.lower() not in value.lower(), value
    for link in article_links:
        assert set(parse_qs(urlsplit(link).query)) == {"from", "pos"}


def test_opening_an_article_from_a_result_records_open_with_its_position(service):
    client, settings = service
    client.post("/suggest", data=TICKET)
    html = client.post("/suggest", data=TICKET).text
    answer_id = events_of(client, settings, "suggest")[-1]["answer_id"]
    link = re.search(r'<h3><a href="(/articles/[^"]+)"', html)[1].replace("&amp;", "&")
    page = client.get(link)
    assert page.status_code == 200
    assert f'data-answer-id="{answer_id}"' in page.text and 'data-position="1"' in page.text
    assert f'name="answer_id" value="{answer_id}"' in page.text
    switches = re.findall(r'href="(\?[^"]*lang=[^"]*)"', page.text)
    assert switches and not any("from=" in s or "pos=" in s for s in switches)  # switching language opens nothing
    assert client.get(link.split("?")[0]).status_code == 200                       # no from: not recorded
    assert client.get(link.split("?")[0] + "?from=nothex&pos=2").status_code == 200  # not an answer id: neither
    assert client.get(link.split("?")[0] + f"?from={answer_id}&pos=500").status_code == 200
    opens = events_of(client, settings, "open")
    article = urlsplit(link).path.removeprefix("/articles/")
    assert [(r["source"], r["answer_id"], r["position"], r["article_id"]) for r in opens] == \
        [("page", answer_id, 1, article), ("page", answer_id, None, article)]


def test_search_page_links_keep_the_agents_words_and_add_the_answer(service):
    client, settings = service
    html = client.get("/", params={"q": "teams microphone"}).text
    answer_id = events_of(client, settings, "search")[0]["answer_id"]
    link = re.search(r'<h3 id="result-1"><a href="([^"]+)"', html)[1].replace("&amp;", "&")
    assert parse_qs(urlsplit(link).query) == {"q": ["teams microphone"], "from": [answer_id], "pos": ["1"]}


def test_event_source_ignores_unknown_client_claims():
    class Request:
        def __init__(self, header):
            self.headers = {"x-kb-source": header} if header is not None else {}
            self.state = type("State", (), {})()

    assert event_source(Request("widget")) == "widget" and event_source(Request(" PAGE ")) == "page"
    assert event_source(Request("webhook:zendesk")) == "api:open" and event_source(Request(None)) == "api:open"
    assert event_source(Request("widget"), "webhook:freshdesk") == "webhook:freshdesk"


def test_the_topic_vector_is_the_searchs_own_when_redaction_changed_nothing(service):
    client, settings = service
    queries = client.app.state.kb.queries
    before = queries.hits, queries.misses
    client.get("/api/search", params={"q": "teams microphone muted"})
    client.get("/api/search", params={"q": "teams microphone call 0812-3456-7890"})
    rows_ = events_of(client, settings, "search")
    assert [r["query"] for r in rows_] == ["teams microphone muted", "teams microphone call [phone]"]
    # two searches embedded their words; the writer reused the first vector and embedded the redacted second text
    assert (queries.hits - before[0], queries.misses - before[1]) == (1, 3)
    for row in rows_:  # each the int8 embedding of the text stored, however it was obtained
        expected = np.frombuffer(quantise(TinyEncoder().encode_queries([row["query"]]))[0], dtype=np.int8)
        assert np.array_equal(np.frombuffer(row["topic_vector"], dtype=np.int8), expected)


def test_an_indonesian_searchs_topic_is_the_rendering_it_embedded(service):
    """The search embeds the English rendering of Indonesian words: the writer takes that vector (no second run of
    the model beside the requests), unless redaction changes the words; the stored query stays the agent's."""
    client, settings = service
    queries = client.app.state.kb.queries
    words = "outlook minta kata sandi terus"
    answer = client.get("/api/search", params={"q": words}).json()
    rendering = answer["searched_as"]
    assert answer["query"] == words and rendering and rendering != words
    assert client.get("/api/search", params={"q": "outlook password"}).json()["searched_as"] is None
    assert client.app.state.kb.events.flush(10)
    before = queries.hits, queries.misses
    client.get("/api/search", params={"q": "teams rapat tidak ada suara"})
    client.get("/api/search", params={"q": "teams rapat tidak ada suara, hubungi 0812-3456-7890"})
    rows_ = events_of(client, settings, "search")
    assert [r["query"] for r in rows_] == [words, "outlook password", "teams rapat tidak ada suara",
                                           "teams rapat tidak ada suara, hubungi [phone]"]
    # each search embedded its rendering and its own words (the content holds Indonesian articles): 4 misses; the
    # writer reused the first rendering (1 hit) and embedded the second's redacted words (1 miss)
    assert (queries.hits - before[0], queries.misses - before[1]) == (1, 5)
    topics = [np.frombuffer(r["topic_vector"], dtype=np.int8) for r in rows_]
    expected = quantise(TinyEncoder().encode_queries([rendering, "outlook password", rows_[3]["query"]]))
    assert [np.array_equal(t, np.frombuffer(e, dtype=np.int8)) for t, e in zip(topics[:2] + topics[3:], expected)] \
        == [True, True, True]


def test_stats_are_what_metrics_read(service):
    client, _ = service
    client.get("/api/search", params={"q": "outlook"})
    stats = client.app.state.kb.events.stats()
    assert set(stats) == {"queued", "dropped", "written", "errors"} and json.dumps(stats)
