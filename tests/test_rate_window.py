"""RateWindow: per-client fixed one-minute windows in memory, 429 with Retry-After beyond the rate."""
import threading

import pytest

from kb.errors import RateLimited
from kb.rate_window import RateWindow


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_client_over_its_rate_waits_for_the_next_window():
    clock = Clock(1_000_030.0)  # half way through the window that starts at 1_000_020
    window = RateWindow(3, "feedback answers", clock)
    for _ in range(3):
        window.admit("open:127.0.0.1")
    with pytest.raises(RateLimited) as info:
        window.admit("open:127.0.0.1")
    start = int(clock.now // 60 * 60)
    assert info.value.retry_after == start + 60 - int(clock.now)
    assert info.value.headers == {"Retry-After": str(info.value.retry_after)}
    assert "more than 3 feedback answers a minute" in info.value.message and window.refused == 1
    window.admit("key:widget@10.0.0.7")  # another client has its own count
    clock.now = start + 60  # the next window: counts start again
    for _ in range(3):
        window.admit("open:127.0.0.1")


def test_retry_after_is_at_least_a_second():
    clock = Clock(59.9999)
    window = RateWindow(1, "answers", clock)
    window.admit("a")
    with pytest.raises(RateLimited) as info:
        window.admit("a")
    assert info.value.retry_after == 1


def test_zero_admits_everything_and_a_negative_rate_is_refused():
    window = RateWindow(0, "answers")
    for _ in range(10_000):
        window.admit("a")
    with pytest.raises(ValueError):
        RateWindow(-1, "answers")


def test_only_the_current_window_is_kept():
    clock = Clock(0.0)
    window = RateWindow(5, "answers", clock)
    for n in range(1000):
        window.admit(f"client-{n}")
    clock.now = 60.0
    window.admit("one")
    assert window._counts == {"one": 1}


def test_threads_never_admit_more_than_the_rate():
    window = RateWindow(100, "answers")
    admitted, lock = [], threading.Lock()

    def work():
        for _ in range(50):
            try:
                window.admit("same")
            except RateLimited:
                continue
            with lock:
                admitted.append(1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) <= 100 and window.refused == 400 - len(admitted)
