"""`kb search --url` / `kb suggest --url`: answers from a running `kb serve`, its API key read from a file, a clear
message when the key is missing, and the index opened here when nothing answers."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.remote import Service, read_key
from kb.errors import BadRequest
from tests.conftest import free_port, running_server

REPO = Path(__file__).parent.parent
TICKET = "Hi,\nOutlook keeps asking for my password every few minutes since this morning.\nThanks,\nAnna"


def kb(*args: str, env: dict, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], input=stdin, capture_output=True, text=True,
                          cwd=REPO, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **env})


def test_key_file_and_url_are_checked(tmp_path):
    (tmp_path / "key").write_text("kb_secret\n")
    assert read_key(str(tmp_path / "key")) == "kb_secret" and read_key(None) is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(BadRequest, match="empty"):
        read_key(str(tmp_path / "empty"))
    with pytest.raises(BadRequest, match="cannot read"):
        read_key(str(tmp_path / "missing"))
    with pytest.raises(BadRequest, match="http"):
        Service("localhost:8000")


@pytest.fixture(scope="module")
def keyed_service(real_index, embedder, tmp_path_factory):
    """`kb serve` on loopback with keys required, and a key in a file with the search, suggest and internal scopes
    (internal: the service shows it internal articles, as the index opened here does)."""
    root = tmp_path_factory.mktemp("remote")
    env = {"KB_AUTH": "required", "KB_AUTH_DB": str(root / "auth.sqlite"), "KB_MODEL_CACHE_DIR": str(embedder.cache_dir)}
    created = kb("keys", "create", "cli", "--scope", "search", "--scope", "suggest", "--scope", "internal",
                 "--json", env=env)
    assert created.returncode == 0, created.stderr
    (root / "key").write_text(json.loads(created.stdout)["secret"] + "\n")
    with running_server(real_index.index_dir, root, env=env) as (base, _):
        yield {"url": base, "key_file": str(root / "key"),
               "env": {"KB_INDEX_DIR": str(real_index.index_dir), "KB_MODEL_CACHE_DIR": str(embedder.cache_dir)}}


@pytest.mark.model
def test_search_and_suggest_through_the_service_match_in_process(keyed_service):
    s = keyed_service
    for args, stdin in ((("search", "outlook password prompt"), None), (("suggest",), TICKET)):
        remote = kb(*args, "--json", "--url", s["url"], "--api-key-file", s["key_file"], env=s["env"], stdin=stdin)
        local = kb(*args, "--json", env=s["env"], stdin=stdin)
        assert remote.returncode == 0 and remote.stderr == "", remote.stderr
        there, here = json.loads(remote.stdout), json.loads(local.stdout)
        assert "answer_id" in there and "answer_id" not in here  # the service answered, and logged it
        hits = "results" if args[0] == "search" else "articles"
        assert [h["id"] for h in there[hits]] == [h["id"] for h in here[hits]]
        assert (there["confident"], there["confidence"]) == (here["confident"], here["confidence"])
    quiet = kb("search", "outlook password prompt", "--quiet", "--url", s["url"], "--api-key-file", s["key_file"],
               env=s["env"])
    assert quiet.stdout.startswith("good match (confidence") and quiet.stderr == ""


@pytest.mark.model
def test_a_service_requiring_keys_says_how_to_give_one(keyed_service):
    run = kb("search", "outlook", "--url", keyed_service["url"], env=keyed_service["env"])
    assert run.returncode == 2 and "--api-key-file" in run.stderr and "Traceback" not in run.stderr
    assert run.stdout == ""


@pytest.mark.model
def test_nothing_listening_opens_the_index_here(real_index, embedder):
    env = {"KB_INDEX_DIR": str(real_index.index_dir), "KB_MODEL_CACHE_DIR": str(embedder.cache_dir)}
    url = f"http://127.0.0.1:{free_port()}"
    quiet = kb("search", "outlook password prompt", "--json", "--url", url, env=env)
    assert quiet.returncode == 0 and quiet.stderr == "" and json.loads(quiet.stdout)["confident"] is True
    told = kb("search", "outlook password prompt", "--url", url, env=env)
    assert told.returncode == 0 and f"no kb serve answers at {url}" in told.stderr
    assert told.stdout.startswith("good match")
