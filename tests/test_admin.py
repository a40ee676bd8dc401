"""Live re-indexing in the service: admin reindex jobs, one build at a time, token, version swaps, refused versions."""
import shutil
import threading

import pytest
from fastapi.testclient import TestClient

from indexer.build import build_index
from kb.index.faiss_sqlite import store
from kb.settings import load_settings
from search.app import create_app

from tests.conftest import wait_for_inotify_watches, wait_until

WORD = "zanzibarflux"
ARTICLE = "Teams/teams-microphone-not-working"


def make_settings(content, tmp_path, **extra):
    return load_settings({}, content_dir=content, index_dir=tmp_path / "index", feedback_db=tmp_path / "fb.sqlite",
                         usage_db=tmp_path / "usage.sqlite", reload_poll_seconds=0, **extra)


@pytest.fixture
def service(content_copy, tmp_path, tiny_encoder):
    settings = make_settings(content_copy, tmp_path)
    build_index(settings, tiny_encoder, progress=False)
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        yield client, content_copy


def edit(content, word=WORD):
    path = content / f"{ARTICLE}.md"
    path.write_text(path.read_text() + f"\n\n## Rare words\n\nThe {word} headset firmware needs an update.\n")


def finds(client, word=WORD) -> list[str]:
    body = client.get("/api/search", params={"q": word, "mode": "lexical"}).json()
    return [hit["id"] for hit in body["results"]]


def wait_for_job(client, job_id, timeout=60) -> dict:
    """The job's status once it has ended: BuildJobs.wait() returns when no build runs or is queued (an event set
    after the job's state is final and its version is in service), not after some polling interval."""
    assert client.app.state.kb.jobs.wait(timeout), f"build job {job_id} still running after {timeout} s"
    return client.get(f"/api/admin/jobs/{job_id}").json()


def test_reindex_job_swaps_in_the_edited_article(service):
    client, content = service
    before = client.get("/healthz").json()["index_version"]
    old_searcher = client.app.state.kb.versions.lease()  # as a request does (search/routes/deps.py)
    assert finds(client) == []
    edit(content)
    response = client.post("/api/admin/reindex")
    assert response.status_code == 202
    job = response.json()["job"]
    assert response.json()["status_url"] == f"/api/admin/jobs/{job['id']}" and job["trigger"] == "api"
    status = wait_for_job(client, job["id"])
    assert status["state"] == "succeeded", status
    assert status["report"]["parsed"] == 1 and status["report"]["reused"] >= 6 and status["report"]["build_id"]
    assert status["progress"]["stage"] == "writing"
    health = client.get("/healthz").json()
    assert health["index_version"] == status["report"]["build_id"] != before and health["status"] == "ok"
    assert finds(client) == [ARTICLE]
    # A request that started on the old searcher finishes on it: its version is still complete on disk and open
    # until that request lets go of it; then its files close.
    assert old_searcher.version.build_id == before and old_searcher.search("teams microphone", 1)["results"]
    old_searcher.version.release()
    assert old_searcher.version.closed


def test_a_second_reindex_while_one_runs_is_refused(service, monkeypatch):
    client, _ = service
    state = client.app.state.kb
    gate, original = threading.Event(), state.jobs._build

    def slow_build(on_progress):
        assert gate.wait(30)
        return original(on_progress)

    monkeypatch.setattr(state.jobs, "_build", slow_build)
    first = client.post("/api/admin/reindex").json()["job"]["id"]
    second = client.post("/api/admin/reindex")
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "conflict" and first in second.json()["error"]["message"]
    assert client.get("/healthz").json()["reload"]["build_running"] == first
    gate.set()
    status = wait_for_job(client, first)
    assert status["state"] == "succeeded" and status["report"]["build_id"] is None  # nothing had changed


def test_unknown_job_is_404(service):
    client, _ = service
    response = client.get("/api/admin/jobs/20260101-abcdef")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_admin_token_is_required_when_set(content_copy, tmp_path, tiny_encoder):
    settings = make_settings(content_copy, tmp_path, admin_token="s3cret")
    build_index(settings, tiny_encoder, progress=False)
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = client.post("/api/admin/reindex", headers=headers)
            assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
        ok = client.post("/api/admin/reindex", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 202
        job_id = ok.json()["job"]["id"]
        assert client.get(f"/api/admin/jobs/{job_id}").status_code == 401
        client.app.state.kb.jobs.wait(30)


def test_a_damaged_version_is_never_put_into_service_and_healthz_says_so(service):
    client, content = service
    state = client.app.state.kb
    index_dir = state.settings.index_dir
    good = store.current_id(index_dir)
    bad = store.new_build_id()
    shutil.copytree(index_dir / good, index_dir / bad)
    with open(index_dir / bad / store.VECTORS, "r+b") as handle:
        handle.truncate(100)
    store.switch_current(index_dir, bad)
    assert state.refresh() is False and state.refresh() is False  # tried once, remembered
    health = client.get("/healthz").json()
    assert health["status"] == "degraded" and health["index_version"] == good
    assert bad in health["reload"]["failed_versions"] and health["reload"]["error"]["code"] == "index_damaged"
    assert client.get("/api/search", params={"q": "outlook password"}).json()["results"]
    # The next good build goes into service and clears the error.
    edit(content)
    status = wait_for_job(client, client.post("/api/admin/reindex").json()["job"]["id"])
    assert status["state"] == "succeeded", status
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["index_version"] == status["report"]["build_id"]
    assert finds(client) == [ARTICLE]


def test_watching_service_indexes_a_saved_article_without_a_restart(content_copy, tmp_path, tiny_encoder):
    settings = make_settings(content_copy, tmp_path, watch_debounce_ms=100)
    build_index(settings, tiny_encoder, progress=False)
    with TestClient(create_app(settings, encoder=tiny_encoder, watch=True)) as client:
        assert client.get("/healthz").json()["reload"]["watching"] is True
        wait_for_inotify_watches(content_copy)  # no edit from here on can be missed
        edit(content_copy)
        assert wait_until(lambda: finds(client), 30, "the saved edit never became searchable") == [ARTICLE]
        (content_copy / f"{ARTICLE}.md").unlink()
        wait_until(lambda: not finds(client), 30, "the deleted article is still found")
        assert ARTICLE not in client.app.state.kb.searcher.articles


def test_service_follows_versions_built_by_another_process(content_copy, tmp_path, tiny_encoder):
    settings = make_settings(content_copy, tmp_path)
    settings = type(settings)(**{**settings.__dict__, "reload_poll_seconds": 0.1})
    build_index(settings, tiny_encoder, progress=False)
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        edit(content_copy)
        report = build_index(settings, tiny_encoder, progress=False)  # as `kb index` / `kb watch` would
        wait_until(lambda: client.get("/healthz").json()["index_version"] == report.build_id, 10,
                   f"the service never followed CURRENT to {report.build_id}")
        assert finds(client) == [ARTICLE]


def test_watching_service_started_without_an_index_builds_one(content_copy, tmp_path, tiny_encoder):
    settings = make_settings(content_copy, tmp_path)
    with TestClient(create_app(settings, encoder=tiny_encoder, watch=True)) as client:
        wait_until(lambda: client.get("/healthz").status_code == 200, 30, "the first build never went into service")
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["counts"]["articles"] == 8


def test_watch_refuses_a_folder_the_index_was_not_built_from(content_copy, tmp_path, tiny_encoder):
    build_index(make_settings(content_copy, tmp_path), tiny_encoder, progress=False)
    other = tmp_path / "other"
    shutil.copytree(content_copy / "Teams", other / "Teams")
    settings = make_settings(other, tmp_path)
    with TestClient(create_app(settings, encoder=tiny_encoder, watch=True)) as client:
        reload = client.get("/healthz").json()["reload"]
        assert reload["watching"] is False and str(content_copy.resolve()) in reload["watch_refused"]
        client.app.state.kb.jobs.wait(30)  # had a catch-up build started, it would have replaced the index
        assert client.get("/healthz").json()["counts"]["articles"] == 8
