"""`kb integrations zendesk-app`: the app folder it writes, and the URLs it refuses."""
import json
import re

import pytest

from cli.integrations import ZAF_SDK, validate_url
from cli.main import main

URL = "https://kb.example.com"


@pytest.fixture
def app_dir(tmp_path, capsys):
    out = tmp_path / "zendesk-app"
    assert main(["integrations", "zendesk-app", "--url", URL + "/", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "KB_FRAME_ANCESTORS" in printed and str(out) in printed
    return out


def test_the_app_folder_has_the_files_zendesk_needs(app_dir):
    files = sorted(str(p.relative_to(app_dir)) for p in app_dir.rglob("*") if p.is_file())
    assert files == ["assets/iframe.html", "assets/main.css", "assets/main.js", "manifest.json",
                     "translations/en.json"]


def test_manifest_is_a_private_v2_ticket_sidebar_app(app_dir):
    manifest = json.loads((app_dir / "manifest.json").read_text())
    assert manifest["location"] == {"support": {"ticket_sidebar": {"url": "assets/iframe.html", "flexible": True}}}
    assert manifest["frameworkVersion"] == "2.0" and manifest["private"] is True
    assert manifest["defaultLocale"] == "en" and manifest["name"] and manifest["version"]
    assert manifest["author"]["name"] and re.match(r"^https?://", manifest["author"]["url"])
    params = {p["name"]: p for p in manifest["parameters"]}
    assert params["kb_url"]["default"] == URL and params["kb_url"]["type"] == "url"
    assert params["kb_api_key"]["secure"] is False and params["kb_api_key"]["required"] is False
    # Zendesk's validation: the location file exists under assets/, a translation file for the default locale
    # with app.name, and no parameter called "name".
    assert (app_dir / manifest["location"]["support"]["ticket_sidebar"]["url"]).is_file()
    translations = json.loads((app_dir / f"translations/{manifest['defaultLocale']}.json").read_text())
    assert translations["app"]["name"] and set(translations["app"]["parameters"]) == set(params)
    assert "name" not in params


def test_iframe_and_script_load_the_sdk_and_frame_the_widget(app_dir):
    page = (app_dir / "assets/iframe.html").read_text()
    assert f'<script src="{ZAF_SDK}"></script>' in page and '<script src="main.js"></script>' in page
    assert f'data-kb-url="{URL}"' in page and 'allow="clipboard-write"' in page
    script = (app_dir / "assets/main.js").read_text()
    assert f'var DEFAULT_KB_URL = "{URL}";' in script and '"/widget"' in script
    for needed in ('"ticket.subject"', '"ticket.description"', '"ticket.id"', '"ticket.tags"', '"kb:ticket"',
                   '"kb:insert"', '"ticket.editor.insert"', '"kb:link"', '"ticket.subject.changed"',
                   '"ticket.description.changed"', "postMessage(message, kbOrigin)"):
        assert needed in script, needed
    assert "subject=" not in script and "body=" not in script  # the ticket never goes into the widget's URL


@pytest.mark.parametrize("url", ["kb.example.com", "ftp://kb.example.com", "https://", "javascript:alert(1)",
                                 "https://user:pw@kb.example.com", "https://kb.example.com/?q=1",
                                 "https://kb.example.com/#x", 'https://kb.example.com/"><script>',
                                 "https://kb.example.com:99999", ""])
def test_a_bad_url_is_a_usage_error(url, tmp_path, capsys):
    assert main(["integrations", "zendesk-app", "--url", url, "--out", str(tmp_path / "out")]) == 2
    assert "--url must be an http(s) URL" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_urls_are_normalised():
    assert validate_url("https://kb.example.com/") == "https://kb.example.com"
    assert validate_url(" https://example.com/kb/ ") == "https://example.com/kb"
    assert validate_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000"


def test_an_http_url_elsewhere_than_loopback_is_warned_about(tmp_path, capsys):
    assert main(["integrations", "zendesk-app", "--url", "http://kb.internal", "--out", str(tmp_path / "a")]) == 0
    assert "not https" in capsys.readouterr().err
    assert main(["integrations", "zendesk-app", "--url", "http://127.0.0.1:8000", "--out", str(tmp_path / "b")]) == 0
    assert "not https" not in capsys.readouterr().err
