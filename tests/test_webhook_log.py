"""WebhookLog (KB_WEBHOOK_DB or KB_DATABASE_URL): one claim per ticket, audience and replay window, across processes
and replicas; expiry on write; a database that cannot be written falls back to the caller's per-process rule.
The contract runs on both engines (`side_db`: a SQLite file, then a real PostgreSQL database)."""
import logging
import signal
import subprocess
import sys

from kb.database import Database
from kb.webhook_log import EXPIRE_PER_WRITE, WebhookLog
from tests.conftest import REPO, release_together, stop_process


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_one_claim_per_ticket_and_audience_within_the_window(side_db):
    clock = Clock()
    first, second = (WebhookLog(side_db("webhooks"), 300, clock=clock) for _ in range(2))  # two workers or replicas
    try:
        assert first.claim("zendesk", "1", False) is True
        assert second.claim("zendesk", "1", False) is False
        assert first.claim("zendesk", "1", False) is False
        assert second.claim("zendesk", "1", True) is True  # another audience: another answer
        assert second.claim("freshdesk", "1", False) is True  # another helpdesk's ticket 1
        assert first.claim("zendesk", "2", False) is True
        clock.now += 299
        assert second.claim("zendesk", "1", False) is False
        clock.now += 1  # the window has passed: the next delivery is answered (and written back) afresh
        assert second.claim("zendesk", "1", False) is True
        assert first.claim("zendesk", "1", False) is False
        assert first.errors == second.errors == 0
    finally:
        first.close()
        second.close()


def test_the_note_flag_and_what_a_row_holds(side_db):
    log = WebhookLog(side_db("webhooks"), 300, clock=Clock(100.0))
    try:
        assert log.claim("zendesk", "35436", True)
        log.noted("zendesk", "35436", True)
        assert log.claim("generic", "SD-4", False)
        assert log.rows() == [("generic", "SD-4", 0, 100.0, 0), ("zendesk", "35436", 1, 100.0, 1)]
    finally:
        log.close()


def test_expired_rows_are_deleted_on_write_a_bounded_number_at_a_time(side_db):
    clock = Clock()
    log = WebhookLog(side_db("webhooks"), 60, clock=clock)
    try:
        for n in range(EXPIRE_PER_WRITE + 50):
            assert log.claim("zendesk", str(n), False)
        clock.now += 61
        assert log.claim("zendesk", "new", False)
        assert len(log.rows()) == 50 + 1  # at most EXPIRE_PER_WRITE expired rows go per claim, oldest first
        assert log.claim("zendesk", "newer", False)
        assert [row[1] for row in log.rows()] == ["new", "newer"]
        assert log.claim("zendesk", "0", False)  # its old row is gone: claimed afresh
    finally:
        log.close()


CLAIM = r"""
import sys
from pathlib import Path
from kb.database import Database
from kb.webhook_log import WebhookLog
where = sys.argv[1]
log = WebhookLog(Database.postgres(where) if where.startswith("postgresql://") else Path(where), 300)
log.rows()  # connected (and, on SQLite, the file opened) before the go
print("ready", flush=True)
sys.stdin.readline()  # the go: every process is started with its log open
print(log.claim("zendesk", "4242", False))
"""


def test_exactly_one_of_several_processes_claims_a_ticket(side_db):
    """Worker processes on one SQLite file, or replicas on one PostgreSQL database: one claim wins."""
    database = side_db("webhooks")
    WebhookLog(database, 300).close()
    path = database.target
    procs = [subprocess.Popen([sys.executable, "-c", CLAIM, str(path)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = []
    try:
        release_together(procs)  # all started with the log open; they claim at the same moment
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            results.append(out.strip())
    finally:
        for proc in procs:
            stop_process(proc, signal.SIGKILL)
    assert sorted(results) == ["False", "False", "False", "True"]
    log = WebhookLog(database, 300)
    try:
        assert [row[:3] for row in log.rows()] == [("zendesk", "4242", 0)]
    finally:
        log.close()


def test_a_file_that_cannot_be_written_lets_every_claim_through_logged_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="kb.webhooks")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    log = WebhookLog(blocked / "webhooks.sqlite", 300)
    assert [log.claim("zendesk", "1", False) for _ in range(3)] == [True, True, True]
    log.noted("zendesk", "1", False)
    assert log.errors == 3
    assert [r.levelname for r in caplog.records if "cannot be written" in r.getMessage()] == ["WARNING"]
    blocked.unlink()  # writable again: the log is used again, and says so once
    assert log.claim("zendesk", "1", False) is True
    assert log.claim("zendesk", "1", False) is False
    assert sum("is written again" in r.getMessage() for r in caplog.records) == 1
    assert log.errors == 3
    log.close()


def test_a_file_locked_past_the_timeout_is_a_fallback_not_an_error_page(tmp_path):
    import sqlite3

    path = tmp_path / "webhooks.sqlite"
    log = WebhookLog(path, 300, timeout=0.1)
    assert log.claim("zendesk", "1", False) is True
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        assert log.claim("zendesk", "2", False) is True and log.errors == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert log.claim("zendesk", "1", False) is False and log.claim("zendesk", "2", False) is True
    assert log.errors == 1
    log.close()


def test_a_database_out_of_reach_or_read_only_lets_every_claim_through_logged_once(postgres_server, caplog):
    from tests.postgres import ReadOnly

    caplog.set_level(logging.INFO, logger="kb.webhooks")
    url = postgres_server.create_database()
    log = WebhookLog(Database.postgres(url), 300)
    assert log.claim("zendesk", "1", False) is True
    fault = ReadOnly(postgres_server, url)
    assert [log.claim("zendesk", "1", False) for _ in range(3)] == [True, True, True]
    assert log.errors == 3
    fault.release()
    assert log.claim("zendesk", "1", False) is False  # the claim made before the fault holds
    lines = [r.getMessage() for r in caplog.records if r.name == "kb.webhooks"]
    assert len([m for m in lines if "cannot be written" in m and "KB_DATABASE_URL" in m]) == 1
    assert len([m for m in lines if "is written again" in m]) == 1
    log.close()
    gone = WebhookLog(Database.postgres("postgresql://kb@/kb?host=/nonexistent/socket/dir", timeout=1), 300)
    assert [gone.claim("zendesk", "1", False) for _ in range(3)] == [True, True, True] and gone.errors == 3
    gone.close()
