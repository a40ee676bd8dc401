"""SIGKILL in the middle of feedback, usage and analytics writes damages no database: `PRAGMA integrity_check` is ok,
nothing reported committed is lost, and the stores open and write again; for a writer process (many rounds, killed
at a random moment) and for a real `kb serve` under feedback and search load."""
from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from kb.events import EventLog
from kb.feedback import FeedbackStore
from kb.settings import load_settings
from kb.usage import UsageLog
from tests.conftest import REPO, read_line, running_server, stop_process, wait_until

FILES = ("feedback.sqlite", "usage.sqlite", "analytics.sqlite")
ROUNDS = 12

# Writes without pause: a feedback row (synchronous=FULL), a usage count and 20 search events a loop, the event log's
# writer thread batching them; after each flush it reports what is committed for sure.
WRITER = """
import sys
from pathlib import Path
from kb.events import EventLog
from kb.feedback import FeedbackStore
from kb.settings import load_settings
from kb.usage import UsageLog

folder = Path(sys.argv[1])
settings = load_settings({}, analytics_db=folder / "analytics.sqlite", feedback_db=folder / "feedback.sqlite",
                         analytics_queue_size=100_000)
feedback, usage, events = FeedbackStore(settings.feedback_db), UsageLog(folder / "usage.sqlite"), EventLog(settings)
events.start()
n = 0
while True:
    last = feedback.record(f"outlook password {n}", "Outlook/a", n % 2 == 0)
    usage.record(["Outlook/a", f"Product/article-{n % 50}"])
    for i in range(20):
        events.record_answer("search", "page", None, f"outlook password {n} {i}", [("Outlook/a", 0.9), ("Teams/b", 0.4)])
    if n % 5 == 0:
        events.flush(10)
        print(f"committed {last} {events.stats()['written']}", flush=True)
    n += 1
"""


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def count(path: Path, sql: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchone()[0]


def check_intact(folder: Path) -> None:
    """Every store passes SQLite's integrity check, and opens and writes again."""
    assert {name: integrity(folder / name) for name in FILES} == {name: "ok" for name in FILES}
    store = FeedbackStore(folder / "feedback.sqlite")
    assert store.record("after the kill", "Outlook/a", True) > 0 and not store.health.failing
    store.close()
    usage = UsageLog(folder / "usage.sqlite")
    usage.record(["Outlook/a"])
    assert not usage.health.failing
    usage.close()
    log = EventLog(load_settings({}, analytics_db=folder / "analytics.sqlite", feedback_db=folder / "feedback.sqlite"))
    log.start()
    assert log.record_action("copy", "page", "Outlook/a") and log.flush(10)
    assert log.stats()["written"] == 1 and not log.health.failing
    log.close()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_writer_killed_at_a_random_moment_damages_nothing(tmp_path, round_):
    chance = random.Random(round_)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        read_line(proc, "committed", timeout=60)  # it is writing
        fd, seen = proc.stdout.fileno(), b""
        # The moment is chosen at random, not waited for: after a few more reports, then within a loop.
        for _ in range(chance.randint(0, 6)):
            assert select.select([fd], [], [], 60)[0], "the writer stopped reporting"
            seen += os.read(fd, 1 << 16)
        threading.Event().wait(chance.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        while chunk := os.read(fd, 1 << 16):
            seen += chunk
    finally:
        stop_process(proc, signal.SIGKILL)
        proc.stdout.close()
    reports = [line.split() for line in seen.decode().split("\n")[:-1] if line.startswith("committed")]
    assert {name: integrity(tmp_path / name) for name in FILES} == {name: "ok" for name in FILES}
    if reports:  # what the writer said was committed before it died is there
        feedback_id, written = int(reports[-1][1]), int(reports[-1][2])
        assert count(tmp_path / "feedback.sqlite", "SELECT max(id) FROM feedback") >= feedback_id
        assert count(tmp_path / "analytics.sqlite", "SELECT count(*) FROM events") >= written
    assert count(tmp_path / "feedback.sqlite", "SELECT count(*) FROM feedback") >= 1
    check_intact(tmp_path)


@pytest.mark.model
def test_a_killed_server_damages_no_side_store(real_index, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {"KB_FEEDBACK_RATE_PER_MIN": "0", "KB_AUTH_DB": str(workdir / "auth.sqlite"),
           "KB_WEBHOOK_DB": str(workdir / "webhooks.sqlite")}
    feedback_db, analytics_db = workdir / "feedback.sqlite", workdir / "analytics.sqlite"
    stop, failures = threading.Event(), []

    def load(base: str, n: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    client.post("/api/feedback", json={"query": f"password {n} {i}",
                                                       "article_id": "Outlook/outlook-password-prompt",
                                                       "helpful": i % 2 == 0})
                    client.get("/api/search", params={"q": f"outlook password {n} {i}"})
                except httpx.HTTPError:
                    if not stop.is_set():
                        failures.append(i)

    with running_server(real_index.index_dir, workdir, env=env) as (base, _):
        pid = httpx.get(base + "/healthz").json()["pid"]
        threads = [threading.Thread(target=load, args=(base, n)) for n in range(3)]
        for thread in threads:
            thread.start()
        try:
            # Killed once both stores are being written, in the middle of the stream of writes.
            wait_until(lambda: feedback_db.is_file() and count(feedback_db, "SELECT count(*) FROM feedback") >= 30
                       and analytics_db.is_file() and count(analytics_db, "SELECT count(*) FROM events") >= 30, 120,
                       "the server did not write feedback and events")
            stop.set()  # the threads' requests in flight are what the kill cuts
            os.kill(pid, signal.SIGKILL)
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
    assert failures == []  # no request failed before the kill
    before = count(feedback_db, "SELECT count(*) FROM feedback")
    check_intact(workdir)
    with running_server(real_index.index_dir, workdir, env=env) as (base, _):  # and it serves again on them
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("/api/search", params={"q": "outlook password"}).status_code == 200
            assert client.post("/api/feedback", json={"query": "q", "article_id": "Outlook/outlook-password-prompt",
                                                      "helpful": True}).status_code == 201
            assert client.get("/api/feedback/summary").json()["total"] == before + 2
