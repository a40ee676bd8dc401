"""Side stores degrade, never stop the service: SideStoreHealth, and each store on a read-only file, a read-only
folder and a full disk (start, fail with one log line and a count, recover with one more), faults of tests/faults.py."""
from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from kb.errors import StoreUnavailable
from kb.events import EventLog
from kb.feedback import FeedbackStore
from kb.settings import load_settings
from kb.side_store import SideStoreHealth
from kb.usage import UsageLog
from tests.faults import fill, read_only, small_disk

LOGGERS = ("kb.feedback", "kb.usage", "kb.events")


def said(caplog, fragment: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name in LOGGERS and fragment in r.getMessage()]


# ---- SideStoreHealth ---------------------------------------------------------------------------------------------

def test_health_logs_the_first_failure_and_the_recovery_once_each(caplog, tmp_path):
    health = SideStoreHealth("feedback", tmp_path / "f.sqlite", "KB_FEEDBACK_DB", logging.getLogger("kb.feedback"),
                             "POST /api/feedback answers 503")
    assert not health.failing and health.unavailable().status == 503
    with caplog.at_level(logging.INFO, logger="kb.feedback"):
        for _ in range(5):
            error = health.failed(sqlite3.OperationalError("attempt to write a readonly database"))
        assert isinstance(error, StoreUnavailable) and error.status == 503 and error.code == "store_unavailable"
        assert error.headers == {"Retry-After": "30"} and error.store == "feedback"
        assert "readonly database" in error.message and "KB_FEEDBACK_DB" in error.message
        assert str(tmp_path) not in error.message  # the file's path is for the log, not for every client
        assert health.failing and health.errors == 5
        for _ in range(3):
            health.succeeded()
        health.failed(OSError(28, "No space left on device"))
        health.succeeded()
    lines = [r for r in caplog.records if r.name == "kb.feedback"]
    assert [r.levelname for r in lines] == ["ERROR", "WARNING", "ERROR", "WARNING"]
    first = lines[0].getMessage()
    assert "feedback store cannot be written" in first and f"KB_FEEDBACK_DB={tmp_path / 'f.sqlite'}" in first
    assert "readonly database" in first and "POST /api/feedback answers 503" in first and "searches go on" in first
    assert "written again" in lines[1].getMessage() and "5 failed writes" in lines[1].getMessage()
    assert health.status() == {"store": "feedback", "path": str(tmp_path / "f.sqlite"), "writable": True,
                               "errors": 6, "reason": None}


# ---- each store under each fault ---------------------------------------------------------------------------------

class Feedback:
    name, logger, filename = "feedback", "kb.feedback", "feedback.sqlite"

    def __init__(self, folder: Path):
        self.store = FeedbackStore(folder / self.filename)
        self.health = self.store.health

    def write(self) -> bool:
        try:
            self.store.record("outlook password", "Outlook/a", True)
        except StoreUnavailable as exc:
            assert exc.status == 503 and exc.code == "store_unavailable"
            return False
        return True

    def count(self) -> int:
        return self.store.summary()["total"]

    def close(self) -> None:
        self.store.close()


class Usage:
    name, logger, filename = "usage", "kb.usage", "usage.sqlite"

    def __init__(self, folder: Path):
        self.store = UsageLog(folder / self.filename)
        self.health = self.store.health

    def write(self) -> bool:
        errors = self.health.errors
        self.store.record(["Outlook/a"])  # never raises: counting must not fail a search
        return self.health.errors == errors

    def count(self) -> int:
        return self.store.returned().get("Outlook/a", 0)

    def close(self) -> None:
        self.store.close()


class Events:
    name, logger, filename = "analytics", "kb.events", "analytics.sqlite"

    def __init__(self, folder: Path):
        self.path = folder / self.filename
        settings = load_settings({}, analytics_db=self.path, feedback_db=folder / "feedback.sqlite")
        self.store = EventLog(settings, None)
        self.health = self.store.health
        self.store.start()
        assert self.store.flush(10)  # the start-up retention run and the file's creation are done

    def write(self) -> bool:
        errors = self.store.stats()["errors"]
        assert self.store.record_action("copy", "page", "Outlook/a")  # never raises, never waits
        assert self.store.flush(10)
        return self.store.stats()["errors"] == errors

    def count(self) -> int:
        if not self.path.is_file():
            return 0
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM events").fetchone()[0]

    def close(self) -> None:
        self.store.close()


STORES = [Feedback, Usage, Events]


def check_degrades_and_recovers(kind, folder: Path, caplog, release, fault=None) -> None:
    """Starting never fails; writes fail (no exception but the 503 of the store's own route), counted, said once;
    after `release()` the next write works and the recovery is said once. `fault`: what breaks the disk once the store
    runs (a full disk), for faults that are there from the start (read-only) None."""
    with caplog.at_level(logging.INFO, logger=kind.logger):
        store = kind(folder)
        try:
            before = store.count()
            if fault is not None:
                assert store.write()
                before += 1
                fault()
            assert [store.write() for _ in range(3)] == [False] * 3
            assert store.health.failing and store.health.errors >= 3
            assert store.count() == before  # reads go on where SQLite can read, and nothing half-written shows
            release()
            assert store.write() and not store.health.failing
            assert store.write() and store.count() == before + 2
        finally:
            store.close()
    assert len(said(caplog, "store cannot be written:")) == 1, said(caplog, "")
    assert len(said(caplog, "store is written again:")) == 1, said(caplog, "")


@pytest.mark.parametrize("kind", STORES, ids=lambda k: k.name)
def test_a_read_only_folder(kind, tmp_path, caplog):
    folder = tmp_path / "stores"
    folder.mkdir()
    with read_only(folder) as fault:
        check_degrades_and_recovers(kind, folder, caplog, fault.release)


@pytest.mark.parametrize("kind", STORES, ids=lambda k: k.name)
def test_a_read_only_file(kind, tmp_path, caplog):
    folder = tmp_path / "stores"
    folder.mkdir()
    first = kind(folder)
    assert first.write()
    first.close()
    with read_only(folder / kind.filename) as fault:
        check_degrades_and_recovers(kind, folder, caplog, fault.release)


@pytest.mark.parametrize("kind", STORES, ids=lambda k: k.name)
def test_a_full_disk(kind, tmp_path, caplog):
    with small_disk(tmp_path / "disk") as folder:
        filled: list[Path] = []
        check_degrades_and_recovers(kind, folder, caplog, lambda: filled[0].unlink(),
                                    fault=lambda: filled.append(fill(folder)))


def test_a_full_disk_keeps_the_feedback_summary_readable(tmp_path):
    with small_disk(tmp_path / "disk") as folder:
        store = FeedbackStore(folder / "feedback.sqlite")
        try:
            store.record("q", "Outlook/a", True)
            fill(folder)
            with pytest.raises(StoreUnavailable):
                store.record("q", "Outlook/a", False)
            assert store.summary()["total"] == 1 and store.recent(5)[0]["helpful"] is True
        finally:
            store.close()


def test_a_store_that_cannot_even_be_read_is_a_503_on_its_reads(tmp_path):
    (tmp_path / "feedback.sqlite").write_bytes(b"this is not a database" * 100)
    store = FeedbackStore(tmp_path / "feedback.sqlite")  # starts anyway
    with pytest.raises(StoreUnavailable) as info:
        store.summary()
    assert info.value.status == 503 and "KB_FEEDBACK_DB" in info.value.message
    assert store.health.failing and "not a database" in store.health.reason
    store.close()
