"""UsageLog: per-article counts of search results, created on first record, shared by threads, no query text."""
import datetime as dt
import sqlite3
import threading

from kb.settings import load_settings
from kb.usage import UsageLog


def test_counts_each_article_once_per_response(tmp_path):
    log = UsageLog(tmp_path / "var" / "usage.sqlite")
    assert not log.has_data() and log.returned() == {} and log.since() is None
    log.record(["Outlook/a", "Teams/b", "Outlook/a"])
    log.record(["Outlook/a"])
    log.record([])
    assert log.returned() == {"Outlook/a": 2, "Teams/b": 1}
    assert log.has_data() and log.since() == dt.datetime.now(dt.timezone.utc).date().isoformat()
    log.close()


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
    assert [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["returned"]
    conn.close()


def test_bad_ids_are_ignored(tmp_path):
    log = UsageLog(tmp_path / "usage.sqlite")
    log.record(["", None, 42, "x" * 1001, "ok"])  # type: ignore[list-item]
    assert log.returned() == {"ok": 1}
    log.close()


def test_threads_share_one_log_without_losing_counts(tmp_path):
    log = UsageLog(tmp_path / "usage.sqlite")

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


def test_two_logs_on_one_file_add_up(tmp_path):
    first, second = UsageLog(tmp_path / "usage.sqlite"), UsageLog(tmp_path / "usage.sqlite")
    first.record(["a"])
    second.record(["a", "b"])
    assert first.returned() == {"a": 2, "b": 1}
    first.close()
    second.close()


def test_setting_default_and_environment():
    assert str(load_settings({}).usage_db) == "var/usage.sqlite"
    assert str(load_settings({"KB_USAGE_DB": "/srv/usage.sqlite"}).usage_db) == "/srv/usage.sqlite"
