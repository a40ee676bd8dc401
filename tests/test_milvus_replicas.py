"""Replicas on one Milvus: two `kb serve` processes on loopback share a `milvus-lite server` and a PostgreSQL (a key
made while both run works on both; a build by `kb index` is picked up by both), and a replica whose Milvus dies or
stops answering says so (503 JSON naming the index engine, within a bounded time; /healthz `unavailable`) and
recovers by itself when Milvus is back on the same port and data."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kb.index.milvus.connection import TIMEOUT
from tests.conftest import FIXTURE_CONTENT, REPO, running_server, wait_until
from tests.milvus_server import milvus_lite_server
from tests.test_metrics import parse, value

pytestmark = pytest.mark.model

NEW_ARTICLE = """---
title: Zorblat label printer prints blank labels
summary: The Zorblat label printer feeds labels but prints nothing on them.
product: Printers
tags: [zorblat, label printer]
language: en
audience: public
status: published
owner: support-printers
reviewed: 2026-11-30
---

# Zorblat label printer prints blank labels

## Resolution
Open the Zorblat calibration tool, choose Thermal ribbon, and run the label gap calibration twice.
"""
VERSION = re.compile(r"\bv\d{8}T\d{6,}Z_[0-9a-f]+\b")


def kb(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **env})


def build(content: Path, index_dir: Path, milvus: dict) -> str:
    """`kb index` into Milvus; the name of the version it put into service."""
    run = kb("index", "--content", str(content), "--index-dir", str(index_dir), "--quiet", env=milvus)
    assert run.returncode == 0, run.stdout + run.stderr
    found = VERSION.findall(run.stdout + run.stderr)
    assert found, run.stdout + run.stderr
    return found[-1]


def replica_env(folder: Path, milvus: dict, extra: dict | None = None) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    return {**milvus, "KB_AUTH_DB": str(folder / "auth.sqlite"), "KB_WEBHOOK_DB": str(folder / "webhooks.sqlite"),
            **(extra or {})}


def top(client: httpx.Client, query: str) -> str | None:
    response = client.get("/api/search", params={"q": query})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    return results[0]["id"] if results else None


def serving(client: httpx.Client) -> str | None:
    response = client.get("/healthz")
    return response.json().get("index_version") if response.status_code == 200 else None


def clean_log(path: Path) -> str:
    log = path.read_text()
    assert "Traceback" not in log and '" 500 ' not in log, log
    return log


def test_two_replicas_share_one_milvus_and_one_postgres(tmp_path, postgres_server):
    """Both replicas start on version 1; a key made with `kb keys create` after they started works on both; `kb
    index` with a new article makes version 2, and both answer from it (new article found, /healthz names it)."""
    content = tmp_path / "content"
    shutil.copytree(FIXTURE_CONTENT, content)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(milvus_lite_server(tmp_path / "milvus"))
        milvus = {"KB_INDEX_BACKEND": "milvus", "KB_MILVUS_URI": server.uri}
        first = build(content, tmp_path / "builder", milvus)
        shared = {"KB_DATABASE_URL": postgres_server.create_database(), "KB_AUTH": "required"}
        folders = [tmp_path / "replica-a", tmp_path / "replica-b"]
        bases = [stack.enter_context(running_server(folder / "index", folder,
                                                    env=replica_env(folder, milvus, shared)))[0]
                 for folder in folders]
        anonymous = [stack.enter_context(httpx.Client(base_url=base, timeout=60)) for base in bases]
        for client in anonymous:
            assert client.get("/api/search", params={"q": "onedrive"}).status_code == 401  # keys are required
            assert serving(client) == first

        created = kb("keys", "create", "helpdesk", "--scope", "search", "--scope", "suggest", "--json", env=shared)
        assert created.returncode == 0, created.stderr
        headers = {"Authorization": f"Bearer {json.loads(created.stdout)['secret']}"}
        a, b = (stack.enter_context(httpx.Client(base_url=base, timeout=60, headers=headers)) for base in bases)
        for client in (a, b):  # made after both started, in the database they share: both accept it
            assert top(client, "onedrive sync pending") == "OneDrive/onedrive-sync-stuck"

        (content / "Printers").mkdir()
        (content / "Printers" / "zorblat-blank-labels.md").write_text(NEW_ARTICLE)
        second = build(content, tmp_path / "builder", milvus)
        assert second != first
        for client in (a, b):
            wait_until(lambda: serving(client) == second, 120,
                       lambda: f"{client.base_url} still serves {serving(client)}, not {second}")
            assert top(client, "zorblat label printer blank") == "Printers/zorblat-blank-labels"
            assert top(client, "onedrive sync pending") == "OneDrive/onedrive-sync-stuck"
            suggested = client.post("/api/suggest", json={"subject": "Zorblat labels come out blank",
                                                          "body": "Our Zorblat label printer prints empty labels."})
            assert suggested.status_code == 200 and suggested.json()["articles"][0]["id"] == \
                "Printers/zorblat-blank-labels"
    for folder in folders:
        log = clean_log(folder / "server.log")
        assert f"serving index version {second}" in log
        assert not (folder / "auth.sqlite").exists()  # the keys are in PostgreSQL


def unavailable(response: httpx.Response) -> bool:
    """503 JSON naming the index engine, with Retry-After."""
    if response.status_code != 503 or not response.headers.get("content-type", "").startswith("application/json"):
        return False
    error = response.json()["error"]
    return error["code"] == "index_unavailable" and "Milvus" in error["message"] and \
        response.headers.get("retry-after") == "5"


def health(client: httpx.Client) -> tuple[int, str]:
    response = client.get("/healthz")
    return response.status_code, response.json()["status"]


def engine_gauge(client: httpx.Client) -> float | None:
    return value(parse(client.get("/metrics").text), "kb_index_unavailable")


def check_out_of_reach(client: httpx.Client, version: str) -> None:
    """Searches, suggestions and the search page answer 503 within a bounded time; /healthz says `unavailable`,
    /metrics' kb_index_unavailable is 1."""
    for _ in range(3):
        started = time.monotonic()
        assert unavailable(client.get("/api/search", params={"q": "onedrive sync pending"}))
        assert time.monotonic() - started < 3 * TIMEOUT  # one bounded wait for Milvus, never a hang
    assert unavailable(client.post("/api/suggest", json={"subject": "Outlook password",
                                                         "body": "Outlook asks for my password again and again"}))
    page = client.get("/", params={"q": "onedrive"}, headers={"Accept": "text/html"})
    assert page.status_code == 503 and "could not answer this request" in page.text  # 5xx pages: a plain sentence
    wait_until(lambda: health(client) == (503, "unavailable"), 3 * TIMEOUT,
               lambda: f"/healthz says {client.get('/healthz').text}")
    body = client.get("/healthz").json()
    assert body["error"]["code"] == "index_unavailable" and body["index_version"] == version
    assert engine_gauge(client) == 1.0


def check_recovered(client: httpx.Client, version: str) -> None:
    wait_until(lambda: health(client) == (200, "ok"), 120, lambda: f"/healthz says {client.get('/healthz').text}")
    assert serving(client) == version and engine_gauge(client) == 0.0
    wait_until(lambda: client.get("/api/search", params={"q": "onedrive sync pending"}).status_code == 200, 60,
               "searches never answered 200 again")
    assert top(client, "onedrive sync pending") == "OneDrive/onedrive-sync-stuck"


def test_a_replica_says_milvus_is_out_of_reach_and_recovers(tmp_path):
    """Milvus killed: 503 index_unavailable, /healthz 503 `unavailable`; started again on the same port and data:
    the replica answers again without a restart. Then Milvus frozen (it accepts but never answers): the same, each
    request within a bounded time; thawed: recovered. The log says each loss and each recovery once, no traceback."""
    content = tmp_path / "content"
    shutil.copytree(FIXTURE_CONTENT, content)
    with milvus_lite_server(tmp_path / "milvus") as server:
        milvus = {"KB_INDEX_BACKEND": "milvus", "KB_MILVUS_URI": server.uri}
        version = build(content, tmp_path / "builder", milvus)
        folder = tmp_path / "replica"
        with running_server(folder / "index", folder, env=replica_env(folder, milvus)) as (base, _):
            with httpx.Client(base_url=base, timeout=120) as client:
                assert top(client, "onedrive sync pending") == "OneDrive/onedrive-sync-stuck"
                server.kill()
                check_out_of_reach(client, version)
                server.start()
                check_recovered(client, version)
                server.freeze()
                check_out_of_reach(client, version)
                server.thaw()
                check_recovered(client, version)
    log = clean_log(folder / "server.log")
    lost = re.findall(r"^ERROR kb.index: the index engine \(Milvus at .*\) does not answer \((.*?)\)", log, re.M)
    back = re.findall(r"^WARNING kb.index: the index engine \(Milvus at .*\) answers again$", log, re.M)
    assert lost == ["no connection", "deadline_exceeded: Deadline Exceeded"] and len(back) == 2, log
    assert "failed_versions" not in log and "not put into service" not in log


def serve(index_dir: Path, port: int, env: dict, log: Path) -> subprocess.Popen:
    """`kb serve --no-watch` as a process of its own group, its output in `log` (the caller stops it)."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--index-dir", str(index_dir), "--port",
                                 str(port), "--no-watch"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **env})


def test_a_replica_started_before_milvus_waits_for_it(tmp_path):
    """Milvus down when `kb serve` starts (KB_MILVUS_START_WAIT=120): the replica says once that it waits, naming
    Milvus' URI, and keeps trying; Milvus started a few seconds later on the same port and data, the replica starts
    and /healthz answers 200 with the version built before, the log saying once that Milvus answered."""
    from tests.conftest import free_port, stop_process

    content = tmp_path / "content"
    shutil.copytree(FIXTURE_CONTENT, content)
    with milvus_lite_server(tmp_path / "milvus") as server:
        milvus = {"KB_INDEX_BACKEND": "milvus", "KB_MILVUS_URI": server.uri}
        version = build(content, tmp_path / "builder", milvus)
        server.kill()
        folder, port = tmp_path / "replica", free_port()
        env = replica_env(folder, milvus, {"KB_MILVUS_START_WAIT": "120", **{
            f"KB_{name.upper()}_DB": str(folder / name) for name in ("feedback", "usage", "analytics")}})
        log = folder / "server.log"
        proc = serve(folder / "index", port, env, log)
        try:
            def said(text: str) -> bool:
                assert proc.poll() is None, f"kb serve exited with {proc.returncode}:\n{log.read_text()}"
                return text in log.read_text()

            wait_until(lambda: said(f"(Milvus at {server.uri}) does not answer (no connection): waiting up to 120 s"),
                       120, lambda: f"kb serve never said it waits:\n{log.read_text()}", interval=0.2)
            time.sleep(3)  # still waiting, trying again
            assert proc.poll() is None, log.read_text()
            server.start()
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                def healthy() -> bool:
                    assert proc.poll() is None, f"kb serve exited with {proc.returncode}:\n{log.read_text()}"
                    with contextlib.suppress(httpx.HTTPError):
                        return client.get("/healthz").status_code == 200
                    return False

                wait_until(healthy, 180, lambda: f"kb serve did not come up:\n{log.read_text()}", interval=0.2)
                assert serving(client) == version
                assert top(client, "onedrive sync pending") == "OneDrive/onedrive-sync-stuck"
        finally:
            stop_process(proc, signal.SIGTERM, timeout=30, group=True)
    text = clean_log(log)
    assert len(re.findall(r"waiting up to 120 s for it \(KB_MILVUS_START_WAIT\)$", text, re.M)) == 1, text
    assert len(re.findall(r"^INFO kb.index: the index engine answered after [\d.]+ s of waiting: starting$", text,
                          re.M)) == 1, text


@pytest.mark.parametrize("wait", [0, 3])
def test_a_replica_started_without_milvus_exits_saying_why(tmp_path, wait):
    """No Milvus on KB_MILVUS_URI when `kb serve` starts: after KB_MILVUS_START_WAIT seconds (0: at once) it exits
    with status 2 and one line naming the index engine (an orchestrator starts it again), without a traceback."""
    from tests.conftest import free_port
    from tests.test_index_contract import needs_engine

    needs_engine("milvus")
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {"KB_INDEX_BACKEND": "milvus", "KB_MILVUS_URI": uri, "KB_MILVUS_START_WAIT": str(wait),
           **{f"KB_{name.upper()}_DB": str(tmp_path / name) for name in ("feedback", "usage", "analytics")}}
    started = time.monotonic()
    run = kb("serve", "--index-dir", str(tmp_path / "index"), "--port", str(free_port()), "--no-watch", env=env)
    took = time.monotonic() - started
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"kb serve: error: the index engine (Milvus at {uri}) does not answer" in run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    waited = re.findall(r"waiting up to (\d+) s for it", run.stderr)
    assert waited == ([] if wait == 0 else [str(wait)]), run.stderr
    assert wait <= took < wait + 30, took  # the wait, then the exit (2.5 s with 0 here; no model is loaded)
