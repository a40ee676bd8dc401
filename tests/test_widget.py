"""GET /widget: the ticket-sidebar shell, its languages, and what it puts (and never puts) into the page."""
import html
import re

import pytest
from fastapi.testclient import TestClient

from indexer.build import build_index
from kb.settings import load_settings
from search.app import create_app
from search.i18n import STRINGS
from search.routes.pages import WEB_DIR

HOST = "https://acme.zendesk.example"


@pytest.fixture
def client(content_copy, tmp_path, tiny_encoder):
    settings = load_settings({}, content_dir=content_copy, index_dir=tmp_path / "index",
                             feedback_db=tmp_path / "fb.sqlite", usage_db=tmp_path / "usage.sqlite",
                             reload_poll_seconds=0, frame_ancestors=HOST)
    build_index(settings, tiny_encoder, progress=False)
    with TestClient(create_app(settings, encoder=tiny_encoder)) as client:
        yield client


def test_the_widget_page_is_a_shell_with_its_own_script_and_styles(client):
    response = client.get("/widget")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert '<script src="/static/widget.js" defer></script>' in page
    assert '<link rel="stylesheet" href="/static/widget.css">' in page
    assert f'data-allowed-origins="{HOST}"' in page and 'id="answer-template"' in page
    assert response.headers["cache-control"] == "no-store"
    for name in ("widget.js", "widget.css"):
        assert client.get(f"/static/{name}").status_code == 200


@pytest.mark.parametrize("lang", ["en", "id"])
def test_the_widget_speaks_both_languages(client, lang):
    page = html.unescape(client.get(f"/widget?lang={lang}").text)
    strings = STRINGS[lang]
    assert f'<html lang="{lang}">' in page
    for key in ("widget_title", "widget_insert", "widget_copy_link", "widget_link", "widget_waiting",
                "helpful_question", "no_good_article", "widget_error_auth"):
        assert strings[key] in page, key


def test_the_browser_language_is_used_without_a_parameter(client):
    page = client.get("/widget", headers={"accept-language": "id-ID,id;q=0.9"}).text
    assert html.escape(STRINGS["id"]["widget_insert"]) in page


def test_both_languages_have_the_same_keys():
    assert set(STRINGS["en"]) == set(STRINGS["id"])
    assert all(STRINGS["id"][key].strip() for key in STRINGS["en"] if key.startswith("widget_"))


def test_query_parameters_reach_the_script_escaped(client):
    hostile = '"><script>alert(1)</script>'
    page = client.get("/widget", params={"subject": hostile, "body": "Outlook asks for my password",
                                         "ticket_id": "42"}).text
    assert "<script>alert(1)" not in page
    assert 'data-subject="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page
    assert 'data-body="Outlook asks for my password"' in page and 'data-ticket-id="42"' in page


def test_the_script_builds_no_urls_with_ticket_text():
    script = (WEB_DIR / "static" / "widget.js").read_text()
    assert "?q=" not in script and "subject=" not in script and "body=" not in script
    assert "credentials: \"same-origin\"" in script and "X-API-Key" in script
    assert re.search(r"postMessage\(\{ type: \"kb:ready\" \}, \"\*\"\)", script)
    assert script.count("postMessage(") == 2  # kb:ready to "*"; everything else through tell() to the host
    assert "window.parent.postMessage(message, host)" in script
