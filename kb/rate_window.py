"""RateWindow: at most N requests a minute per client, in fixed one-minute windows, in this process's memory."""
from __future__ import annotations

import threading
import time
from typing import Callable

from kb.errors import RateLimited

WINDOW_SECONDS = 60  # as API keys' rates (kb/keys.py), which keep their windows in SQLite across processes


class RateWindow:
    """Fixed one-minute windows, the rule API keys follow (kb/keys.py): a client's count starts again at each minute,
    and a request over `per_minute` gets RateLimited (429) with the seconds until the next window as Retry-After.

    Counts live in memory, one dict for the current window only (cleared when it ends), so the memory held is one
    entry per client seen this minute; each worker process of `kb serve --workers N` counts on its own.
    `per_minute` 0 admits everything.
    """

    def __init__(self, per_minute: int, what: str, clock: Callable[[], float] = time.time):
        if per_minute < 0:
            raise ValueError(f"per_minute must be 0 or more, got {per_minute}")
        self.per_minute, self.what, self.clock = per_minute, what, clock
        self._window = 0
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.refused = 0  # requests refused since start

    def admit(self, client: str) -> None:
        """Count one request of `client`; RateLimited when it is over the rate in this window."""
        if self.per_minute == 0:
            return
        now = self.clock()
        window = int(now // WINDOW_SECONDS * WINDOW_SECONDS)
        with self._lock:
            if window != self._window:
                self._window, self._counts = window, {}
            count = self._counts[client] = self._counts.get(client, 0) + 1
            if count <= self.per_minute:
                return
            self.refused += 1
        retry = max(1, int(window + WINDOW_SECONDS - now + 0.999))
        raise RateLimited(f"more than {self.per_minute} {self.what} a minute from this client; retry in {retry} s",
                          retry_after=retry)
