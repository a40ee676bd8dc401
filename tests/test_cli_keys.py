"""`kb keys` and `kb serve --insecure` as outside tools use them, and access control against a real server."""
import json
import os
import sqlite3
import subprocess
import sys

import httpx
import pytest

from cli.main import main
from tests.conftest import REPO, running_server


@pytest.fixture
def auth_db(tmp_path, monkeypatch):
    path = tmp_path / "auth.sqlite"
    monkeypatch.setenv("KB_AUTH_DB", str(path))
    return path


def test_create_prints_the_secret_alone_on_the_last_line_and_list_never_shows_it(auth_db, capsys):
    assert main(["keys", "create", "zendesk", "--scope", "suggest", "--scope", "search", "--rate", "120/min",
                 "--expires-days", "30"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    secret = lines[-1]
    assert secret.startswith("kb_") and " " not in secret and len(lines) >= 2
    assert main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert "zendesk" in listed and "search,suggest" in listed and secret not in listed and "never" in listed
    assert main(["keys", "list", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["name"] == "zendesk" and row["scopes"] == ["search", "suggest"] and row["rate_per_min"] == 120
    assert row["expires"] and row["last_used"] is None and row["requests"] == 0 and "secret" not in row


def test_create_json_is_one_object(auth_db, capsys):
    assert main(["keys", "create", "jira", "--scope", "suggest", "--json"]) == 0
    out = capsys.readouterr().out
    body = json.loads(out)
    assert set(body) == {"name", "secret", "scopes", "expires"} and body["scopes"] == ["suggest"]
    assert body["expires"] is None and out.count("\n") == 1


def test_revoke_and_usage_errors(auth_db, capsys):
    assert main(["keys", "create", "old", "--scope", "search"]) == 0
    assert main(["keys", "revoke", "old"]) == 0
    assert "revoked key 'old'" in capsys.readouterr().out
    assert main(["keys", "revoke", "old"]) == 2
    assert main(["keys", "create", "x", "--scope", "root"]) == 2
    assert main(["keys", "create", "y", "--scope", "search", "--rate", "lots"]) == 2
    err = capsys.readouterr().err
    assert "no active key named 'old'" in err and "unknown scope root" in err and "--rate" in err
    with sqlite3.connect(auth_db) as db:
        actions = [r[0] for r in db.execute("SELECT action FROM audit ORDER BY id")]
    assert actions == ["key.create", "key.revoke"]


def test_serve_refuses_auth_off_on_a_network_address_without_insecure(tmp_path):
    env = {**os.environ, "KB_AUTH": "off", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--host", "0.0.0.0", "--index-dir",
                           str(tmp_path / "index"), "--no-watch"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "KB_AUTH=off" in done.stderr and "--insecure" in done.stderr


@pytest.mark.model
def test_statuses_over_http_against_a_real_server(real_index, tmp_path):
    auth_db = tmp_path / "auth.sqlite"
    env = {**os.environ, "KB_AUTH_DB": str(auth_db), "PYTHONPATH": str(REPO)}

    def create(*args) -> str:
        done = subprocess.run([sys.executable, "-m", "cli.main", "keys", "create", *args, "--json"], env=env,
                              capture_output=True, text=True, check=True, timeout=60)
        return json.loads(done.stdout)["secret"]

    helpdesk = create("helpdesk", "--scope", "suggest", "--rate", "3/min")
    reader = create("reader", "--scope", "search")
    with running_server(real_index.index_dir, tmp_path, {"KB_AUTH": "required", "KB_AUTH_DB": str(auth_db),
                                                         "KB_LOG_LEVEL": "warning"}) as (base, _):
        ticket = {"subject": "Outlook keeps asking for my password"}
        missing = httpx.post(f"{base}/api/suggest", json=ticket)
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        ok = httpx.post(f"{base}/api/suggest", json=ticket, headers={"Authorization": f"Bearer {helpdesk}"})
        assert ok.status_code == 200 and ok.json()["articles"]
        wrong_scope = httpx.post(f"{base}/api/suggest", json=ticket, headers={"X-API-Key": reader})
        assert wrong_scope.status_code == 403 and "`suggest` scope" in wrong_scope.json()["error"]["message"]
        statuses = [httpx.post(f"{base}/api/suggest", json=ticket, headers={"X-API-Key": helpdesk}).status_code
                    for _ in range(4)]
        assert 429 in statuses
        limited = httpx.post(f"{base}/api/suggest", json=ticket, headers={"X-API-Key": helpdesk})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        subprocess.run([sys.executable, "-m", "cli.main", "keys", "revoke", "reader"], env=env, check=True,
                       capture_output=True, timeout=60)
        revoked = httpx.get(f"{base}/api/search", params={"q": "outlook"}, headers={"X-API-Key": reader})
        assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "key_revoked"
        assert httpx.get(f"{base}/healthz").status_code == 200
        # A signed-in agent's browser tricked into a form post from another site: refused (CSRF).
        agent = create("agent", "--scope", "search", "--scope", "suggest", "--scope", "feedback")
        with httpx.Client(base_url=base) as browser:
            assert browser.post("/signin", data={"key": agent}, headers={"Origin": base}).status_code == 303
            form = {"article_id": "Outlook/outlook-password-prompt", "helpful": "yes", "source": "article"}
            forged = browser.post("/feedback", data=form, headers={"Origin": "https://evil.example",
                                                                   "Sec-Fetch-Site": "cross-site"})
            assert forged.status_code == 403 and forged.json()["error"]["code"] == "cross_site_request"
            mine = browser.post("/feedback", data=form, headers={"Origin": base, "Sec-Fetch-Site": "same-origin"})
            assert mine.status_code == 303
    log = (tmp_path / "server.log").read_text()
    assert helpdesk not in log and reader not in log and "Outlook keeps asking" not in log
