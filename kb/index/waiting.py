"""Waiting at start for an index engine out of reach (IndexUnavailable): tried again with a bounded backoff."""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterator, TypeVar

from kb.errors import IndexUnavailable

log = logging.getLogger("kb.index")

FIRST_PAUSE = 1.0  # seconds before the second try (at least connection.FAIL_FAST_SECONDS, so that it really tries)
LONGEST_PAUSE = 5.0  # the pause doubles up to this

T = TypeVar("T")


def pauses(first: float = FIRST_PAUSE, longest: float = LONGEST_PAUSE) -> Iterator[float]:
    """1, 2, 4, 5, 5, ... seconds: the pauses between tries."""
    pause = first
    while True:
        yield pause
        pause = min(pause * 2, longest)


def when_reached(attempt: Callable[[], T], wait: float, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> T:
    """attempt()'s result, trying again while it raises IndexUnavailable for at most `wait` seconds
    (KB_MILVUS_START_WAIT; 0: one try), then raising the last IndexUnavailable. Any other error goes up at once.
    The log says once that it waits (the engine's message names it, without credentials) and once that it answered."""
    started = clock()
    try:
        return attempt()
    except IndexUnavailable as exc:
        if wait <= 0:
            raise
        log.warning("%s: waiting up to %g s for it (KB_MILVUS_START_WAIT)", exc.message, wait)
        last = exc
    waits = pauses()
    while True:
        left = started + wait - clock()
        if left <= 0:
            raise last
        sleep(min(next(waits), left))
        try:
            result = attempt()
        except IndexUnavailable as exc:
            last = exc
            continue
        log.info("the index engine answered after %.1f s of waiting: starting", clock() - started)
        return result
