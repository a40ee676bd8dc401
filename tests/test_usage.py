"""UsageLog: per-article counts of search results, created on first record, shared by threads and replicas, no
query text; on SQLite and on a real PostgreSQL (the `side_db` fixture)."""
import datetime as dt
import logging
import sqlite3
import threading

from kb.database import Database
from kb.settings import load_settings
from kb.usage import UsageLog


def test_counts_each_article_once_per_response(side_db):
    log = UsageLog(side_db("usage"))
    assert not log.has_data() and log.returned() == {} and log.since() is None
    log.record(["Outlook/a", "Teams/b", "Outlook/a"])
    log.record(["Outlook/a"])
    log.record([])
    assert log.returned() == {"Outlook/a": 2, "Teams/b": 1}
    assert log.has_data() and log.since() == dt.datetime.now(dt.timezone.utc).date().isoformat()
    log.close()


def test_counts_recorded_later_are_written_by_the_log_s_thread_and_before_its_reads(side_db, monkeypatch):
    """The service's way (record_later): no write in the caller's thread; the writer thread writes one transaction
    within LINGER seconds; this log's reads and close write what is pending first."""
    import time

    from kb import usage

    monkeypatch.setattr(usage, "LINGER", 0.2)
    log, other = UsageLog(side_db("usage")), UsageLog(side_db("usage"))  # `other` reads the store, pending nothing
    writes = []
    write = log._write
    monkeypatch.setattr(log, "_write", lambda counts: (writes.append(threading.current_thread().name),
                                                       write(counts)))
    log.record_later(["Outlook/a", "Teams/b", "Outlook/a"])
    log.record_later(["Outlook/a"])
    log.record_later([])
    deadline = time.monotonic() + 10
    while other.returned() != {"Outlook/a": 2, "Teams/b": 1} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert other.returned() == {"Outlook/a": 2, "Teams/b": 1}
    assert writes and set(writes) == {"usage-writer"}  # written by the writer's thread, not the caller's
    log.record_later(["Teams/b"])
    assert log.returned() == {"Outlook/a": 2, "Teams/b": 2}  # a read of this log writes what is pending first
    log.record_later(["Teams/c"])
    log.close()
    assert other.returned() == {"Outlook/a": 2, "Teams/b": 2, "Teams/c": 1}  # and so does close
    other.close()


def test_reading_never_creates_the_file_recording_creates_folder_and_file(tmp_path):
    path = tmp_path / "new" / "folder" / "usage.sqlite"
    log = UsageLog(path)
    assert not log.has_data() and not path.exists()
    log.record(["a"])
    assert path.is_file()
    log.close()


def test_file_is_wal_and_holds_ids_and_dates_only(tmp_path):
    path = tmp_path / "usage.sqlite"
    log = UsageLog(path)
    log.record(["Outlook/outlook-password-prompt"])
    log.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    columns = [row[1] for row in conn.execute("PRAGMA table_info(returned)")]
    assert columns == ["article_id", "times", "first_returned", "last_returned"]
    assert sorted(row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")) == \
        ["kb_schema", "returned"]
    assert conn.execute("SELECT * FROM kb_schema").fetchall() == [("usage", 1)]  # the schema's version, nothing else
    conn.close()


def test_bad_ids_are_ignored(side_db):
    log = UsageLog(side_db("usage"))
    log.record(["", None, 42, "x" * 1001, "ok"])  # type: ignore[list-item]
    assert log.returned() == {"ok": 1}
    log.close()


def test_threads_share_one_log_without_losing_counts(side_db):
    log = UsageLog(side_db("usage"))

    def work(n: int) -> None:
        for _ in range(50):
            log.record(["shared", f"own-{n}"])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = log.returned()
    assert counts["shared"] == 400 and all(counts[f"own-{n}"] == 50 for n in range(8))
    log.close()


def test_two_logs_on_one_database_add_up(side_db):
    """Two workers on one file, or two replicas on one PostgreSQL."""
    first, second = UsageLog(side_db("usage")), UsageLog(side_db("usage"))
    first.record(["a"])
    second.record(["a", "b"])
    assert first.returned() == {"a": 2, "b": 1}
    first.close()
    second.close()


def test_setting_default_and_environment():
    assert str(load_settings({}).usage_db) == "var/usage.sqlite"
    assert str(load_settings({"KB_USAGE_DB": "/srv/usage.sqlite"}).usage_db) == "/srv/usage.sqlite"


def test_a_read_only_or_unreachable_postgres_never_fails_a_count(postgres_server, caplog):
    from tests.postgres import ReadOnly

    url = postgres_server.create_database()
    log = UsageLog(Database.postgres(url))
    log.record(["a"])
    with caplog.at_level(logging.INFO, logger="kb.usage"):
        fault = ReadOnly(postgres_server, url)
        for _ in range(3):
            log.record(["a", "b"])  # never raises: not counted meanwhile
        assert log.health.failing and log.health.errors == 3 and log.returned() == {"a": 1}
        fault.release()
        log.record(["b"])
    assert log.returned() == {"a": 1, "b": 1} and not log.health.failing
    lines = [r.getMessage() for r in caplog.records if r.name == "kb.usage"]
    assert len(lines) == 2 and "usage store cannot be written: KB_DATABASE_URL=" in lines[0], lines
    log.close()
    gone = UsageLog(Database.postgres("postgresql://kb@/kb?host=/nonexistent/socket/dir", timeout=1))
    gone.record(["a"])
    gone.record(["a"])
    assert gone.health.errors == 2
