"""RateWindow: at most N requests a minute per client, in fixed one-minute windows, in this process's memory."""
from __future__ import annotations

import threading
import time
from typing import Callable

from kb.errors import RateLimited

WINDOW_SECONDS = 60  # as API keys' rates (kb/keys.py), which keep their windows in SQLite across processes


def retry_after(now: float) -> int:
    """Whole seconds from `now` to the start of the next window (at least 1): a 429's Retry-After."""
    return max(1, int(now // WINDOW_SECONDS * WINDOW_SECONDS + WINDOW_SECONDS - now + 0.999))


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

    def hit(self, client: str, now: float | None = None) -> int:
        """Count one request of `client`; how many it made in this window, this one included."""
        now = self.clock() if now is None else now
        window = int(now // WINDOW_SECONDS * WINDOW_SECONDS)
        with self._lock:
            if window != self._window:
                self._window, self._counts = window, {}
            count = self._counts[client] = self._counts.get(client, 0) + 1
        return count

    def admit(self, client: str) -> None:
        """Count one request of `client`; RateLimited when it is over the rate in this window."""
        if self.per_minute == 0:
            return
        now = self.clock()
        if self.hit(client, now) <= self.per_minute:
            return
        with self._lock:
            self.refused += 1
        retry = retry_after(now)
        raise RateLimited(f"more than {self.per_minute} {self.what} a minute from this client; retry in {retry} s",
                          retry_after=retry)
