"""Response models against real responses: no key the code returns dropped, no value altered, every route declared."""
import json

import pytest
from fastapi.testclient import TestClient

from indexer.build import build_index
from kb.settings import load_settings
from search.app import create_app
from search.routes.health import healthz
from search.schemas import (ArticleResponse, ContentHealthResponse, ErrorResponse, FeedbackSummaryResponse,
                            HealthResponse, JobResponse, NoIndexResponse, ReindexResponse, SearchResponse,
                            SuggestResponse)

pytestmark = pytest.mark.model

ENGLISH_TICKET = {"subject": "Outlook password", "body": "Hi,\nOutlook keeps prompting for my password every few "
                  "minutes. Error 0x800CCC0E when sending.\nThanks,\nRina", "tags": ["outlook"], "k": 3}
INDONESIAN_TICKET = {"subject": "Kamera Teams tidak berfungsi", "body": "Halo,\nDi rapat Teams mikrofon saya tidak "
                     "terdeteksi dan kamera hitam.\nTerima kasih,\nAgus", "k": 3}


def dropped(raw, dumped, path="$") -> list[str]:
    """Paths of keys in `raw` that `dumped` lacks, at any depth."""
    if isinstance(raw, dict):
        missing = [f"{path}.{key}" for key in raw if not isinstance(dumped, dict) or key not in dumped]
        return missing + [p for key in raw if isinstance(dumped, dict) and key in dumped
                          for p in dropped(raw[key], dumped[key], f"{path}.{key}")]
    if isinstance(raw, list) and isinstance(dumped, list):
        return [p for i, (a, b) in enumerate(zip(raw, dumped)) for p in dropped(a, b, f"{path}[{i}]")]
    return []


def assert_model_keeps(model, raw: dict) -> None:
    """What `response_model=model` sends for `raw` is exactly `raw` as JSON (apart from defaults the code never set)."""
    as_json = json.loads(json.dumps(raw))
    dumped = model.model_validate(raw).model_dump(mode="json", exclude_unset=True)
    assert dropped(as_json, dumped) == []
    assert dumped == as_json


def answer_of(response) -> dict:
    """A search or suggest response as the searcher made it: its `answer_id` (checked, and kept by the model) off."""
    body = response.json()
    answer_id = body.pop("answer_id")
    assert isinstance(answer_id, str) and len(answer_id) == 16 and int(answer_id, 16) >= 0
    return body


@pytest.fixture(scope="module")
def client(real_index, embedder):
    with TestClient(create_app(real_index, encoder=embedder), raise_server_exceptions=False) as client:
        yield client


def test_search_keeps_every_key(client, searcher):
    raw = searcher.search("teams microphone not working", 5)
    assert raw["results"] and raw["results"][0]["passages"][0]["highlights"]
    assert_model_keeps(SearchResponse, raw)
    assert answer_of(client.get("/api/search", params={"q": "teams microphone not working", "k": 5})) == raw
    assert_model_keeps(SearchResponse, {**raw, "answer_id": "0123456789abcdef"})


def test_lexical_search_with_null_confidence_keeps_every_key(client, searcher):
    raw = searcher.search("password", 3, mode="lexical")
    assert raw["confident"] is None and raw["confidence"] is None and raw["results"]
    assert_model_keeps(SearchResponse, raw)
    assert answer_of(client.get("/api/search", params={"q": "password", "k": 3, "mode": "lexical"})) == raw


@pytest.mark.parametrize("ticket, language", [(ENGLISH_TICKET, "en"), (INDONESIAN_TICKET, "id")])
def test_suggest_keeps_every_key(client, searcher, ticket, language):
    raw = searcher.suggest(ticket["subject"], ticket["body"], ticket.get("tags", ()), k=ticket["k"])
    assert raw["query"]["language"] == language and raw["answers"] and raw["articles"][0]["sections"]
    assert_model_keeps(SuggestResponse, raw)
    assert answer_of(client.post("/api/suggest", json=ticket)) == raw
    assert_model_keeps(SuggestResponse, {**raw, "answer_id": "0123456789abcdef"})


def test_suggest_codes_are_kept(searcher):
    raw = searcher.suggest(ENGLISH_TICKET["subject"], ENGLISH_TICKET["body"], k=2)
    assert raw["query"]["codes"] == ["0x800CCC0E"]
    assert SuggestResponse.model_validate(raw).query.codes == ["0x800CCC0E"]


def test_article_keeps_every_key(client, searcher):
    raw = searcher.article("Outlook/outlook-password-prompt")
    assert raw["tags"] and raw["html"].startswith("<")
    assert_model_keeps(ArticleResponse, raw)
    assert client.get("/api/articles/Outlook/outlook-password-prompt").json() == raw


def test_healthz_keeps_every_key_and_names_the_worker(client):
    import os
    from types import SimpleNamespace

    class Request:  # what the route reads of a request made on loopback with no credentials
        app, state = client.app, SimpleNamespace()

    raw = healthz(Request())
    assert raw["status"] == "ok" and raw["pid"] == os.getpid()
    assert_model_keeps(HealthResponse, raw)
    assert client.get("/healthz").json() == raw


def test_healthz_without_an_index_matches_the_503_model(tmp_path, embedder):
    settings = load_settings({}, index_dir=tmp_path / "empty", feedback_db=tmp_path / "fb.sqlite",
                             usage_db=tmp_path / "usage.sqlite", reload_poll_seconds=0)
    with TestClient(create_app(settings, encoder=embedder)) as client:
        response = client.get("/healthz")
        assert response.status_code == 503
        assert_model_keeps(NoIndexResponse, response.json())
        error = client.get("/api/search", params={"q": "outlook"})
        assert error.status_code == 503 and ErrorResponse.model_validate(error.json()).error.code == "index_not_found"


@pytest.mark.parametrize("url, status", [("/api/search?q=", 400), ("/api/search?q=x&k=0", 400),
                                         ("/api/search?q=x&k=ten", 422), ("/api/articles/Outlook/nope", 404)])
def test_errors_match_the_error_model(client, url, status):
    response = client.get(url)
    assert response.status_code == status
    assert_model_keeps(ErrorResponse, response.json())


def test_feedback_summary_keeps_every_key(client):
    for helpful in (True, False, True):
        assert client.post("/api/feedback", json={"query": "outlook password", "helpful": helpful,
                                                  "article_id": "Outlook/outlook-password-prompt"}).status_code == 201
    raw = client.app.state.kb.feedback.summary()
    assert raw["articles"] and raw["total"] >= 3
    assert_model_keeps(FeedbackSummaryResponse, raw)
    assert client.get("/api/feedback/summary").json() == raw


def test_build_job_keeps_every_key(content_copy, tmp_path, tiny_encoder):
    settings = load_settings({}, content_dir=content_copy, index_dir=tmp_path / "index", reload_poll_seconds=0,
                             feedback_db=tmp_path / "fb.sqlite", usage_db=tmp_path / "usage.sqlite")
    build_index(settings, tiny_encoder, progress=False)
    (content_copy / "Outlook" / "broken.md").write_text("---\ntitle: [unclosed\n---\nbody\n")  # a problem to report
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        started = client.post("/api/admin/reindex")
        assert started.status_code == 202
        job_id = started.json()["job"]["id"]
        assert_model_keeps(ReindexResponse, started.json())
        client.app.state.kb.jobs.wait(timeout=60)
        raw = client.app.state.kb.jobs.get(job_id).to_dict()
        assert raw["state"] == "succeeded" and raw["report"]["problems"]
        assert_model_keeps(JobResponse, raw)
        assert client.get(f"/api/admin/jobs/{job_id}").json() == raw


def test_content_health_json_matches_its_model(client):
    for _ in range(30):
        response = client.get("/health/content", params={"format": "json"})
        if response.status_code == 200:
            break
    assert response.status_code == 200
    assert_model_keeps(ContentHealthResponse, response.json())


API_ROUTES = {("/api/search", "get", "200", "SearchResponse"), ("/api/suggest", "post", "200", "SuggestResponse"),
              ("/api/articles/{article_id}", "get", "200", "ArticleResponse"),
              ("/api/feedback", "post", "201", "FeedbackResponse"),
              ("/api/feedback/summary", "get", "200", "FeedbackSummaryResponse"),
              ("/api/admin/reindex", "post", "202", "ReindexResponse"),
              ("/api/admin/jobs/{job_id}", "get", "200", "JobResponse")}


def test_every_api_route_declares_its_response_and_errors(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path, method, ok, model in API_ROUTES:
        op = paths[path][method]
        schema = op["responses"][ok]["content"]["application/json"]["schema"]
        assert schema.get("$ref", "").endswith("/" + model), (path, method, schema)
        for status in ("401", "403", "429"):
            schema = op["responses"][status]["content"]["application/json"]["schema"]
            assert schema["$ref"].endswith("/ErrorResponse"), (path, method, status)
    content_health = paths["/health/content"]["get"]["responses"]
    assert content_health["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ContentHealthResponse")
    assert "text/html" in content_health["200"]["content"]
    healthz_responses = paths["/healthz"]["get"]["responses"]
    assert healthz_responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/HealthResponse")
    assert healthz_responses["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/NoIndexResponse")
    k = next(p for p in paths["/api/search"]["get"]["parameters"] if p["name"] == "k")
    assert (k["schema"]["minimum"], k["schema"]["maximum"]) == (1, 100)
