"""Feedback: the store (record, summary, recent, validation, threads) on SQLite and on a real PostgreSQL (the
`side_db` fixture), and its HTTP routes."""
from __future__ import annotations

import logging
import sqlite3
import threading
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kb.errors import BadRequest
from kb.feedback import FeedbackStore
from kb.settings import load_settings
from search.app import install_error_handlers
from search.routes import feedback as feedback_routes


@pytest.fixture
def store(tmp_path) -> FeedbackStore:
    return FeedbackStore(tmp_path / "var" / "feedback.sqlite")


@pytest.fixture
def stores(side_db) -> FeedbackStore:
    """The store on each engine (the contract cases below run on both)."""
    store = FeedbackStore(side_db("feedback"))
    yield store
    store.close()


# ---- store -----------------------------------------------------------------------------------

def test_record_writes_a_row_to_disk(stores):
    store = stores
    first = store.record("outlook password", "Outlook/outlook-password-prompt", True, passage_id="p1",
                         source="search", index_version="v1")
    second = store.record("outlook password", "Outlook/outlook-password-prompt", False)
    assert second == first + 1
    if store.database.engine == "sqlite":
        with sqlite3.connect(store.database.path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn = store.database.connect()  # another connection: the row is committed
    row = conn.execute("SELECT created, query, article_id, passage_id, helpful, source, index_version "
                       "FROM feedback WHERE id = ?", (first,)).fetchone()
    conn.close()
    created, *rest = row
    assert rest == ["outlook password", "Outlook/outlook-password-prompt", "p1", 1, "search", "v1"]
    assert created.endswith("+00:00") and created[:4].isdigit()


def test_summary_counts_per_article(stores):
    store = stores
    for helpful in (True, True, False):
        store.record("q", "Outlook/a", helpful)
    store.record("q", "Teams/b", False, source="suggest")
    store.record("", "Gone/removed-article", True, source="article")  # unknown ids are fine to record
    summary = store.summary()
    assert (summary["total"], summary["helpful"], summary["not_helpful"]) == (5, 3, 2)
    by_id = {a["article_id"]: a for a in summary["articles"]}
    assert by_id["Outlook/a"] == {"article_id": "Outlook/a", "helpful": 2, "not_helpful": 1, "total": 3}
    assert by_id["Teams/b"]["not_helpful"] == 1 and summary["articles"][0]["article_id"] == "Outlook/a"


def test_empty_summary(stores):
    store = stores
    assert store.summary() == {"total": 0, "helpful": 0, "not_helpful": 0, "article_count": 0, "limit": 100,
                               "offset": 0, "next_offset": None, "articles": []}


def test_recent_is_newest_first(stores):
    store = stores
    ids = [store.record(f"q{i}", "Outlook/a", i % 2 == 0) for i in range(5)]
    recent = store.recent(3)
    assert [r["id"] for r in recent] == ids[:1:-1] and recent[0]["helpful"] is True
    assert set(recent[0]) == {"id", "created", "query", "article_id", "passage_id", "helpful", "source",
                              "index_version"}
    with pytest.raises(BadRequest):
        store.recent(0)


def test_reopening_keeps_rows(stores):
    stores.record("q", "Outlook/a", True)
    again = FeedbackStore(stores.database)
    assert again.summary()["total"] == 1
    again.close()


def test_stores_on_one_database_see_each_others_rows_and_delete_by_age(side_db):
    """Replicas on one PostgreSQL (or workers on one file): what one records, the other summarises and retires."""
    from datetime import datetime, timedelta, timezone

    one, other = FeedbackStore(side_db("feedback")), FeedbackStore(side_db("feedback"))
    one.record("q", "Outlook/a", True)
    other.record("q", "Outlook/a", False)
    assert one.summary()["total"] == other.summary()["total"] == 2
    assert other.delete_before(datetime.now(timezone.utc) + timedelta(seconds=1)) == 2
    assert one.summary()["total"] == 0
    one.close()
    other.close()


@pytest.mark.parametrize("kwargs, fragment", [
    ({"query": "x" * 20_001}, "limit is 20000"),
    ({"query": "   "}, "query is empty"),
    ({"query": None}, "query is empty"),
    ({"query": 12}, "query must be a string"),
    ({"article_id": ""}, "article_id is empty"),
    ({"article_id": "  "}, "article_id is empty"),
    ({"article_id": "../../etc/passwd"}, "invalid article id"),
    ({"article_id": "Outlook/../../secret"}, "invalid article id"),
    ({"article_id": "/etc/passwd"}, "invalid article id"),
    ({"article_id": "\\windows"}, "invalid article id"),
    ({"article_id": "a" * 1001}, "limit is 1000"),
    ({"source": "email"}, "source must be one of"),
    ({"helpful": "yes"}, "helpful must be true or false"),
    ({"helpful": 1}, "helpful must be true or false"),
    ({"passage_id": 5}, "passage_id"),
])
def test_bad_input_is_a_clear_bad_request(stores, kwargs, fragment):
    store = stores
    args = {"query": "outlook", "article_id": "Outlook/a", "helpful": True, **kwargs}
    with pytest.raises(BadRequest) as info:
        store.record(**args)
    assert fragment in info.value.message
    assert store.summary()["total"] == 0


def test_query_limit_is_configurable(tmp_path):
    store = FeedbackStore(tmp_path / "f.sqlite", max_query_chars=10)
    store.record("x" * 10, "Outlook/a", True)
    with pytest.raises(BadRequest):
        store.record("x" * 11, "Outlook/a", True)


def test_article_feedback_may_have_no_query(stores):
    store = stores
    assert store.record("", "Outlook/a", True, source="article") > 0


def test_many_threads_record_without_losing_rows(stores):
    store = stores
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(25):
                store.record(f"thread {n} query {i}", f"Product/article-{n % 3}", i % 2 == 0, source="suggest")
                store.summary()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    summary = store.summary()
    assert summary["total"] == 200 and len(summary["articles"]) == 3
    assert len({r["id"] for r in store.recent(1000)}) == 200


def test_setting_default_and_environment():
    assert str(load_settings({}).feedback_db) == "var/feedback.sqlite"
    assert str(load_settings({"KB_FEEDBACK_DB": "/srv/fb.sqlite"}).feedback_db) == "/srv/fb.sqlite"


# ---- routes ----------------------------------------------------------------------------------

ARTICLES = {"Outlook/a": {"audience": "public"}, "Teams/b": {"audience": "public"},
            "Internal/c": {"audience": "internal"}}


def make_app(store: FeedbackStore | None, build_id: str | None = "20260101T000000Z-abc", **settings) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(feedback_routes.router)
    searcher = SimpleNamespace(version=SimpleNamespace(build_id=build_id), articles=ARTICLES) if build_id else None
    app.state.kb = SimpleNamespace(feedback=store, searcher=searcher, settings=load_settings({}, **settings),
                                   load_error=None)
    return app


@pytest.fixture
def client(store):
    with TestClient(make_app(store), raise_server_exceptions=False) as client:
        yield client


def test_post_json_records_with_index_version(client, store):
    response = client.post("/api/feedback", json={"query": "outlook password", "article_id": "Outlook/a",
                                                  "passage_id": "Outlook/a#fix", "helpful": False,
                                                  "source": "suggest"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["recorded"] is True and isinstance(body["id"], int)
    (row,) = store.recent(1)
    assert row["id"] == body["id"] and row["helpful"] is False and row["source"] == "suggest"
    assert row["passage_id"] == "Outlook/a#fix" and row["index_version"] == "20260101T000000Z-abc"


def test_post_json_defaults_to_search_source(client, store):
    assert client.post("/api/feedback", json={"query": "q", "article_id": "Teams/b", "helpful": True}).status_code == 201
    assert store.recent(1)[0]["source"] == "search"


def test_summary_route(client, store):
    store.record("q", "Outlook/a", True)
    store.record("q", "Outlook/a", False)
    body = client.get("/api/feedback/summary").json()
    assert body["total"] == 2 and body["articles"][0] == {"article_id": "Outlook/a", "helpful": 1,
                                                          "not_helpful": 1, "total": 2}


@pytest.mark.parametrize("kwargs, status, code", [
    ({"json": {"query": "q", "article_id": "../secret", "helpful": True}}, 400, "bad_request"),
    ({"json": {"query": "q", "article_id": "/etc/passwd", "helpful": True}}, 400, "bad_request"),
    ({"json": {"query": "q", "article_id": "Outlook/a", "helpful": True, "source": "mail"}}, 400, "bad_request"),
    ({"json": {"query": "x" * 20_001, "article_id": "Outlook/a", "helpful": True}}, 400, "bad_request"),
    ({"json": {"query": "", "article_id": "Outlook/a", "helpful": True}}, 400, "bad_request"),
    ({"json": {"query": "q", "article_id": "Outlook/a", "helpful": "yes"}}, 422, "invalid_request"),
    ({"json": {"query": "q", "article_id": "Outlook/a"}}, 422, "invalid_request"),
    ({"json": {"query": "q", "helpful": True}}, 422, "invalid_request"),
    ({"json": ["a list"]}, 422, "invalid_request"),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "malformed_json"),
])
def test_bad_json_is_a_4xx_json_error(client, store, kwargs, status, code):
    response = client.post("/api/feedback", **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert store.summary()["total"] == 0


def test_no_store_is_a_503_json_error(tmp_path):
    with TestClient(make_app(None), raise_server_exceptions=False) as client:
        response = client.post("/api/feedback", json={"query": "q", "article_id": "Outlook/a", "helpful": True})
    assert response.status_code == 503 and response.json()["error"]["code"] == "feedback_unavailable"


def post_form(client, referer: str | None = None, **fields):
    data = {"query": "teams mic", "article_id": "Teams/b", "helpful": "yes", **fields}
    headers = {"referer": referer} if referer is not None else {}
    return client.post("/feedback", data=data, headers=headers, follow_redirects=False)


def test_form_records_and_goes_back_to_the_referer(client, store):
    response = post_form(client, referer="http://testserver/?q=teams+mic&product=Teams", helpful="no",
                         passage_id="Teams/b#fix")
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert (location.scheme, location.netloc, location.path) == ("", "", "/")
    assert parse_qs(location.query) == {"q": ["teams mic"], "product": ["Teams"], "feedback": ["thanks"]}
    (row,) = store.recent(1)
    assert (row["query"], row["article_id"], row["helpful"], row["passage_id"]) == \
        ("teams mic", "Teams/b", False, "Teams/b#fix")


def test_form_next_field_wins_and_keeps_its_fragment(client):
    response = post_form(client, referer="http://testserver/", next="/articles/Teams/b?feedback=old#was-this-helpful",
                         source="article")
    assert response.headers["location"] == "/articles/Teams/b?feedback=thanks#was-this-helpful"


@pytest.mark.parametrize("referer, next_", [
    ("https://evil.example/phish", None),
    ("http://testserver.evil.example/", None),
    ("//evil.example/x", None),
    ("/\\evil.example/x", None),
    ("javascript:alert(1)", None),
    ("http://testserver/\t/evil.example", None),
    ("not a url", None),
    (None, None),
    ("", "https://evil.example/"),
    (None, "//evil.example"),
    (None, "/\\evil.example"),
    (None, "ftp://testserver/x"),
])
def test_form_never_redirects_off_site(client, store, referer, next_):
    fields = {"next": next_} if next_ is not None else {}
    response = post_form(client, referer=referer, **fields)
    assert response.status_code == 303
    assert response.headers["location"] == "/?feedback=thanks"
    assert store.summary()["total"] == 1


@pytest.mark.parametrize("fields, status", [
    ({"helpful": "maybe"}, 400),
    ({"article_id": "../../etc/passwd"}, 400),
    ({"source": "mail"}, 400),
    ({"article_id": None}, 422),
])
def test_bad_form_is_a_4xx_json_error(client, store, fields, status):
    data = {k: v for k, v in {"query": "q", "article_id": "Teams/b", "helpful": "yes", **fields}.items()
            if v is not None}
    response = client.post("/feedback", data=data, headers={"referer": "http://testserver/"},
                           follow_redirects=False)
    assert response.status_code == status and response.json()["error"]["message"]
    assert store.summary()["total"] == 0


# ---- hostile input: unknown articles, long queries, floods, an unpaginated summary ---------------------------

@pytest.mark.parametrize("route", ["/api/feedback", "/feedback"])
def test_an_article_not_in_the_index_is_a_404(client, store, route):
    body = {"query": "q", "article_id": "Outlook/no-such-article", "helpful": True}
    sent = {"json": body} if route.startswith("/api") else {"data": {**body, "helpful": "yes"}}
    response = client.post(route, **sent)
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["code"] == "article_not_found" and "Outlook/no-such-article" in error["message"]
    assert "index in service" in error["message"] and store.summary()["total"] == 0


def test_a_huge_unknown_id_is_named_shortly(client):
    response = client.post("/api/feedback", json={"query": "q", "article_id": "x/" + "y" * 900, "helpful": True})
    assert response.status_code == 404 and len(response.json()["error"]["message"]) < 400


def test_no_index_in_service_is_a_503(store):
    with TestClient(make_app(store, build_id=None), raise_server_exceptions=False) as client:
        response = client.post("/api/feedback", json={"query": "q", "article_id": "Outlook/a", "helpful": True})
    assert response.status_code == 503 and response.json()["error"]["code"] == "index_not_found"
    assert store.summary()["total"] == 0


def test_the_query_is_bounded_by_its_setting(store):
    with TestClient(make_app(store, feedback_max_query_chars=20), raise_server_exceptions=False) as client:
        assert client.post("/api/feedback", json={"query": "q" * 20, "article_id": "Outlook/a",
                                                  "helpful": True}).status_code == 201
        for route, kwargs in (("/api/feedback", {"json": {"query": "q" * 21, "article_id": "Outlook/a",
                                                          "helpful": True}}),
                              ("/feedback", {"data": {"query": "q" * 21, "article_id": "Outlook/a", "helpful": "no"}})):
            response = client.post(route, **kwargs)
            assert response.status_code == 400, response.text
            message = response.json()["error"]["message"]
            assert "21 characters" in message and "KB_FEEDBACK_MAX_QUERY_CHARS" in message and "answer_id" in message
    assert store.summary()["total"] == 1


def test_the_default_bound_refuses_a_pasted_ticket(client, store):
    assert load_settings({}).feedback_max_query_chars == 1000
    assert load_settings({"KB_FEEDBACK_MAX_QUERY_CHARS": "300"}).feedback_max_query_chars == 300
    response = client.post("/api/feedback", json={"query": "x" * 1001, "article_id": "Outlook/a", "helpful": True})
    assert response.status_code == 400 and store.summary()["total"] == 0


def test_a_client_over_the_rate_gets_429_with_retry_after(store):
    assert load_settings({}).feedback_rate_per_min == 60
    with TestClient(make_app(store, feedback_rate_per_min=3), raise_server_exceptions=False) as client:
        body = {"query": "q", "article_id": "Outlook/a", "helpful": True}
        assert [client.post("/api/feedback", json=body).status_code for _ in range(3)] == [201] * 3
        refused = client.post("/api/feedback", json=body)
        form = client.post("/feedback", data={**body, "helpful": "yes"}, follow_redirects=False)
        bad = client.post("/api/feedback", json={**body, "article_id": "../x"})  # counted before it is read
    for response in (refused, form, bad):
        assert response.status_code == 429, response.text
        assert response.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(response.headers["retry-after"]) <= 60
    assert store.summary()["total"] == 3


def test_rate_zero_is_no_limit(store):
    with TestClient(make_app(store, feedback_rate_per_min=0), raise_server_exceptions=False) as client:
        body = {"query": "q", "article_id": "Outlook/a", "helpful": True}
        assert {client.post("/api/feedback", json=body).status_code for _ in range(80)} == {201}


def test_the_summary_is_paginated(client, store):
    for n, article in enumerate(["Outlook/a", "Teams/b", "Internal/c", "Gone/d", "Gone/e"]):
        for i in range(5 - n):
            store.record("q", article, i % 2 == 0)
    first = client.get("/api/feedback/summary", params={"limit": 2}).json()
    assert (first["total"], first["helpful"], first["not_helpful"], first["article_count"]) == (15, 9, 6, 5)
    assert (first["limit"], first["offset"], first["next_offset"]) == (2, 0, 2)
    assert [a["article_id"] for a in first["articles"]] == ["Outlook/a", "Teams/b"]
    second = client.get("/api/feedback/summary", params={"limit": 2, "offset": first["next_offset"]}).json()
    assert [a["article_id"] for a in second["articles"]] == ["Internal/c", "Gone/d"] and second["next_offset"] == 4
    last = client.get("/api/feedback/summary", params={"limit": 2, "offset": 4}).json()
    assert [a["article_id"] for a in last["articles"]] == ["Gone/e"] and last["next_offset"] is None
    assert last["total"] == 15  # totals are over everything on every page
    beyond = client.get("/api/feedback/summary", params={"offset": 99}).json()
    assert beyond["articles"] == [] and beyond["next_offset"] is None
    default = client.get("/api/feedback/summary").json()
    assert default["limit"] == 100 and len(default["articles"]) == 5


def test_the_summary_page_is_bounded(client, store):
    for n in range(150):
        store.record("q", f"Gone/article-{n:03d}", True)
    body = client.get("/api/feedback/summary").json()
    assert len(body["articles"]) == 100 and body["article_count"] == 150 and body["next_offset"] == 100
    assert len(client.get("/api/feedback/summary", params={"limit": 1000}).json()["articles"]) == 150


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "ten"},
                                    {"limit": "5.0"}, {"offset": "true"}])
def test_bad_pages_are_422(client, params):
    response = client.get("/api/feedback/summary", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"


# ---- a store that cannot write: 503 for feedback only --------------------------------------------------------

def test_an_unwritable_store_is_a_503_and_its_summary_still_reads(tmp_path, caplog):
    from tests.faults import read_only

    path = tmp_path / "stores" / "feedback.sqlite"
    FeedbackStore(path).record("q", "Outlook/a", True)
    with read_only(path), caplog.at_level(logging.ERROR, logger="kb.feedback"):
        store = FeedbackStore(path)
        with TestClient(make_app(store), raise_server_exceptions=False) as client:
            json_ = [client.post("/api/feedback", json={"query": "q", "article_id": "Outlook/a", "helpful": True})
                     for _ in range(3)]
            form = client.post("/feedback", data={"query": "q", "article_id": "Outlook/a", "helpful": "yes"},
                               follow_redirects=False)
            page = client.post("/feedback", data={"query": "q", "article_id": "Outlook/a", "helpful": "yes"},
                               headers={"accept": "text/html"}, follow_redirects=False)
            summary = client.get("/api/feedback/summary")
        store.close()
    for response in (*json_, form):
        assert response.status_code == 503 and response.headers["retry-after"] == "30"
        error = response.json()["error"]
        assert error["code"] == "store_unavailable" and "readonly" in error["message"]
        assert "searches are not affected" in error["message"] and "KB_FEEDBACK_DB" in error["message"]
    assert page.status_code == 503 and "text/html" in page.headers["content-type"]
    assert summary.status_code == 200 and summary.json()["total"] == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "kb.feedback"]
    assert len(lines) == 1 and "cannot be written" in lines[0] and str(path) in lines[0]


def test_a_read_only_or_unreachable_postgres_is_a_503_for_feedback_only(postgres_server, caplog):
    from kb.database import Database
    from tests.postgres import ReadOnly

    url = postgres_server.create_database()
    store = FeedbackStore(Database.postgres(url))
    store.record("q", "Outlook/a", True)
    with caplog.at_level(logging.INFO, logger="kb.feedback"), \
            TestClient(make_app(store), raise_server_exceptions=False) as client:
        fault = ReadOnly(postgres_server, url)  # a failover: the session is ended, new ones are read-only
        refused = [client.post("/api/feedback", json={"query": "q", "article_id": "Outlook/a", "helpful": True})
                   for _ in range(3)]
        summary = client.get("/api/feedback/summary")
        fault.release()
        accepted = client.post("/api/feedback", json={"query": "q", "article_id": "Outlook/a", "helpful": False})
    for response in refused:
        assert response.status_code == 503 and response.headers["retry-after"] == "30"
        error = response.json()["error"]
        assert error["code"] == "store_unavailable" and "read-only" in error["message"]
        assert "searches are not affected" in error["message"] and "KB_DATABASE_URL" in error["message"]
    assert store.health.errors == 3 and not store.health.failing
    assert summary.status_code == 200 and summary.json()["total"] == 1  # reads go on
    assert accepted.status_code == 201 and store.summary()["total"] == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "kb.feedback"]
    assert len(lines) == 2 and "cannot be written: KB_DATABASE_URL=postgresql://" in lines[0], lines
    assert "written again" in lines[1]
    store.close()

    gone = FeedbackStore(Database.postgres("postgresql://kb@/kb?host=/nonexistent/socket/dir", timeout=1))
    with TestClient(make_app(gone), raise_server_exceptions=False) as client:
        response = client.post("/api/feedback", json={"query": "q", "article_id": "Outlook/a", "helpful": True})
        summary = client.get("/api/feedback/summary")
    assert response.status_code == 503 and response.json()["error"]["code"] == "store_unavailable"
    assert summary.status_code == 503 and "cannot be read" in summary.json()["error"]["message"]
    assert gone.health.failing and gone.health.errors == 2  # at start, and the refused post


def test_the_event_logs_retention_prunes_feedback_in_postgres_too(postgres_server, tmp_path):
    """With KB_DATABASE_URL the daily retention (kb/events.py) deletes old feedback from the shared table."""
    from datetime import datetime, timedelta, timezone

    from kb.database import Database
    from kb.events import EventLog

    url = postgres_server.create_database()
    store = FeedbackStore(Database.postgres(url))
    store.record("new words", "Outlook/a", True)
    old = (datetime.now(timezone.utc) - timedelta(days=31)).isoformat(timespec="milliseconds")
    conn = store.database.connect()
    conn.execute("INSERT INTO feedback (created, query, article_id, helpful, source) VALUES (?, 'old', 'A/b', 1, "
                 "'search')", (old,))
    conn.close()
    settings = load_settings({"KB_DATABASE_URL": url}, analytics_db=tmp_path / "analytics.sqlite",
                             feedback_db=tmp_path / "feedback.sqlite", analytics_retention_days=30)
    retention = EventLog(settings, None)
    assert retention.purge()["feedback"] == 1
    retention.close()
    assert [r["query"] for r in store.recent()] == ["new words"]
    assert not (tmp_path / "feedback.sqlite").exists()  # the SQLite file is not the store any more
    assert not (tmp_path / "analytics.sqlite").exists()  # nor is the events' (KB_DATABASE_URL holds them too)
    store.close()
