"""GET /metrics: requests and latency per route template, index, builds, watch, event log, write-back, workers."""
import os
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from indexer.build import build_index
from indexer.jobs import BuildJobs
from kb.settings import load_settings
from search.app import create_app
from search.metrics import UNMATCHED, ServiceMetrics
from search.metrics_folder import MULTIPROC_ENV, worker_metrics_folder
from tests.conftest import FIXTURE_CONTENT, TinyEncoder, running_server, wait_for_inotify_watches, wait_until

ARTICLE = "Teams/teams-microphone-not-working"


def make_settings(tmp_path, **extra):
    fields = {"content_dir": FIXTURE_CONTENT, "index_dir": tmp_path / "index", "feedback_db": tmp_path / "fb.sqlite",
              "usage_db": tmp_path / "usage.sqlite", "auth_db": tmp_path / "auth.sqlite",
              "webhook_db": tmp_path / "webhooks.sqlite", "analytics_db": tmp_path / "analytics.sqlite",
              "reload_poll_seconds": 0, **extra}
    return load_settings({}, **fields)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    build_index(make_settings(root), TinyEncoder(), progress=False)
    return root / "index"


def client_for(tmp_path, index_dir, watch=False, **extra):
    settings = make_settings(tmp_path, **extra)
    settings = type(settings)(**{**settings.__dict__, "index_dir": index_dir})
    return TestClient(create_app(settings, encoder=TinyEncoder(), watch=watch), client=("203.0.113.9", 40000))


@pytest.fixture
def client(tmp_path, index_dir):
    with client_for(tmp_path, index_dir) as client:
        yield client


def scrape(client, **kwargs) -> dict[tuple[str, frozenset], float]:
    """/metrics parsed by prometheus_client's own parser (which fails on anything not in the text format):
    (sample name, labels) -> value."""
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def value(samples, name, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def named(samples, name) -> dict[frozenset, float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def test_requests_are_counted_and_timed_by_route_template_and_status(client):
    before = scrape(client)
    for q in ("outlook password", "teams microphone", "vpn"):
        assert client.get("/api/search", params={"q": q}).status_code == 200
    assert client.get(f"/api/articles/{ARTICLE}").status_code == 200
    assert client.get("/api/articles/No/such/article-42").status_code == 404
    assert client.get("/wp-login.php").status_code == 404
    assert client.get("/api/search").status_code == 400  # no q
    samples = scrape(client)

    search = {"method": "GET", "route": "/api/search", "status": "200"}
    assert value(samples, "kb_http_requests_total", **search) == 3
    assert value(before, "kb_http_requests_total", **search) is None
    assert value(samples, "kb_http_request_duration_seconds_count", **search) == 3
    assert value(samples, "kb_http_request_duration_seconds_sum", **search) > 0
    buckets = sorted((float(dict(labels)["le"]), v)
                     for labels, v in named(samples, "kb_http_request_duration_seconds_bucket").items()
                     if {("route", "/api/search"), ("status", "200")} <= labels)
    assert buckets[-1] == (float("inf"), 3) and all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    article = "/api/articles/{article_id:path}"
    assert value(samples, "kb_http_requests_total", method="GET", route=article, status="200") == 1
    assert value(samples, "kb_http_requests_total", method="GET", route=article, status="404") == 1
    assert value(samples, "kb_http_requests_total", method="GET", route="/api/search", status="400") == 1
    assert value(samples, "kb_http_requests_total", method="GET", route=UNMATCHED, status="404") == 1
    assert value(samples, "kb_http_requests_total", method="GET", route="/metrics", status="200") == 1  # the first
    routes = {dict(labels)["route"] for labels in named(samples, "kb_http_requests_total")}
    assert not any(ARTICLE in r or "article-42" in r or "wp-login" in r or "?" in r for r in routes), routes


def test_a_request_refused_before_routing_is_labelled_with_its_route(client):
    refused = client.post("/api/feedback", json={}, headers={"cookie": "a=b", "sec-fetch-site": "cross-site"})
    assert refused.status_code == 403
    samples = scrape(client)
    assert value(samples, "kb_http_requests_total", method="POST", route="/api/feedback", status="403") == 1
    client.request("BREW", "/api/search")
    assert any(dict(labels)["method"] == "other" for labels in named(scrape(client), "kb_http_requests_total"))


def test_index_in_service_is_described(client):
    health = client.get("/healthz").json()
    samples = scrape(client)
    assert value(samples, "kb_index_info", build_id=health["index_version"], model=TinyEncoder.model_id) == 1
    assert value(samples, "kb_index_articles") == health["counts"]["articles"] == 8
    assert value(samples, "kb_index_passages") == health["counts"]["passages"]
    assert abs(value(samples, "kb_index_created_timestamp_seconds") - time.time()) < 3600
    assert value(samples, "kb_index_versions_refused") == 0


def test_a_build_job_duration_and_a_failed_build_appear(tmp_path, content_copy):
    settings = make_settings(tmp_path, content_dir=content_copy)
    build_index(settings, TinyEncoder(), progress=False)
    with client_for(tmp_path, settings.index_dir, content_dir=content_copy) as client:
        assert named(scrape(client), "kb_build_duration_seconds_count") == {}
        path = content_copy / f"{ARTICLE}.md"
        path.write_text(path.read_text() + "\n\n## Firmware\n\nThe headset firmware update fixes it.\n")
        job = client.post("/api/admin/reindex").json()["job"]
        state = client.app.state.kb
        assert state.jobs.wait(30) and state.jobs.get(job["id"]).state == "succeeded"
        samples = scrape(client)
        assert value(samples, "kb_build_duration_seconds_count", trigger="api") == 1
        took = value(samples, "kb_build_duration_seconds_sum", trigger="api")
        assert 0 < took == pytest.approx(state.jobs.get(job["id"]).seconds)
        assert value(samples, "kb_build_failures_total", trigger="api") is None
        new_version = client.get("/healthz").json()["index_version"]
        assert value(samples, "kb_index_info", build_id=new_version, model=TinyEncoder.model_id) == 1
        assert not any(dict(labels)["build_id"] != new_version and v == 1
                       for labels, v in named(samples, "kb_index_info").items())

        for article in content_copy.rglob("*.md"):  # nothing publishable left: the next build fails
            article.unlink()
        job = client.post("/api/admin/reindex").json()["job"]
        assert state.jobs.wait(30) and state.jobs.get(job["id"]).state == "failed"
        samples = scrape(client)
        assert value(samples, "kb_build_failures_total", trigger="api") == 1
        assert value(samples, "kb_build_duration_seconds_count", trigger="api") == 2


def test_watch_events_are_counted(tmp_path, content_copy):
    settings = make_settings(tmp_path, content_dir=content_copy, watch_debounce_ms=50)
    build_index(settings, TinyEncoder(), progress=False)
    with client_for(tmp_path, settings.index_dir, watch=True, content_dir=content_copy, watch_debounce_ms=50) as client:
        assert value(scrape(client), "kb_watch_events_total") == 0
        state = client.app.state.kb
        state.jobs.wait(30)  # the catch-up build at start
        wait_for_inotify_watches(content_copy)  # no edit from here on can be missed
        (content_copy / "Teams" / "new-note.md").write_text("---\ntitle: Quokka firmware\n---\n\nQuokka firmware.\n")
        wait_until(lambda: value(scrape(client), "kb_watch_events_total"), 30, "the change was never counted")
        samples = scrape(client)
        assert value(samples, "kb_watch_events_total") >= 1 and value(samples, "kb_watch_changed_files_total") >= 1
        assert state.jobs.wait(30)
        assert value(scrape(client), "kb_build_duration_seconds_count", trigger="watch") >= 1


class EventLogStats:
    """Stands in for the analytics event log: stats() as kb/events.py reports them."""

    def __init__(self):
        self.figures = {"queued": 0, "dropped": 0, "written": 0, "errors": 0}

    def stats(self):
        return dict(self.figures)


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_analytics_queue_depth_and_drops_come_from_the_event_log():
    metrics = ServiceMetrics()
    state = SimpleNamespace(jobs=BuildJobs(lambda progress: None), searcher=None, failed={}, webhooks=None)
    metrics.attach(state)
    try:
        samples = parse(metrics.exposition().decode())
        assert not [key for key in samples if key[0].startswith("kb_analytics_")]  # no event log: no samples
        state.events = log = EventLogStats()
        log.figures.update(queued=7, dropped=2, written=40)
        samples = parse(metrics.exposition().decode())
        assert value(samples, "kb_analytics_queue_depth") == 7
        assert value(samples, "kb_analytics_events_dropped_total") == 2
        assert value(samples, "kb_analytics_events_written_total") == 40
        log.figures.update(queued=0, dropped=5, written=90, errors=1)
        samples = parse(metrics.exposition().decode())
        assert value(samples, "kb_analytics_queue_depth") == 0
        assert value(samples, "kb_analytics_events_dropped_total") == 5
        assert value(samples, "kb_analytics_events_written_total") == 90
        assert value(samples, "kb_analytics_events_errors_total") == 1
        log.stats = lambda: 1 / 0  # a broken event log costs its own samples, never /metrics
        assert value(parse(metrics.exposition().decode()), "kb_analytics_events_dropped_total") == 5
    finally:
        metrics.detach()


def test_the_services_event_log_feeds_the_analytics_series(client):
    events = client.app.state.kb.events
    for q in ("outlook password", "teams microphone"):
        assert client.get("/api/search", params={"q": q}).status_code == 200
    assert events.flush()
    stats, samples = events.stats(), scrape(client)
    assert stats["written"] >= 2
    assert value(samples, "kb_analytics_events_written_total") == stats["written"]
    assert value(samples, "kb_analytics_events_dropped_total") == stats["dropped"] == 0
    assert value(samples, "kb_analytics_queue_depth") == 0


class WriteBackStatus:
    def __init__(self, counters):
        self.counters = counters

    def status(self):
        return dict(self.counters)


def test_write_back_counters_follow_the_webhooks_status(client):
    state = client.app.state.kb
    real = state.webhooks
    assert value(scrape(client), "kb_webhook_db_errors_total") == 0
    assert not named(scrape(client), "kb_writeback_notes_total")  # write-back not configured
    state.webhooks = WriteBackStatus({"enabled": True, "queued": 3, "sent": 2, "failed": 1, "retries": 4,
                                      "dropped": 0, "pending": 1, "webhook_db_errors": 1})
    try:
        samples = scrape(client)
        assert value(samples, "kb_writeback_notes_total", outcome="sent") == 2
        assert value(samples, "kb_writeback_notes_total", outcome="retries") == 4
        assert value(samples, "kb_writeback_pending") == 1 and value(samples, "kb_webhook_db_errors_total") == 1
        state.webhooks.counters.update(sent=3, pending=0)
        samples = scrape(client)
        assert value(samples, "kb_writeback_notes_total", outcome="sent") == 3
        assert value(samples, "kb_writeback_pending") == 0
    finally:
        state.webhooks = real


def test_metrics_need_analytics_or_admin_when_keys_are_required(tmp_path, index_dir):
    with client_for(tmp_path, index_dir, auth="required") as client:
        keys = client.app.state.auth.keys
        response = client.get("/metrics")
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
        _, search_only = keys.create("agent", ["search", "suggest"])
        response = client.get("/metrics", headers={"Authorization": f"Bearer {search_only}"})
        assert response.status_code == 403 and "`analytics` or `admin`" in response.json()["error"]["message"]
        for name, scope in (("ops", "analytics"), ("root", "admin")):
            _, secret = keys.create(name, [scope])
            samples = scrape(client, headers={"X-API-Key": secret})
            assert value(samples, "kb_http_requests_total", method="GET", route="/metrics", status="401") == 1
            assert value(samples, "kb_http_requests_total", method="GET", route="/metrics", status="403") == 1


def test_openapi_declares_text_for_200_and_json_errors(client):
    operation = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    assert operation["responses"]["200"]["content"] == {"text/plain": {"schema": {"type": "string"}}}
    for status in ("401", "403", "429"):
        schema = operation["responses"][status]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/ErrorResponse")


def test_worker_metrics_folder_is_fresh_and_removed_or_emptied(tmp_path):
    environ: dict[str, str] = {}
    with worker_metrics_folder(environ) as folder:
        assert environ[MULTIPROC_ENV] == str(folder) and folder.is_dir() and not any(folder.iterdir())
        (folder / "counter_123.db").write_bytes(b"x")
    assert not folder.exists() and MULTIPROC_ENV not in environ

    given = tmp_path / "prom"
    given.mkdir()
    (given / "counter_999.db").write_bytes(b"a previous run")
    (given / "notes.txt").write_text("the operator's")
    environ = {MULTIPROC_ENV: str(given)}
    with worker_metrics_folder(environ) as folder:
        assert folder == given and not list(given.glob("*.db"))
    assert (given / "notes.txt").exists() and environ[MULTIPROC_ENV] == str(given)


@pytest.mark.model
def test_one_answer_counts_the_requests_of_both_workers(real_index, tmp_path):
    env = {"KB_LOG_LEVEL": "warning", "KB_AUTH_DB": str(tmp_path / "auth.sqlite"),
           "KB_WEBHOOK_DB": str(tmp_path / "webhooks.sqlite"), "KB_ANALYTICS_DB": str(tmp_path / "analytics.sqlite")}
    with running_server(real_index.index_dir, tmp_path, env=env, args=("--no-watch", "--workers", "2")) as (base, _), \
            httpx.Client(base_url=base, timeout=10) as http:
        def healthz(_):  # a new connection each time, so that either worker may take it
            return httpx.get(base + "/healthz", timeout=10).json()["pid"]

        def healthz_count(samples) -> float:
            return value(samples, "kb_http_requests_total", method="GET", route="/healthz", status="200") or 0

        before = healthz_count(scrape(http))
        answered: dict[int, int] = {}
        deadline = time.time() + 180
        with ThreadPoolExecutor(8) as pool:
            while len(answered) < 2:
                assert time.time() < deadline, f"only worker(s) {answered} answered"
                for pid in pool.map(healthz, range(16)):
                    answered[pid] = answered.get(pid, 0) + 1
        sent = sum(answered.values())
        assert max(answered.values()) < sent  # each worker answered some: neither alone saw them all
        workers, deadline = {str(pid) for pid in answered}, time.time() + 30
        while True:  # whichever worker answers /metrics, it reports every worker's requests
            samples = scrape(http)
            assert healthz_count(samples) - before == sent, (answered, healthz_count(samples), before)
            assert value(samples, "kb_http_request_duration_seconds_count", method="GET", route="/healthz",
                         status="200") == healthz_count(samples)
            pids = {dict(labels)["pid"] for labels in named(samples, "kb_index_passages")}
            if pids == workers:  # gauges: one series per worker (each samples its own state every 2 s)
                break
            assert time.time() < deadline, (pids, workers)
            time.sleep(0.3)
    assert MULTIPROC_ENV not in os.environ  # set for the server's workers only
