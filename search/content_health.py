"""ContentHealth: the service's `kb check` report, computed in a background thread, kept per index and content state."""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import threading

from indexer.health import check_content
from indexer.health_report import HealthReport
from indexer.scan import take_inventory
from kb.errors import KBError
from kb.settings import Settings
from kb.index import IndexReader
from kb.usage import UsageLog

log = logging.getLogger("kb.content_health")


def content_state(settings: Settings) -> str:
    """Digest of every file's path, mtime and size under the content folder ("" when it does not exist)."""
    if not settings.content_dir.is_dir():
        return ""
    stamps = take_inventory(settings.content_dir).stamps
    digest = hashlib.sha256()
    for rel in sorted(stamps):
        digest.update(f"{rel}\0{stamps[rel][0]}\0{stamps[rel][1]}\n".encode())
    return digest.hexdigest()


class ContentHealth:
    """One report at a time, recomputed when the index version, the content files or the date change.

    `get` starts a computation in a background thread when the report is missing or out of date and waits
    for it a little; meanwhile callers get the previous report (marked not fresh) or None. Per-file parse
    results are cached between runs, so after an edit only the changed files are parsed again.
    """

    def __init__(self, settings: Settings, workers: int | None = None):
        self.settings = settings
        self.workers = workers or max(1, (os.cpu_count() or 2) // 2)  # leave CPU for searches
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._scans: dict = {}
        self._report: HealthReport | None = None
        self._error: KBError | None = None
        self._key: tuple | None = None
        self._inputs: tuple[IndexReader | None, UsageLog | None] = (None, None)
        self._thread: threading.Thread | None = None
        self._running: tuple | None = None  # key of the run under way
        self._again = False

    def key(self, index: IndexReader | None, usage: UsageLog | None) -> tuple:
        """What the report depends on: index version, content files, date, and how many articles searches
        have returned (the set only grows, so its size changes exactly when never_returned can change)."""
        returned = len(usage.returned()) if usage is not None else 0
        return (index.build_id if index else None, content_state(self.settings), dt.date.today().isoformat(),
                returned)

    def get(self, index: IndexReader | None, usage: UsageLog | None,
            wait: float = 0.0) -> tuple[HealthReport | None, bool]:
        """(report, fresh): the up-to-date report if it is ready within `wait` seconds, else the last one or None.

        Raises the KBError of the last run (a missing content folder) when it failed.
        """
        key = self.key(index, usage)
        with self._lock:
            self._inputs = (index, usage)
            if self._key != key:
                if self._thread is None:
                    self._running = key
                    self._thread = threading.Thread(target=self._run, name="content-health", daemon=True)
                    self._thread.start()
                elif self._running != key:
                    self._again = True  # a run is under way with older inputs: run once more after it
                self._done.wait_for(lambda: self._key == key, timeout=wait)
            if self._key == key and self._error is not None:
                raise self._error
            return self._report, self._key == key

    def _run(self) -> None:
        """Compute reports until one matches the latest inputs (the key of a run is taken before its scan)."""
        with self._lock:
            key, (index, usage) = self._running, self._inputs
        while True:
            report, error = self._report, None
            leased = index is not None and index.acquire()  # a version replaced meanwhile closes after this run
            try:
                report = check_content(self.settings, index=index, usage=usage, workers=self.workers,
                                       cache=self._scans)
                log.info("content health: %d errors, %d warnings in %.1f s", report.errors, report.warnings,
                         sum(report.seconds.values()))
            except KBError as exc:
                error = exc
            except Exception as exc:  # noqa: BLE001 - report it on the page instead of killing the thread silently
                log.exception("content health check failed")
                error = KBError(f"the content check failed: {exc}")
            finally:
                if leased:
                    index.release()
            with self._lock:
                self._report, self._error, self._key = report, error, key
                self._done.notify_all()
                if not self._again:
                    # Drop the inputs: holding the index version would keep its lease, so prune could never
                    # delete that version while the page is not asked for again.
                    self._thread = self._running = None
                    self._inputs = (None, None)
                    return
                self._again = False
                index, usage = self._inputs
            key = self.key(index, usage)
            with self._lock:
                self._running = key
