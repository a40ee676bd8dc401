"""Feedback: the SQLite store (record, summary, recent, validation, threads) and its HTTP routes."""
from __future__ import annotations

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


# ---- store -----------------------------------------------------------------------------------

def test_record_writes_a_row_to_disk(store):
    first = store.record("outlook password", "Outlook/outlook-password-prompt", True, passage_id="p1",
                         source="search", index_version="v1")
    second = store.record("outlook password", "Outlook/outlook-password-prompt", False)
    assert second == first + 1 and store.path.is_file()
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        row = conn.execute("SELECT created, query, article_id, passage_id, helpful, source, index_version "
                           "FROM feedback WHERE id = ?", (first,)).fetchone()
    created, *rest = row
    assert rest == ["outlook password", "Outlook/outlook-password-prompt", "p1", 1, "search", "v1"]
    assert created.endswith("+00:00") and created[:4].isdigit()


def test_summary_counts_per_article(store):
    for helpful in (True, True, False):
        store.record("q", "Outlook/a", helpful)
    store.record("q", "Teams/b", False, source="suggest")
    store.record("", "Gone/removed-article", True, source="article")  # unknown ids are fine to record
    summary = store.summary()
    assert (summary["total"], summary["helpful"], summary["not_helpful"]) == (5, 3, 2)
    by_id = {a["article_id"]: a for a in summary["articles"]}
    assert by_id["Outlook/a"] == {"article_id": "Outlook/a", "helpful": 2, "not_helpful": 1, "total": 3}
    assert by_id["Teams/b"]["not_helpful"] == 1 and summary["articles"][0]["article_id"] == "Outlook/a"


def test_empty_summary(store):
    assert store.summary() == {"total": 0, "helpful": 0, "not_helpful": 0, "articles": []}


def test_recent_is_newest_first(store):
    ids = [store.record(f"q{i}", "Outlook/a", i % 2 == 0) for i in range(5)]
    recent = store.recent(3)
    assert [r["id"] for r in recent] == ids[:1:-1] and recent[0]["helpful"] is True
    assert set(recent[0]) == {"id", "created", "query", "article_id", "passage_id", "helpful", "source",
                              "index_version"}
    with pytest.raises(BadRequest):
        store.recent(0)


def test_reopening_keeps_rows(store):
    store.record("q", "Outlook/a", True)
    assert FeedbackStore(store.path).summary()["total"] == 1


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
def test_bad_input_is_a_clear_bad_request(store, kwargs, fragment):
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


def test_article_feedback_may_have_no_query(store):
    assert store.record("", "Outlook/a", True, source="article") > 0


def test_many_threads_record_without_losing_rows(store):
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

def make_app(store: FeedbackStore | None, build_id: str | None = "20260101T000000Z-abc") -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(feedback_routes.router)
    searcher = SimpleNamespace(version=SimpleNamespace(build_id=build_id)) if build_id else None
    app.state.kb = SimpleNamespace(feedback=store, searcher=searcher)
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
