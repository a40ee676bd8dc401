"""API docs pages (/docs, /redoc): vendored assets served by the service itself, no CDN, no inline script."""
import re
import socket
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from indexer.build import build_index
from kb.settings import load_settings
from search.app import create_app
from search.routes.pages import WEB_DIR

FIXTURE_CONTENT = Path(__file__).parent / "fixtures" / "content"


class Assets(HTMLParser):
    """URLs a page loads (script src, link href) and the text of inline scripts and styles."""

    def __init__(self):
        super().__init__()
        self.urls: dict[str, str] = {}
        self.inline: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.urls[attrs["src"]] = "script"
        elif tag == "link" and attrs.get("href"):
            self.urls[attrs["href"]] = attrs.get("rel", "")
        elif tag in ("script", "style"):
            self._in = tag
        if any(name.startswith("on") for name in attrs):
            self.inline.append(f"event handler on <{tag}>")

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in and data.strip():
            self.inline.append(data)


def assets(html: str) -> Assets:
    parser = Assets()
    parser.feed(html)
    return parser


def tiny_service(tmp_path, encoder):
    settings = load_settings({}, content_dir=FIXTURE_CONTENT, index_dir=tmp_path / "index",
                             feedback_db=tmp_path / "fb.sqlite", usage_db=tmp_path / "usage.sqlite",
                             reload_poll_seconds=0)
    build_index(settings, encoder, progress=False)
    return create_app(settings, encoder=encoder)


@pytest.fixture
def client(tmp_path, tiny_encoder):
    with TestClient(tiny_service(tmp_path, tiny_encoder)) as client:
        yield client


@pytest.mark.parametrize("page, script", [("/docs", "/static/vendor/swagger-ui-dist/swagger-ui-bundle.js"),
                                          ("/redoc", "/static/vendor/redoc/redoc.standalone.js")])
def test_docs_pages_load_only_same_origin_assets_and_no_inline_script(client, page, script):
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    found = assets(response.text)
    assert script in found.urls
    assert not re.search(r"https?://", response.text), "a docs page refers to another origin"
    assert all(url.startswith("/static/") and not urlsplit(url).netloc for url in found.urls), found.urls
    assert found.inline == [], "inline script or style would need a CSP exception"


def test_swagger_ui_is_given_the_openapi_document_of_this_service(client):
    html = client.get("/docs").text
    assert 'data-openapi-url="/openapi.json"' in html
    assert "/static/api-docs.js" in assets(html).urls
    assert client.get("/openapi.json").json()["info"]["title"] == "KB Search"
    assert 'spec-url="/openapi.json"' in client.get("/redoc").text


CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_every_asset_of_the_docs_pages_is_served_with_its_content_type(client, page):
    urls = assets(client.get(page).text).urls
    assert len(urls) >= 3  # favicon, stylesheet(s), script(s)
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        suffix = url[url.rfind("."):]
        assert CONTENT_TYPES[suffix] in response.headers["content-type"], (url, response.headers["content-type"])
        assert response.content == (WEB_DIR / url.removeprefix("/")).read_bytes()


def test_swagger_init_script_uses_the_bundle_the_page_loads(client):
    bundle = client.get("/static/vendor/swagger-ui-dist/swagger-ui-bundle.js").text
    init = client.get("/static/api-docs.js").text
    assert "s.SwaggerUIBundle=" in bundle and "presets={base,apis:" in bundle
    assert "SwaggerUIBundle(" in init and "SwaggerUIBundle.presets.apis" in init and "dataset.openapiUrl" in init


def test_vendored_assets_carry_their_licences():
    vendor = WEB_DIR / "static" / "vendor"
    readme = (vendor / "README.md").read_text()
    for package in ("swagger-ui-dist", "redoc"):
        assert (vendor / package / "LICENSE").is_file()
        assert package in readme
    assert "Apache-2.0" in readme and "MIT" in readme


def test_docs_pages_are_not_in_the_openapi_document(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/docs" not in paths and "/redoc" not in paths


# ---- in a real browser ---------------------------------------------------------------------------
# What the docs pages need beyond same-origin scripts: Swagger UI and ReDoc set inline styles, ReDoc runs its
# search in a blob: worker and shows a logo from cdn.redoc.ly (blocked here by img-src; it hides itself).
POLICY = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:"


@pytest.fixture
def live_base(tmp_path, tiny_encoder):
    """The service on a free loopback port in this process (uvicorn in a thread), stopped afterwards."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(tiny_service(tmp_path, tiny_encoder), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started:
            assert thread.is_alive() and time.time() < deadline, "server did not come up"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_docs_pages_render_offline_under_a_policy_without_inline_scripts(live_base):
    from playwright.sync_api import sync_playwright

    outside, problems = [], []

    def same_origin_only(route):
        if not route.request.url.startswith(live_base + "/"):
            outside.append(route.request.url)
            return route.abort()
        response = route.fetch()
        route.fulfill(response=response, headers={**response.headers, "content-security-policy": POLICY})

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
        try:
            context = browser.new_context(base_url=live_base)
            context.route("**/*", same_origin_only)
            page = context.new_page()
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("console", lambda msg: problems.append(msg.text) if "script-src" in msg.text else None)
            page.goto("/docs")
            assert "KB Search" in page.locator(".swagger-ui .info .title").inner_text()
            page.locator(".opblock-summary-path", has_text="/api/suggest").first.wait_for()
            page.goto("/redoc")
            page.locator("h1", has_text="KB Search").wait_for()
            page.fill("input[placeholder='Search...']", "suggest")  # ReDoc's search runs in its worker
            page.locator("[data-role='search:results'] li").first.wait_for(timeout=10000)
        finally:
            browser.close()
    assert outside == [] and problems == []
