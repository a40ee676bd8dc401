"""A real `kb serve` with its side stores on a read-only file, a read-only folder or a full disk (tests/faults.py):
it starts, searches answer 200 throughout, only feedback and event routes answer 503 (JSON, store_unavailable), the
log says each failure once and each recovery once, /metrics counts them, and no traceback is logged."""
from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from kb.feedback import FeedbackStore
from tests.conftest import running_server, wait_until
from tests.faults import fill, read_only, small_disk
from tests.test_metrics import parse, value

pytestmark = pytest.mark.model

QUERIES = ("outlook keeps asking for my password", "teams microphone not working", "onedrive sync stuck")
ARTICLE = "Outlook/outlook-password-prompt"
STORES = ("feedback", "usage", "analytics")


def environment(workdir: Path, feedback: Path, usage: Path, analytics: Path) -> dict[str, str]:
    return {"KB_FEEDBACK_DB": str(feedback), "KB_USAGE_DB": str(usage), "KB_ANALYTICS_DB": str(analytics),
            "KB_AUTH_DB": str(workdir / "auth.sqlite"), "KB_WEBHOOK_DB": str(workdir / "webhooks.sqlite")}


def searches_answer(client: httpx.Client) -> None:
    for query in QUERIES:
        assert client.get("/api/search", params={"q": query}).status_code == 200
    assert client.post("/api/suggest", json={"subject": "Outlook password prompt",
                                             "body": "Outlook asks for my password again and again"}).status_code == 200
    assert client.get("/").status_code == 200 and client.get("/healthz").status_code == 200


def feedback(client: httpx.Client) -> httpx.Response:
    return client.post("/api/feedback", json={"query": "outlook password", "article_id": ARTICLE, "helpful": True})


def event(client: httpx.Client) -> httpx.Response:
    return client.post("/api/events", json={"kind": "copy", "article_id": ARTICLE, "source": "page"})


def refused(response: httpx.Response) -> bool:
    """A 503 of a store that cannot write: JSON with code store_unavailable and Retry-After."""
    return response.status_code == 503 and response.json()["error"]["code"] == "store_unavailable" and \
        response.headers.get("retry-after") == "30"


def unwritable(client: httpx.Client) -> dict[str, float | None]:
    samples = parse(client.get("/metrics").text)
    return {store: value(samples, "kb_side_store_unwritable", store=store) for store in STORES}


def said(log: Path, store: str) -> tuple[int, int]:
    """How often the log says `store` cannot be written, and that it is written again."""
    text = log.read_text()
    return (len(re.findall(rf"{store} store cannot be written:", text)),
            len(re.findall(rf"{store} store is written again:", text)))


def check_degraded(client: httpx.Client, log: Path, summary_total: int | None) -> None:
    """While every store is broken: searches 200, feedback and events 503, the summary as SQLite can still read it."""
    searches_answer(client)
    assert all(refused(feedback(client)) for _ in range(3))
    assert refused(client.post("/feedback", data={"query": "q", "article_id": ARTICLE, "helpful": "yes"},
                               follow_redirects=False))
    wait_until(lambda: refused(event(client)), 15, "POST /api/events never answered 503")
    searches_answer(client)
    summary = client.get("/api/feedback/summary")
    if summary_total is not None:
        assert summary.status_code == 200 and summary.json()["total"] == summary_total
    wait_until(lambda: unwritable(client) == {store: 1.0 for store in STORES}, 15,  # usage: its writer's next batch
               lambda: f"still written: {unwritable(client)}")
    samples = parse(client.get("/metrics").text)
    assert all(value(samples, "kb_side_store_write_errors_total", store=store) >= 1 for store in STORES)
    assert [said(log, store) for store in STORES] == [(1, 0)] * 3, log.read_text()


def check_recovered(client: httpx.Client, log: Path) -> None:
    """Once the disk is fixed: everything is written again, and the log says so once per store."""
    assert feedback(client).status_code == 201
    searches_answer(client)  # the usage log and the event log write with these
    wait_until(lambda: event(client).status_code == 202, 15, "POST /api/events never answered 202 again")
    wait_until(lambda: unwritable(client) == {store: 0.0 for store in STORES}, 15,
               lambda: f"still unwritable: {unwritable(client)}")
    searches_answer(client)
    assert [said(log, store) for store in STORES] == [(1, 1)] * 3, log.read_text()
    assert "Traceback" not in log.read_text() and " 500 " not in log.read_text()


def test_read_only_stores_never_stop_the_service(real_index, tmp_path):
    workdir, folder = tmp_path / "work", tmp_path / "read-only"
    workdir.mkdir()
    folder.mkdir()
    path = tmp_path / "feedback.sqlite"
    store = FeedbackStore(path)
    store.record("", ARTICLE, False, source="article")
    store.close()
    env = environment(workdir, path, folder / "usage.sqlite", folder / "analytics.sqlite")
    with read_only(path) as file_fault, read_only(folder) as folder_fault:
        with running_server(real_index.index_dir, workdir, env=env) as (base, _):  # starts: it did not, before
            with httpx.Client(base_url=base, timeout=30) as client:
                check_degraded(client, workdir / "server.log", summary_total=1)
                file_fault.release()
                folder_fault.release()
                check_recovered(client, workdir / "server.log")
                assert client.get("/api/feedback/summary").json()["total"] == 2


def test_a_full_disk_never_stops_searches(real_index, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    with small_disk(tmp_path / "disk") as disk:
        env = environment(workdir, disk / "feedback.sqlite", disk / "usage.sqlite", disk / "analytics.sqlite")
        with running_server(real_index.index_dir, workdir, env=env) as (base, _):
            with httpx.Client(base_url=base, timeout=30) as client:
                assert feedback(client).status_code == 201
                searches_answer(client)
                filler = fill(disk)
                check_degraded(client, workdir / "server.log", summary_total=1)  # the kept connection still reads
                filler.unlink()
                check_recovered(client, workdir / "server.log")
                assert client.get("/api/feedback/summary").json()["total"] == 2


def test_a_read_only_auth_file_still_lets_keys_search(real_index, tmp_path):
    from kb.keys import KeyStore

    workdir = tmp_path / "work"
    workdir.mkdir()
    keys = KeyStore(workdir / "auth.sqlite")
    _, secret = keys.create("helpdesk", ["search", "suggest", "feedback"], rate="100/min")
    keys.close()
    env = {**environment(workdir, workdir / "feedback.sqlite", workdir / "usage.sqlite",
                         workdir / "analytics.sqlite"), "KB_AUTH": "required"}
    with read_only(workdir / "auth.sqlite") as fault:
        with running_server(real_index.index_dir, workdir, env=env) as (base, _):
            headers = {"Authorization": f"Bearer {secret}"}
            with httpx.Client(base_url=base, timeout=30, headers=headers) as client:
                for _ in range(3):
                    searches_answer(client)  # each one verified from the file, its use not counted meanwhile
                assert feedback(client).status_code == 201
                assert httpx.get(base + "/api/search", params={"q": "outlook"}).status_code == 401  # still required
                fault.release()
                searches_answer(client)
    log = (workdir / "server.log").read_text()
    assert log.count("keys store cannot be written:") == 1 and log.count("keys store is written again:") == 1, log
    assert "Traceback" not in log


# ---- two replicas on one PostgreSQL (KB_DATABASE_URL) ------------------------------------------------------------

def test_two_replicas_share_one_postgres_and_degrade_with_it(real_index, tmp_path, postgres_server):
    """Two `kb serve` processes (replicas, each with its own folder) name one PostgreSQL database: a key made with
    `kb keys create` works on both, feedback sent to one is in the other's summary, and when the database turns
    read-only (a failover) both go on searching with the key while feedback answers 503 and /metrics counts it."""
    import contextlib
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.postgres import ReadOnly

    url = postgres_server.create_database()
    workdirs = [tmp_path / "replica-a", tmp_path / "replica-b"]
    for folder in workdirs:
        folder.mkdir()
    shared = {"KB_DATABASE_URL": url, "KB_AUTH": "required"}
    created = subprocess.run([sys.executable, "-m", "cli.main", "keys", "create", "helpdesk", "--scope", "search",
                              "--scope", "suggest", "--scope", "feedback", "--scope", "analytics", "--json"],
                             env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", **shared}, cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    secret = __import__("json").loads(created.stdout)["secret"]
    headers = {"Authorization": f"Bearer {secret}"}
    with contextlib.ExitStack() as stack:
        bases = [stack.enter_context(running_server(real_index.index_dir, folder, env={
            **shared, "KB_AUTH_DB": str(folder / "auth.sqlite"), "KB_WEBHOOK_DB": str(folder / "webhooks.sqlite")}))[0]
            for folder in workdirs]
        a, b = (stack.enter_context(httpx.Client(base_url=base, timeout=30, headers=headers)) for base in bases)
        for client in (a, b):
            searches_answer(client)  # the key made by `kb keys` is accepted by both replicas
        assert feedback(a).status_code == 201
        assert b.get("/api/feedback/summary").json()["total"] == 1  # what one replica records, the other reads
        fault = ReadOnly(postgres_server, url)
        for client in (a, b):
            searches_answer(client)  # the key is still verified from the read-only database
            assert all(refused(feedback(client)) for _ in range(2))
            assert client.get("/api/feedback/summary").json()["total"] == 1
            samples = parse(client.get("/metrics").text)
            assert value(samples, "kb_side_store_write_errors_total", store="feedback") >= 2
            assert value(samples, "kb_side_store_unwritable", store="feedback") == 1.0
            wait_until(lambda: value(parse(client.get("/metrics").text), "kb_side_store_unwritable",
                                     store="usage") == 1.0, 15, "the usage log's writer never met the read-only store")
        fault.release()
        for client in (a, b):
            assert feedback(client).status_code == 201
            searches_answer(client)
        assert a.get("/api/feedback/summary").json()["total"] == 3
        assert all(not (folder / name).exists() for folder in workdirs
                   for name in ("auth.sqlite", "feedback.sqlite", "usage.sqlite", "webhooks.sqlite"))
    for folder in workdirs:
        log = (folder / "server.log").read_text()
        assert said(folder / "server.log", "feedback") == (1, 1), log
        assert "KB_DATABASE_URL=postgresql://" in log and "Traceback" not in log
