"""HTTP API in-process (real model, fixture index): contract shapes, OpenAPI, and every bad-input case as 4xx JSON."""
import pytest
from fastapi.testclient import TestClient

from kb.settings import load_settings
from search.app import create_app

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def client(real_index, embedder):
    with TestClient(create_app(real_index, encoder=embedder), raise_server_exceptions=False) as client:
        yield client


def test_healthz(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert body["counts"]["articles"] == 8 and body["index_version"]


def test_search_contract(client):
    response = client.get("/api/search", params={"q": "teams microphone", "k": 3, "product": "Teams"})
    assert response.status_code == 200
    results = response.json()["results"]
    assert results[0]["id"] == "Teams/teams-microphone-not-working"
    assert set(results[0]) >= {"id", "title", "url", "score", "passages"}


def test_suggest_contract(client):
    response = client.post("/api/suggest", json={"subject": "Outlook password", "body": "Outlook keeps prompting "
                           "for my password every few minutes", "tags": ["outlook"], "k": 2})
    body = response.json()
    assert response.status_code == 200 and len(body["articles"]) == 2 and len(body["answers"]) == 2
    assert set(body["answers"][0]) >= {"article_id", "title", "heading_path", "url", "snippet", "score"}
    assert set(body["articles"][0]) >= {"id", "title", "summary", "url", "score", "sections"}
    assert body["articles"][0]["id"] == "Outlook/outlook-password-prompt"


def test_a_question_about_a_product_the_knowledge_base_never_mentions_says_so(client):
    """`not_covered` names the product (as the caller wrote it) that made `confident` false; null otherwise."""
    body = client.post("/api/suggest", json={"subject": "Webex: screen share button grey",
                                             "body": "I can't share my screen in meetings."}).json()
    assert body["confident"] is False and body["not_covered"] == "Webex" and body["articles"]
    found = client.get("/api/search", params={"q": "people in the webex meeting can't hear me"}).json()
    assert found["confident"] is False and found["not_covered"] == "webex"
    plain = client.get("/api/search", params={"q": "people in the meeting can't hear me"}).json()
    assert plain["confident"] is True and plain["not_covered"] is None
    assert client.get("/api/search", params={"q": "webex", "mode": "lexical"}).json()["not_covered"] is None


def test_article_contract(client):
    body = client.get("/api/articles/id/teams-kamera-tidak-berfungsi").json()
    assert body["language"] == "id" and body["html"].startswith("<")


def test_openapi_and_docs(client):
    assert "/api/suggest" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("method, url, kwargs, status, code", [
    ("get", "/api/search", {"params": {"q": ""}}, 400, "bad_request"),
    ("get", "/api/search", {"params": {"q": "   "}}, 400, "bad_request"),
    ("get", "/api/search", {}, 400, "bad_request"),
    ("get", "/api/search", {"params": {"q": "x" * 20_001}}, 400, "bad_request"),
    ("get", "/api/search", {"params": {"q": "outlook", "k": 0}}, 400, "bad_request"),
    ("get", "/api/search", {"params": {"q": "outlook", "k": 101}}, 400, "bad_request"),
    ("get", "/api/search", {"params": {"q": "outlook", "k": "ten"}}, 422, "invalid_request"),
    *[("get", "/api/search", {"params": {"q": "outlook", "k": k}}, 422, "invalid_request")
      for k in ("7.0", "true", " 5", "+5", "5_0", "1e1", "")],  # wrongly typed, however lax parsers read them
    *[("post", "/api/suggest", {"json": {"body": "outlook", **field}}, 422, "invalid_request")
      for field in ({"k": True}, {"k": "5"}, {"k": 7.0}, {"tags": [1]}, {"tags": "outlook"}, {"language": 1})],
    ("post", "/api/suggest", {"content": b"{not json", "headers": {"content-type": "application/json"}},
     400, "malformed_json"),
    ("post", "/api/suggest", {"json": {"subject": "", "body": ""}}, 400, "bad_request"),
    ("post", "/api/suggest", {"json": {"body": "outlook", "k": 0}}, 400, "bad_request"),
    ("post", "/api/suggest", {"json": {"body": "outlook", "k": 500}}, 400, "bad_request"),
    ("post", "/api/suggest", {"json": {"body": "y" * 20_001}}, 400, "bad_request"),
    ("post", "/api/suggest", {"json": {"body": ["not", "a", "string"]}}, 422, "invalid_request"),
    ("post", "/api/suggest", {"json": ["a list"]}, 422, "invalid_request"),
    ("get", "/api/articles/Outlook/no-such-article", {}, 404, "article_not_found"),
    ("get", "/api/articles/Outlook/..%2F..%2Fsecret", {}, 400, "bad_request"),
    ("get", "/api/articles/%2Fetc%2Fpasswd", {}, 400, "bad_request"),
    ("get", "/api/articles/..%2F..%2Fetc%2Fpasswd", {}, 400, "bad_request"),
    ("get", "/api/nothing-here", {}, 404, "not_found"),
])
def test_bad_input_is_a_4xx_json_error(client, method, url, kwargs, status, code):
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


def test_no_index_is_503_json_not_a_crash(tmp_path, embedder):
    settings = load_settings({}, index_dir=tmp_path / "empty-index", feedback_db=tmp_path / "fb.sqlite")
    with TestClient(create_app(settings, encoder=embedder)) as client:
        response = client.get("/api/search", params={"q": "outlook"})
        assert response.status_code == 503 and "kb index" in response.json()["error"]["message"]
        assert client.get("/healthz").status_code == 503


def test_unknown_path_is_json_for_api_clients_and_html_for_browsers(client):
    assert client.get("/nothing", headers={"accept": "application/json"}).json()["error"]["code"] == "not_found"
    page = client.get("/nothing", headers={"accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert client.get("/api/nothing", headers={"accept": "text/html"}).headers["content-type"].startswith(
        "application/json")


def test_the_service_warms_a_version_before_it_serves(tmp_path, tiny_encoder, monkeypatch):
    """On Milvus a version's first search reads its vectors and lexicon; the service does that when it swaps the
    version in, so the first request makes the engine calls of the next one."""
    import shutil

    from indexer.build import build_index
    from tests.conftest import FIXTURE_CONTENT
    from tests.test_index_contract import needs_engine
    from tests.test_searcher import milvus_engine_calls

    needs_engine("milvus")
    shutil.copytree(FIXTURE_CONTENT, tmp_path / "content")
    settings = load_settings({}, content_dir=tmp_path / "content", index_dir=tmp_path / "index",
                             index_backend="milvus", feedback_db=tmp_path / "fb.sqlite", usage_db=tmp_path / "u.sqlite",
                             reload_poll_seconds=0)
    build_index(settings, tiny_encoder, progress=False)
    calls = milvus_engine_calls(monkeypatch)
    with TestClient(create_app(settings, encoder=tiny_encoder), raise_server_exceptions=False) as client:
        made = []
        for _ in range(2):
            calls.clear()
            assert client.get("/api/search", params={"q": "credential manager password", "k": 3}).status_code == 200
            made.append(list(calls))
    assert made[0] == made[1]
