"""Access control in the service: KB_AUTH modes, 401/403/429, audience, trusted proxies, sign-in sessions, audit."""
import sqlite3

import pytest
from fastapi.testclient import TestClient

from indexer.build import build_index
from kb.audit import AuditLog
from kb.settings import load_settings
from search.app import create_app
from search.auth import SESSION_COOKIE, check_bind, keys_required, required_scope

INTERNAL = "internal/escalation-policy"
HTML = {"accept": "text/html"}


def make_settings(tmp_path, **extra):
    from tests.conftest import FIXTURE_CONTENT

    return load_settings({}, content_dir=FIXTURE_CONTENT, index_dir=tmp_path / "index",
                         feedback_db=tmp_path / "fb.sqlite", usage_db=tmp_path / "usage.sqlite",
                         auth_db=tmp_path / "auth.sqlite", reload_poll_seconds=0, **extra)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    from tests.conftest import TinyEncoder

    root = tmp_path_factory.mktemp("auth")
    build_index(make_settings(root), TinyEncoder(), progress=False)
    return root / "index"


def client_for(tmp_path, index_dir, peer=("203.0.113.9", 40000), **extra):
    from tests.conftest import TinyEncoder

    settings = make_settings(tmp_path, **extra)
    settings = type(settings)(**{**settings.__dict__, "index_dir": index_dir})
    return TestClient(create_app(settings, encoder=TinyEncoder()), client=peer, follow_redirects=False)


@pytest.fixture
def locked(tmp_path, index_dir):
    """A service that requires keys (KB_AUTH=required) and its key store."""
    with client_for(tmp_path, index_dir, auth="required") as client:
        yield client, client.app.state.auth.keys


def ids(response) -> list[str]:
    body = response.json()
    return [hit["id"] for hit in body.get("results", body.get("articles", []))]


def test_auto_is_open_on_loopback_and_required_elsewhere():
    assert not keys_required(load_settings({}))
    assert not keys_required(load_settings({}, host="::1")) and not keys_required(load_settings({}, host="localhost"))
    assert keys_required(load_settings({}, host="0.0.0.0")) and keys_required(load_settings({}, host="10.1.2.3"))
    assert keys_required(load_settings({"KB_AUTH": "required"}))
    assert not keys_required(load_settings({"KB_AUTH": "off"}, host="0.0.0.0"))


def test_auth_off_on_a_network_address_needs_insecure():
    from kb.errors import BadRequest

    with pytest.raises(BadRequest) as info:
        check_bind(load_settings({"KB_AUTH": "off"}, host="0.0.0.0"))
    assert "--insecure" in info.value.message and "KB_AUTH=off" in info.value.message
    check_bind(load_settings({"KB_AUTH": "off"}, host="0.0.0.0"), insecure=True)
    check_bind(load_settings({"KB_AUTH": "off"}))  # loopback: fine


def test_loopback_start_stays_open_and_shows_internal_articles(tmp_path, index_dir):
    with client_for(tmp_path, index_dir, peer=("127.0.0.1", 5000)) as client:
        assert client.get("/api/search", params={"q": "escalation policy severity"}).status_code == 200
        assert INTERNAL in ids(client.get("/api/search", params={"q": "escalation policy severity"}))
        assert client.get(f"/api/articles/{INTERNAL}").status_code == 200
        assert client.get("/", headers=HTML).status_code == 200


def test_no_or_unknown_key_is_401_with_www_authenticate(locked):
    client, _ = locked
    for headers in ({}, {"Authorization": "Bearer kb_nothing"}, {"X-API-Key": "wrong"}, {"Authorization": "Basic x"}):
        response = client.get("/api/search", params={"q": "outlook"}, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer realm=")
        assert set(response.json()["error"]) == {"code", "message"}
    response = client.post("/api/suggest", json={"subject": "outlook"})
    assert response.status_code == 401 and "X-API-Key" in response.json()["error"]["message"]


def test_both_headers_carry_a_key_and_scopes_are_enforced(locked):
    client, keys = locked
    _, secret = keys.create("zendesk", ["suggest"])
    ok = client.post("/api/suggest", json={"subject": "outlook password"}, headers={"X-API-Key": secret})
    assert ok.status_code == 200 and ok.json()["answers"]
    ok = client.post("/api/suggest", json={"subject": "outlook"}, headers={"Authorization": f"Bearer {secret}"})
    assert ok.status_code == 200
    denied = client.get("/api/search", params={"q": "outlook"}, headers={"X-API-Key": secret})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
    assert "`search` scope" in denied.json()["error"]["message"]
    for method, path, scope in (("post", "/api/admin/reindex", "admin"), ("get", "/api/feedback/summary", "analytics"),
                                ("post", "/api/feedback", "feedback")):
        response = getattr(client, method)(path, headers={"X-API-Key": secret})
        assert response.status_code == 403 and f"`{scope}` scope" in response.json()["error"]["message"], path
    assert keys.get("zendesk").requests == 6


def test_expired_and_revoked_keys_are_401_saying_which(locked, tmp_path):
    client, keys = locked
    _, old = keys.create("old", ["search"])
    _, gone = keys.create("gone", ["search"])
    with sqlite3.connect(tmp_path / "auth.sqlite") as db:
        db.execute("UPDATE api_keys SET expires = '2020-01-01T00:00:00+00:00' WHERE name = 'old'")
    keys.revoke("gone")
    expired = client.get("/api/search", params={"q": "x"}, headers={"X-API-Key": old})
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "key_expired"
    assert "expired on 2020-01-01" in expired.json()["error"]["message"]
    assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]
    revoked = client.get("/api/search", params={"q": "x"}, headers={"X-API-Key": gone})
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "key_revoked"


def test_over_the_rate_is_429_with_retry_after(locked):
    client, keys = locked
    _, secret = keys.create("bot", ["search"], rate="2/min")
    statuses = [client.get("/api/search", params={"q": "outlook"}, headers={"X-API-Key": secret}).status_code
                for _ in range(3)]
    assert statuses[2] == 429 or statuses[1] == 429  # 2 a minute; a window may start between the first two
    limited = client.get("/api/search", params={"q": "outlook"}, headers={"X-API-Key": secret})
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["error"]["code"] == "rate_limited"


def test_internal_articles_need_the_internal_scope(locked):
    client, keys = locked
    _, public = keys.create("public", ["search", "suggest"])
    _, inside = keys.create("inside", ["search", "suggest", "internal"])
    q = {"q": "escalation policy severity tier 2", "k": 20}
    assert INTERNAL not in ids(client.get("/api/search", params=q, headers={"X-API-Key": public}))
    assert INTERNAL in ids(client.get("/api/search", params=q, headers={"X-API-Key": inside}))
    filtered = client.get("/api/search", params={**q, "audience": "internal"}, headers={"X-API-Key": public})
    assert filtered.status_code == 200 and ids(filtered) == []
    ticket = {"subject": "When do I escalate a severity 1 ticket to tier 2?", "k": 20}
    assert INTERNAL not in ids(client.post("/api/suggest", json=ticket, headers={"X-API-Key": public}))
    assert INTERNAL in ids(client.post("/api/suggest", json=ticket, headers={"X-API-Key": inside}))
    hidden = client.get(f"/api/articles/{INTERNAL}", headers={"X-API-Key": public})
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "article_not_found"
    assert client.get(f"/api/articles/{INTERNAL}", headers={"X-API-Key": inside}).status_code == 200


def test_open_routes_stay_open(locked):
    client, _ = locked
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/signin", headers=HTML).status_code == 200
    assert client.get("/static/style.css").status_code == 200


def test_every_route_needs_a_scope_unless_listed_open(locked):
    client, _ = locked
    paths = client.get("/openapi.json").json()["paths"]
    for path, methods in paths.items():
        for method in methods:
            scope = required_scope(method.upper(), path, path)
            assert scope is not None or path in ("/healthz",), (method, path)
            if path.startswith("/api/admin/"):
                assert scope == "admin"
    assert required_scope("GET", "/api/something-new", None) == "admin"  # closed by default
    security = client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert {s["type"] for s in security.values()} == {"http", "apiKey"}


def test_pages_send_a_browser_to_sign_in_and_a_session_works(locked):
    client, keys = locked
    _, secret = keys.create("agent.ani", ["search", "suggest", "feedback"])
    first = client.get("/articles/Outlook/outlook-password-prompt", headers=HTML)
    assert first.status_code == 303 and first.headers["location"] == "/signin?next=%2Farticles%2FOutlook%2Foutlook-password-prompt"
    refused = client.post("/signin", data={"key": "kb_wrong", "next": "/"}, headers=HTML)
    assert refused.status_code == 401 and "kb_wrong" not in refused.text and SESSION_COOKIE not in refused.headers.get("set-cookie", "")
    signed = client.post("/signin", data={"key": secret, "next": "/articles/Outlook/outlook-password-prompt"})
    assert signed.status_code == 303 and signed.headers["location"] == "/articles/Outlook/outlook-password-prompt"
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower() and secret not in cookie
    page = client.get("/articles/Outlook/outlook-password-prompt", headers=HTML)
    assert page.status_code == 200 and "agent.ani" in page.text
    # Signed-in agents see internal articles, through pages and the API alike.
    assert client.get(f"/articles/{INTERNAL}", headers=HTML).status_code == 200
    assert client.get(f"/api/articles/{INTERNAL}").status_code == 200
    # A tampered cookie is no session; revoking the key ends the session.
    value = client.cookies[SESSION_COOKIE]
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, value[:-2] + "xx")
    assert client.get("/", headers=HTML).status_code == 303
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, value)
    assert client.get("/", headers=HTML).status_code == 200
    keys.revoke("agent.ani")
    assert client.get("/api/search", params={"q": "outlook"}).status_code == 401
    out = client.post("/signout")
    assert out.status_code == 303 and SESSION_COOKIE in out.headers["set-cookie"]


def test_sign_in_needs_a_key_that_may_search(locked):
    client, keys = locked
    _, webhook_only = keys.create("hook", ["suggest"])
    response = client.post("/signin", data={"key": webhook_only}, headers=HTML)
    assert response.status_code == 403 and SESSION_COOKIE not in response.headers.get("set-cookie", "")


def test_a_trusted_proxy_names_the_agent_and_others_cannot(tmp_path, index_dir):
    with client_for(tmp_path, index_dir, peer=("10.0.0.7", 5000), auth="required",
                    trusted_proxies="10.0.0.0/24") as client:
        page = client.get("/", params={"q": "outlook"}, headers={**HTML, "X-Forwarded-User": "budi@example.com"})
        assert page.status_code == 200 and "budi@example.com" in page.text
        assert client.get(f"/api/articles/{INTERNAL}", headers={"X-Forwarded-User": "budi"}).status_code == 200
        assert client.get("/", headers=HTML).status_code == 303  # the proxy sent no user
    with client_for(tmp_path, index_dir, peer=("198.51.100.4", 5000), auth="required",
                    trusted_proxies="10.0.0.0/24") as client:
        forged = client.get("/api/search", params={"q": "outlook"}, headers={"X-Forwarded-User": "admin"})
        assert forged.status_code == 401


def test_admin_actions_are_audited_and_the_admin_token_still_works(locked, tmp_path):
    client, keys = locked
    _, admin = keys.create("ops", ["admin"])
    response = client.post("/api/admin/reindex", headers={"X-API-Key": admin})
    assert response.status_code == 202
    client.app.state.kb.jobs.wait(30)
    entries = AuditLog(tmp_path / "auth.sqlite").recent()
    assert entries[0]["actor"] == "key:ops" and entries[0]["action"] == "admin.reindex"
    assert entries[0]["target"] == response.json()["job"]["id"]
    assert admin not in str(entries)


def test_admin_token_guards_admin_routes_on_an_open_start(tmp_path, index_dir):
    with client_for(tmp_path, index_dir, peer=("127.0.0.1", 1), admin_token="s3cret") as client:
        assert client.post("/api/admin/reindex").status_code == 401
        assert client.get("/api/search", params={"q": "outlook"}).status_code == 200
        assert client.post("/api/admin/reindex", headers={"Authorization": "Bearer s3cret"}).status_code == 202
        client.app.state.kb.jobs.wait(30)


def test_healthz_tells_anonymous_network_callers_no_server_paths(locked):
    client, keys = locked
    state = client.app.state.kb
    state.watch_refused = "not watching /srv/secret/content: the index in service was built from /srv/other"
    state.failed["20260101-abc"] = "vectors.faiss in /srv/secret/index is damaged"
    anonymous = client.get("/healthz").json()
    assert anonymous["status"] == "ok" and "/srv/secret" not in str(anonymous)
    assert anonymous["reload"]["failed_versions"].keys() == {"20260101-abc"} and anonymous["reload"]["watch_refused"]
    _, secret = keys.create("monitor", ["analytics"])
    detailed = client.get("/healthz", headers={"X-API-Key": secret}).json()
    assert "/srv/secret/content" in detailed["reload"]["watch_refused"]


def test_scopes_any_of_and_analytics_for_named_proxy_users():
    assert required_scope("GET", "/metrics", "/metrics") == ("analytics", "admin")
    assert required_scope("GET", "/api/analytics/summary", None) == "analytics"
    assert required_scope("POST", "/api/events", None) == "feedback"


def test_named_proxy_users_may_read_analytics(tmp_path, index_dir):
    with client_for(tmp_path, index_dir, peer=("10.0.0.7", 5000), auth="required", trusted_proxies="10.0.0.7",
                    analytics_users="Manager@example.com, lead") as client:
        manager = client.get("/api/feedback/summary", headers={"X-Forwarded-User": "manager@example.com"})
        agent = client.get("/api/feedback/summary", headers={"X-Forwarded-User": "rina@example.com"})
        assert manager.status_code == 200 and agent.status_code == 403
        assert "`analytics` scope" in agent.json()["error"]["message"]
