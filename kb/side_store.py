"""SideStoreHealth: a side store that cannot write counts it, says so once, and refuses its own routes with 503."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from kb.errors import StoreUnavailable


class SideStoreHealth:
    """Whether one side store (feedback, usage, analytics events...) can write, as its last attempt found.

    A store calls `failed(exc)` when a write (or opening its file) fails and `succeeded()` when one works. The first
    failure of a run is logged (one line: store, file, setting, reason, what still works); the others are only
    counted in `errors`; the first success after them is logged once more. Nothing here ever raises: `unavailable()`
    makes the 503 a store's own route raises, and searches never see it.
    """

    def __init__(self, store: str, path: Path | str, setting: str, log: logging.Logger, effect: str):
        # `path`: the SQLite file, or the PostgreSQL URL without its password (kb/database.py `where`)
        self.store, self.path, self.setting, self.log, self.effect = store, path, setting, log, effect
        self.errors = 0                      # failed writes since start
        self.reason: str | None = None       # why the last write failed, None while writes work
        self.since: float | None = None      # time.time() of the first failure of the current run
        self.last_failure = 0.0              # time.monotonic() of the last failure
        self._lock = threading.Lock()

    @property
    def failing(self) -> bool:
        return self.reason is not None

    def failed(self, exc: BaseException) -> StoreUnavailable:
        """Count a failed write; log it if writes worked until now. Returns the error the store's route raises."""
        reason = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.errors += 1
            self.last_failure = time.monotonic()
            first = self.reason is None
            self.reason = reason
            if first:
                self.since = time.time()
        if first:
            self.log.error("%s store cannot be written: %s=%s (%s). Meanwhile %s; searches go on. Logged once, "
                           "and once more when it is written again", self.store, self.setting, self.path, reason,
                           self.effect)
        return self.unavailable()

    def succeeded(self) -> None:
        """A write worked: if the store was failing, say once that it is written again."""
        if self.reason is None:
            return
        with self._lock:
            was, self.reason, self.since = self.reason, None, None
        if was is not None:
            self.log.warning("%s store is written again: %s=%s (%d failed writes before)", self.store,
                             self.setting, self.path, self.errors)

    def unavailable(self) -> StoreUnavailable:
        """The 503 of the store's own routes while it cannot write."""
        cause = ("an unreachable or read-only database; the service log names it" if self.setting == "KB_DATABASE_URL"
                 else "a read-only or full disk; the service log names the file")
        return StoreUnavailable(f"the {self.store} store cannot be written right now ({self.reason or 'unknown'}); "
                                f"searches are not affected. The operator should check {self.setting} ({cause})",
                                store=self.store)

    def status(self) -> dict:
        """{store, path, writable, errors, reason}: for /metrics and inspection."""
        return {"store": self.store, "path": str(self.path), "writable": self.reason is None, "errors": self.errors,
                "reason": self.reason}
