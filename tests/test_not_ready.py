"""A service without an index: what the log says (building one, or an admin must), what agents and tools see."""
import logging
import time

import pytest
from fastapi.testclient import TestClient

from kb.settings import load_settings
from search.app import create_app
from search.i18n import STRINGS

HTML = {"accept": "text/html,application/xhtml+xml"}


def make_settings(content, tmp_path):
    return load_settings({}, content_dir=content, index_dir=tmp_path / "index", feedback_db=tmp_path / "fb.sqlite",
                         usage_db=tmp_path / "usage.sqlite", reload_poll_seconds=0)


def app_log(caplog, level):
    return [r.getMessage() for r in caplog.records if r.name == "kb.app" and r.levelno == level]


def test_no_index_without_watching_is_an_error_for_admins(content_copy, tmp_path, tiny_encoder, caplog):
    caplog.set_level(logging.INFO)
    settings = make_settings(content_copy, tmp_path)
    with TestClient(create_app(settings, encoder=tiny_encoder, watch=False)) as client:
        errors = app_log(caplog, logging.ERROR)
        assert errors == [f"index not loaded: no index in {settings.index_dir}: run `kb index --index-dir "
                          f"{settings.index_dir}` first"]
        health = client.get("/healthz")
        assert health.status_code == 503 and "kb index" in health.json()["error"]["message"]
        api = client.get("/api/search", params={"q": "outlook"})
        assert api.status_code == 503 and api.json()["error"]["code"] == "index_not_found"
        assert str(settings.index_dir) in api.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/", "/suggest", "/articles/Outlook/anything"])
@pytest.mark.parametrize("lang", ["en", "id"])
def test_agents_get_a_plain_page_without_paths_or_commands(content_copy, tmp_path, tiny_encoder, path, lang):
    settings = make_settings(content_copy, tmp_path)
    with TestClient(create_app(settings, encoder=tiny_encoder, watch=False)) as client:
        page = client.get(path, params={"lang": lang}, headers=HTML)
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert STRINGS[lang]["error_not_ready"] in page.text and STRINGS[lang]["error_503"] in page.text
    for leak in (str(settings.index_dir), str(tmp_path), "kb index", "index_not_found"):
        assert leak not in page.text


def test_other_server_errors_show_no_details_but_4xx_messages_stay(tmp_path):
    from fastapi import FastAPI, Request

    from kb.errors import ArticleNotFound, IndexMismatch, KBError
    from search.routes.pages import error_page

    app = FastAPI()

    @app.get("/fail/{kind}")
    def fail(request: Request, kind: str):
        exc = {"mismatch": IndexMismatch("index /srv/x was built with model m"), "other": KBError("/srv/secret"),
               "missing": ArticleNotFound("no article 'x'")}[kind]
        return error_page(request, exc)

    client = TestClient(app)
    assert STRINGS["en"]["error_not_ready"] in client.get("/fail/mismatch").text
    other = client.get("/fail/other").text
    assert STRINGS["en"]["error_server"] in other and "/srv/secret" not in other
    assert "no article &#39;x&#39;" in client.get("/fail/missing").text


def test_no_index_while_watching_says_one_is_being_built(content_copy, tmp_path, tiny_encoder, caplog):
    caplog.set_level(logging.INFO)
    settings = make_settings(content_copy, tmp_path)
    with TestClient(create_app(settings, encoder=tiny_encoder, watch=True)) as client:
        assert f"no index yet; building one from {content_copy.resolve()}" in app_log(caplog, logging.INFO)
        deadline = time.time() + 30
        while client.get("/healthz").status_code != 200 and time.time() < deadline:
            time.sleep(0.1)
        assert client.get("/healthz").json()["status"] == "ok"  # the build's version replaced the notice
    assert app_log(caplog, logging.ERROR) == []


def test_while_building_healthz_says_so(content_copy, tmp_path, tiny_encoder):
    import threading

    release = threading.Event()
    encode = tiny_encoder.encode_passages
    tiny_encoder.encode_passages = lambda texts, batch_size=64: (release.wait(30), encode(texts, batch_size))[1]
    settings = make_settings(content_copy, tmp_path)
    with TestClient(create_app(settings, encoder=tiny_encoder, watch=True)) as client:
        try:
            health = client.get("/healthz")
            assert health.status_code == 503 and health.json()["reload"]["build_running"]
            assert health.json()["error"] == {"code": "index_not_found", "message": f"no index yet in "
                                              f"{settings.index_dir}: building one from {content_copy.resolve()}"}
        finally:
            release.set()
        client.app.state.kb.jobs.wait(30)
        assert client.get("/healthz").json()["status"] == "ok"
