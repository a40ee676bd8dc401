"""Security headers, framing per KB_FRAME_ANCESTORS, cross-site form posts refused, CORS for listed origins only."""
import re

import pytest
from fastapi.testclient import TestClient

from indexer.build import build_index
from kb.settings import load_settings
from search.app import create_app
from search.routes.pages import WEB_DIR
from search.security import answered_hosts, host_name, is_cross_site, parse_hosts, parse_origins, same_origin

HOST = "https://helpdesk.example.com"
APP = "https://app.example.com"
EVIL = "https://evil.example.net"
ARTICLE = "Teams/teams-microphone-not-working"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    from tests.conftest import FIXTURE_CONTENT, TinyEncoder

    root = tmp_path_factory.mktemp("security")
    build_index(load_settings({}, content_dir=FIXTURE_CONTENT, index_dir=root / "index"), TinyEncoder(),
                progress=False)
    return root / "index"


def client_for(index_dir, tmp_path, tiny_encoder, **extra) -> TestClient:
    settings = load_settings({}, index_dir=index_dir, feedback_db=tmp_path / "fb.sqlite",
                             usage_db=tmp_path / "usage.sqlite", reload_poll_seconds=0, **extra)
    return TestClient(create_app(settings, encoder=tiny_encoder))


@pytest.fixture
def client(index_dir, tmp_path, tiny_encoder):
    with client_for(index_dir, tmp_path, tiny_encoder, frame_ancestors=f"{HOST}, https://*.apps.example.org",
                    cors_origins=APP) as client:
        yield client


def csp(response) -> dict[str, str]:
    """The Content-Security-Policy header as {directive: sources}."""
    directives = (part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    return {d[0]: (d[1] if len(d) > 1 else "") for d in directives}


# ---- headers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/suggest", f"/articles/{ARTICLE}", "/no/such/page", "/api/search?q=teams",
                                  "/healthz", "/static/app.js"])
def test_every_response_carries_the_headers_and_only_the_widget_may_be_framed(client, path):
    response = client.get(path, headers={"accept": "text/html"})
    policy = csp(response)
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'" and policy["object-src"] == "'none'"
    assert "unsafe" not in response.headers["content-security-policy"]
    assert policy["frame-ancestors"] == "'none'" and response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_api_docs_may_use_inline_styles_but_no_inline_script(client, path):
    policy = csp(client.get(path))
    assert policy["style-src"] == "'self' 'unsafe-inline'"  # ReDoc's styled-components write <style> elements
    assert policy["worker-src"] == "'self' blob:"  # ReDoc's search
    assert policy["script-src"] == "'self'" and policy["frame-ancestors"] == "'none'"


def test_the_widget_may_be_framed_by_the_configured_origins(client):
    response = client.get("/widget")
    assert response.status_code == 200
    assert csp(response)["frame-ancestors"] == f"'self' {HOST} https://*.apps.example.org"
    assert "x-frame-options" not in response.headers and response.headers["x-content-type-options"] == "nosniff"
    assert f'data-allowed-origins="{HOST} https://*.apps.example.org"' in response.text


def test_without_the_setting_only_the_service_itself_may_frame_the_widget(index_dir, tmp_path, tiny_encoder):
    with client_for(index_dir, tmp_path, tiny_encoder) as client:
        assert csp(client.get("/widget"))["frame-ancestors"] == "'self'"
        assert 'data-allowed-origins=""' in client.get("/widget").text


def test_what_is_not_an_origin_never_reaches_the_policy(index_dir, tmp_path, tiny_encoder):
    assert parse_origins(f"{HOST}/ ,{HOST}  http://127.0.0.1:8080", "X", wildcards=False) == \
        (HOST, "http://127.0.0.1:8080")
    assert parse_origins("https://*.example.com", "X", wildcards=False) == ()
    assert parse_origins("https://*.example.com", "X", wildcards=True) == ("https://*.example.com",)
    hostile = f"{HOST}; script-src * 'unsafe-inline' javascript:alert(1) * 'none' ftp://x.example.com"
    assert parse_origins(hostile, "X", wildcards=True) == ()
    with client_for(index_dir, tmp_path, tiny_encoder, frame_ancestors=hostile) as client:
        response = client.get("/widget")
        assert csp(response)["frame-ancestors"] == "'self'" and "unsafe-inline" not in str(response.headers)


@pytest.mark.parametrize("path", ["/", f"/articles/{ARTICLE}", "/widget", "/docs", "/api/search?q=teams"])
def test_images_come_from_the_service_alone_by_default(client, path):
    assert csp(client.get(path))["img-src"] == "'self' data:"


def test_listed_image_origins_join_every_policy(index_dir, tmp_path, tiny_encoder):
    origins = "https://learn.microsoft.com, https://*.cdn.example.com javascript:alert(1) https://x.example.com;"
    with client_for(index_dir, tmp_path, tiny_encoder, image_origins=origins) as client:
        for path in ("/", f"/articles/{ARTICLE}", "/widget", "/redoc"):
            assert csp(client.get(path))["img-src"] == \
                "'self' data: https://learn.microsoft.com https://*.cdn.example.com", path


def test_templates_and_scripts_have_no_inline_script_handlers_or_styles():
    for template in (WEB_DIR / "templates").glob("*.html"):
        html = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), template.name
        assert not re.search(r"\son[a-z]+\s*=", html, re.I), template.name
        assert not re.search(r"\sstyle\s*=", html, re.I) and "<style" not in html, template.name
        assert "javascript:" not in html, template.name
    for script in (WEB_DIR / "static").glob("*.js"):
        code = script.read_text()
        assert "eval(" not in code and "new Function" not in code and "setAttribute(\"style\"" not in code, script.name


# ---- cross-site posts ----------------------------------------------------------------------------
FORM = {"query": "teams microphone", "article_id": ARTICLE, "helpful": "yes", "source": "search"}
FEEDBACK = {"query": "teams microphone", "article_id": ARTICLE, "helpful": True, "source": "search"}


def total_feedback(client) -> int:
    return client.get("/api/feedback/summary").json()["total"]


@pytest.mark.parametrize("headers", [{"origin": EVIL}, {"sec-fetch-site": "cross-site"},
                                     {"sec-fetch-site": "same-site", "origin": "https://kb.example.net"},
                                     {"origin": "null"}, {"origin": EVIL, "sec-fetch-site": "cross-site"}])
def test_a_cross_site_form_post_is_refused_with_a_page(client, headers):
    response = client.post("/feedback", data=FORM, follow_redirects=False,
                           headers={"accept": "text/html,application/xhtml+xml", **headers})
    assert response.status_code == 403 and response.headers["content-type"].startswith("text/html")
    assert "cross-site" in response.text and "<form" not in response.text.split("<main", 1)[1]
    assert csp(response)["frame-ancestors"] == "'none'"
    assert total_feedback(client) == 0


def test_a_cross_site_post_without_html_accept_gets_the_json_error(client):
    response = client.post("/suggest", data={"subject": "teams", "body": "mic"}, headers={"origin": EVIL})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "cross_site_request" and response.json()["error"]["message"]


def test_same_origin_and_non_browser_form_posts_work(client):
    same = client.post("/feedback", data={**FORM, "next": "/"}, follow_redirects=False,
                       headers={"origin": "http://testserver", "sec-fetch-site": "same-origin"})
    assert same.status_code == 303
    by_origin = client.post("/feedback", data=FORM, follow_redirects=False, headers={"origin": "http://testserver"})
    assert by_origin.status_code == 303
    curl = client.post("/feedback", data=FORM, follow_redirects=False)  # no Origin, no Sec-Fetch-Site
    assert curl.status_code == 303
    assert total_feedback(client) == 3
    page = client.post("/suggest", data={"subject": "Teams microphone", "body": "nobody hears me"},
                       headers={"sec-fetch-site": "same-origin", "accept": "text/html"})
    assert page.status_code == 200 and "Teams" in page.text


def test_api_posts_are_checked_only_when_they_carry_cookies(client):
    # An API call without cookies has no ambient authority (its key is in a header): CORS decides who reads it.
    plain = client.post("/api/feedback", json=FEEDBACK, headers={"origin": EVIL, "sec-fetch-site": "cross-site"})
    assert plain.status_code == 201
    client.cookies.set("lang", "id")
    try:
        cookie = client.post("/api/feedback", json=FEEDBACK, headers={"origin": EVIL, "sec-fetch-site": "cross-site"})
        assert cookie.status_code == 403 and cookie.json()["error"]["code"] == "cross_site_request"
        same = client.post("/api/feedback", json=FEEDBACK, headers={"sec-fetch-site": "same-origin"})
        assert same.status_code == 201
        assert client.post("/api/feedback", json=FEEDBACK).status_code == 201  # curl with a cookie jar
    finally:
        client.cookies.clear()
    assert total_feedback(client) == 3


def test_get_requests_are_never_refused(client):
    response = client.get("/?q=teams", headers={"origin": EVIL, "sec-fetch-site": "cross-site"})
    assert response.status_code == 200


@pytest.mark.parametrize("origin, host, same", [
    ("http://testserver", "testserver", True), ("https://kb.example.com", "kb.example.com:443", True),
    ("https://KB.example.com", "kb.example.com", True), ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
    ("http://127.0.0.1:8001", "127.0.0.1:8000", False), ("https://kb.example.com", "kb.example.com:8443", False),
    ("null", "kb.example.com", False), ("https://evil.example", "kb.example.com", False),
    ("https://kb.example.com:99999", "kb.example.com", False), ("", "kb.example.com", False)])
def test_same_origin(origin, host, same):
    assert same_origin(origin, host) is same


def test_is_cross_site_reads_the_method_path_and_headers():
    from starlette.requests import Request

    def request(method, path, headers):
        raw = [(k.encode(), v.encode()) for k, v in {"host": "kb.example.com", **headers}.items()]
        return Request({"type": "http", "method": method, "path": path, "headers": raw, "root_path": ""})

    assert is_cross_site(request("POST", "/signin", {"sec-fetch-site": "cross-site"}))
    assert not is_cross_site(request("POST", "/signin", {"sec-fetch-site": "none"}))
    assert not is_cross_site(request("GET", "/signin", {"sec-fetch-site": "cross-site"}))
    assert is_cross_site(request("DELETE", "/api/admin/x", {"cookie": "a=b", "origin": EVIL}))
    assert not is_cross_site(request("DELETE", "/api/admin/x", {"origin": EVIL}))


# ---- CORS ----------------------------------------------------------------------------------------
def preflight(client, origin, path="/api/suggest"):
    return client.options(path, headers={"origin": origin, "access-control-request-method": "POST",
                                         "access-control-request-headers": "content-type, x-api-key"})


def test_a_listed_origin_may_call_the_api_from_a_browser(client):
    response = preflight(client, APP)
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == APP
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "x-api-key", "content-type"} <= allowed
    assert "access-control-allow-credentials" not in response.headers
    search = client.get("/api/search?q=teams", headers={"origin": APP})
    assert search.status_code == 200 and search.headers["access-control-allow-origin"] == APP


def test_other_origins_and_pages_get_no_cors(client):
    refused = preflight(client, EVIL)
    assert refused.status_code >= 400 and "access-control-allow-origin" not in refused.headers
    assert "access-control-allow-origin" not in client.get("/api/search?q=teams", headers={"origin": EVIL}).headers
    assert "access-control-allow-origin" not in client.get("/", headers={"origin": APP}).headers


def test_no_cors_by_default(index_dir, tmp_path, tiny_encoder):
    with client_for(index_dir, tmp_path, tiny_encoder) as client:
        response = preflight(client, APP)
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-origin" not in client.get("/api/search?q=a", headers={"origin": APP}).headers


# ---- Host header (DNS rebinding) -----------------------------------------------------------------
@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "LOCALHOST.", "127.0.0.1:8000", "[::1]:8000",
                                  "testserver"])  # the last: the address the request came in on (TestClient's)
def test_loopback_names_and_the_connection_address_are_answered(client, host):
    assert client.get("/healthz", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000", "localhost.attacker.example",
                                  "127.0.0.1.nip.io", "10.0.0.7", "[::2]", ""])
def test_any_other_host_is_400_before_routing(client, host):
    response = client.post("/api/suggest", json={"body": "outlook"}, headers={"host": host})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "host_not_allowed"
    assert "KB_ALLOWED_HOSTS" in response.json()["error"]["message"]
    assert csp(response)["frame-ancestors"] == "'none'"  # still under the security headers


def test_a_browser_on_a_rebound_name_gets_a_page(client):
    response = client.get("/", headers={"host": "attacker.example", "accept": "text/html"})
    assert response.status_code == 400 and response.headers["content-type"].startswith("text/html")


def test_listed_hosts_and_subdomain_patterns(index_dir, tmp_path, tiny_encoder):
    with client_for(index_dir, tmp_path, tiny_encoder, allowed_hosts="kb.example.com, *.corp.example") as client:
        for host, status in (("kb.example.com", 200), ("KB.example.com:443", 200), ("a.corp.example", 200),
                             ("a.b.corp.example", 200), ("corp.example", 400), ("evilcorp.example", 400),
                             ("localhost", 200), ("kb.example.com.attacker.example", 400)):
            assert client.get("/healthz", headers={"host": host}).status_code == status, host
    with client_for(index_dir, tmp_path, tiny_encoder, allowed_hosts="*") as client:
        assert client.get("/healthz", headers={"host": "anything.example"}).status_code == 200


def test_host_names_of_the_setting(caplog):
    with caplog.at_level("WARNING", logger="kb.security"):
        hosts = parse_hosts("KB.Example.com. *.corp.example,::1 [fe80::1] 10.0.0.5 https://x.example kb.example.com:8443 "
                            "a;b *")
    assert hosts == ("kb.example.com", "*.corp.example", "[::1]", "[fe80::1]", "10.0.0.5", "*")
    assert len(caplog.records) == 3  # the URL, the port and the `;` are named and ignored


@pytest.mark.parametrize("header, host", [("kb.example.com:8000", "kb.example.com"), ("[::1]:8000", "[::1]"),
                                          ("[::1]", "[::1]"), ("Example.COM.", "example.com"), ("", "")])
def test_host_name_of_a_header(header, host):
    assert host_name(header) == host


def test_a_network_bind_also_answers_to_the_machine_name_and_its_own_address():
    import socket

    assert answered_hosts(load_settings({})) == ("localhost", "127.0.0.1", "[::1]")
    assert socket.gethostname().lower() in answered_hosts(load_settings({"KB_HOST": "0.0.0.0"}))
    assert "10.1.2.3" in answered_hosts(load_settings({"KB_HOST": "10.1.2.3"}))
    assert answered_hosts(load_settings({"KB_ALLOWED_HOSTS": "kb.example.com"}))[-1] == "kb.example.com"


@pytest.mark.model
def test_a_server_on_all_addresses_answers_by_its_addresses_and_refuses_other_names(real_index, tmp_path):
    """`kb serve --host 0.0.0.0`: reached by any address of the machine (the Host is the address the connection
    came in on) and by the machine's name; a rebound name is refused."""
    import socket

    import httpx

    from tests.conftest import running_server

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # the address the default route leaves from
        try:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    with running_server(real_index.index_dir, tmp_path, args=("--no-watch", "--host", "0.0.0.0")) as (_, port):
        for host, status in ((f"127.0.0.2:{port}", 400), ("attacker.example", 400),
                             (socket.gethostname(), 200), (f"localhost:{port}", 200)):
            response = httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"host": host})
            assert response.status_code == status, host
        assert httpx.get(f"http://{address}:{port}/healthz").status_code == 200  # Host: the address itself
        assert httpx.get(f"http://127.0.0.2:{port}/healthz").status_code == 200  # any loopback address, too
