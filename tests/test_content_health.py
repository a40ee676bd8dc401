"""/health/content and ContentHealth: the report in the service, recomputed in the background, fed by searches."""
import threading
import time

import pytest
from fastapi.testclient import TestClient

from indexer.build import build_index
from kb.settings import load_settings
from search.app import create_app
from search.content_health import ContentHealth

BROKEN = "\nSee [the old article](no-such-article.md) too.\n"


def append(path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def settings_for(content, tmp_path, **extra):
    return load_settings({}, content_dir=content, index_dir=tmp_path / "index", feedback_db=tmp_path / "fb.sqlite",
                         usage_db=tmp_path / "usage.sqlite", reload_poll_seconds=0, **extra)


@pytest.fixture
def service(content_copy, tmp_path, tiny_encoder):
    append(content_copy / "Teams" / "teams-microphone-not-working.md", BROKEN)
    settings = settings_for(content_copy, tmp_path, usage_min_days=0)  # a fresh log counts at once
    build_index(settings, tiny_encoder, progress=False)
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        yield client


def report_json(client, **params) -> dict:
    """The fresh JSON report (polls while the service answers 202 / "updating")."""
    deadline = time.time() + 60
    while True:
        response = client.get("/health/content", params={"format": "json", **params})
        body = response.json()
        if response.status_code == 200 and body["status"] == "ok":
            return body
        assert time.time() < deadline, body
        time.sleep(0.2)


def test_html_page_lists_counts_and_findings_with_article_links(service):
    report_json(service)
    response = service.get("/health/content", headers={"accept": "text/html"})
    assert response.status_code == 200 and "<h1>Content health</h1>" in response.text
    assert 'href="#kind-broken_link"' in response.text and "no-such-article.md" in response.text
    assert '<a href="/articles/Teams/teams-microphone-not-working"><code>Teams/teams-microphone-not-working.md' \
           in response.text
    # a draft is not indexed: its path is shown without a link
    assert "<code>drafts/upcoming-feature.md</code>" in response.text
    assert 'href="/articles/drafts/upcoming-feature"' not in response.text


def test_json_by_parameter_or_accept_header(service):
    body = report_json(service)
    assert body["counts"]["broken_link"] == 1 and body["errors"] == 1 and body["index_version"]
    finding = next(f for f in body["findings"] if f["kind"] == "broken_link")
    assert finding["path"] == "Teams/teams-microphone-not-working.md" and finding["severity"] == "error"
    by_header = service.get("/health/content", headers={"accept": "application/json"})
    assert by_header.status_code == 200 and by_header.json()["counts"] == body["counts"]


def test_searches_feed_never_returned_without_keeping_query_text(service, tmp_path):
    assert not report_json(service)["counts"]["never_returned"]  # no searches yet: not checked
    query = "teams microphone secret-customer-words"
    hits = service.get("/api/search", params={"q": query, "k": 2}).json()["results"]
    returned = {hit["id"] for hit in hits}
    assert len(returned) == 2
    body = report_json(service)
    never = {f["path"].removesuffix(".md") for f in body["findings"] if f["kind"] == "never_returned"}
    assert never and not never & returned
    assert "drafts/upcoming-feature" not in never  # drafts are not searchable
    assert service.app.state.kb.usage.returned() == dict.fromkeys(returned, 1)
    service.post("/api/suggest", json={"subject": "Outlook", "body": "password prompt keeps coming back", "k": 1})
    assert sum(service.app.state.kb.usage.returned().values()) > 2
    data = b"".join(p.read_bytes() for p in tmp_path.glob("usage.sqlite*"))
    assert b"secret-customer-words" not in data and b"password prompt" not in data


def test_a_usage_log_failure_never_fails_the_search(service, caplog):
    class Broken:
        def record_later(self, ids):
            raise OSError("disk full")

        def returned(self):
            return {}

        def close(self):
            pass

    service.app.state.kb.usage = Broken()
    response = service.get("/api/search", params={"q": "outlook password"})
    assert response.status_code == 200 and response.json()["results"]
    assert service.get("/", params={"q": "outlook password"}).status_code == 200
    assert "could not record returned articles" in caplog.text


def test_report_follows_content_changes(service, content_copy):
    assert report_json(service)["counts"]["broken_link"] == 1
    append(content_copy / "Exchange" / "ndr-5-7-124.md", BROKEN)
    assert report_json(service)["counts"]["broken_link"] == 2


def test_missing_content_folder_is_an_error_page(tmp_path, tiny_encoder):
    settings = settings_for(tmp_path / "nothing", tmp_path)
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        deadline = time.time() + 30
        while (response := client.get("/health/content", params={"format": "json"})).status_code == 202:
            assert time.time() < deadline
            time.sleep(0.1)
        assert response.status_code == 400 and "does not exist" in response.json()["error"]["message"]
        page = client.get("/health/content", headers={"accept": "text/html"})
        assert page.status_code == 400 and "does not exist" in page.text


def test_content_health_computes_in_the_background_and_caches(content_copy, tmp_path, monkeypatch):
    import search.content_health as module

    gate, check = threading.Event(), module.check_content

    def gated_check(*args, **kwargs):  # the test decides when a run may finish, so no scheduling can race it
        assert gate.wait(30)
        return check(*args, **kwargs)

    monkeypatch.setattr(module, "check_content", gated_check)
    health = ContentHealth(settings_for(content_copy, tmp_path), workers=1)
    report, fresh = health.get(None, None, wait=0)
    assert (report, fresh) == (None, False)  # not computed yet: the caller does not wait
    gate.set()
    deadline = time.time() + 30
    while not fresh:
        assert time.time() < deadline
        report, fresh = health.get(None, None, wait=0.2)
    assert report.articles == 9
    assert health.get(None, None) == (report, True)  # same inputs: the same report object
    gate.clear()
    append(content_copy / "Outlook" / "outlook-password-prompt.md", BROKEN)
    stale, fresh = health.get(None, None, wait=0)
    assert stale is report and not fresh  # the older report while the new one is computed
    gate.set()
    updated, fresh = health.get(None, None, wait=30)
    assert fresh and updated.counts["broken_link"] == 1


def test_content_health_does_not_keep_the_index_version_it_checked(content_copy, tmp_path, tiny_encoder):
    import gc
    import weakref

    from kb.index import open_backend

    settings = settings_for(content_copy, tmp_path)
    build_index(settings, tiny_encoder, progress=False)
    version = open_backend(settings.index_dir).open(model_id=tiny_encoder.model_id)
    health = ContentHealth(settings, workers=1)
    report, fresh = health.get(version, None, wait=30)
    assert fresh and report is not None
    released = weakref.ref(version)
    del version
    deadline = time.time() + 10  # the worker thread lets go just after publishing the report
    while released() is not None:  # with the version goes its lease, so prune may delete it
        assert time.time() < deadline, "ContentHealth still holds the index version it checked"
        gc.collect()
        time.sleep(0.05)


def test_code_spans_become_escaped_code_elements():
    from search.routes.content import code_spans

    assert code_spans("run `kb index` <b>now</b>") == "run <code>kb index</code> &lt;b&gt;now&lt;/b&gt;"
    assert code_spans("`<script>alert(1)</script>`") == "<code>&lt;script&gt;alert(1)&lt;/script&gt;</code>"
    assert code_spans("a lone ` stays & so does this") == "a lone ` stays &amp; so does this"


def test_every_check_has_a_name_in_each_language():
    from indexer.health_report import KINDS
    from search.i18n import STRINGS

    for lang in ("en", "id"):
        names = [STRINGS[lang][f"kind_{kind}"] for kind in KINDS]
        assert len(set(names)) == len(KINDS) and not set(names) & set(KINDS)  # distinct, human, not the ids


@pytest.mark.parametrize("lang, name", [("en", "Broken link"), ("id", "Tautan rusak")])
def test_page_names_checks_for_humans_and_keeps_their_ids(service, lang, name):
    report_json(service)
    page = service.get("/health/content", params={"lang": lang}, headers={"accept": "text/html"}).text
    assert f'<h2 id="kind-broken_link" title="broken_link">{name} <span class="muted">(1)</span> ' \
           '<code class="kind-id muted">broken_link</code></h2>' in page
    assert f'<a href="#kind-broken_link">{name}</a> <code class="kind-id muted">broken_link</code>' in page
    assert "<code>kb check</code>" in page and "`" not in page.split("<main", 1)[1].split("</main>", 1)[0]


def test_backticks_in_notes_render_as_code(content_copy, tmp_path, tiny_encoder):
    settings = settings_for(content_copy, tmp_path)  # no index: the near-duplicate note says to run `kb index`
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        report = report_json(client)
        assert any("(run `kb index`)" in note for note in report["notes"])  # JSON keeps the text as it is
        page = client.get("/health/content", headers={"accept": "text/html"}).text
    assert "(run <code>kb index</code>)" in page and "(run `kb index`)" not in page
