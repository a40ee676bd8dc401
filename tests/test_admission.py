"""Admission control: the limiter's slots, queue and wait bound; 503 + Retry-After through the app; exempt routes."""
import asyncio
import random
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from indexer.build import build_index
from kb.errors import Overloaded
from kb.settings import load_settings
from search.admission import THREAD_RESERVE, Limiter, limiter_for
from search.app import create_app
from tests.conftest import FIXTURE_CONTENT, TinyEncoder, running_server
from tests.test_metrics import parse, value


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 10))


async def settle():
    """Let every task that can run, run until it waits again (a few loop turns; no wall-clock time involved)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_admits_up_to_the_limit_then_hands_slots_over_in_arrival_order():
    async def scenario():
        limiter = Limiter(2, 4, 5.0)
        await limiter.acquire()
        await limiter.acquire()
        order = []

        async def waiter(name):
            await limiter.acquire()
            order.append(name)

        tasks = [asyncio.create_task(waiter(name)) for name in ("first", "second")]
        await settle()
        assert (limiter.in_flight, limiter.waiting, order) == (2, 2, [])
        limiter.release()
        await settle()
        assert order == ["first"] and limiter.in_flight == 2  # the slot passed on, never back to the pool
        limiter.release()
        await asyncio.gather(*tasks)
        assert order == ["first", "second"]
        limiter.release()
        limiter.release()
        assert limiter.stats() == {"in_flight": 0, "waiting": 0, "admitted": 4,
                                   "rejected": {"queue_full": 0, "wait_timeout": 0}}
    run(scenario())


def test_a_full_queue_refuses_at_once_with_503_and_retry_after():
    async def scenario():
        limiter = Limiter(1, 1, 5.0)
        await limiter.acquire()
        waiting = asyncio.create_task(limiter.acquire())
        await settle()
        started = time.perf_counter()
        with pytest.raises(Overloaded) as info:
            await limiter.acquire()
        assert time.perf_counter() - started < 1.0  # at once, not after the 5 s wait
        exc = info.value
        assert (exc.status, exc.code, exc.reason) == (503, "overloaded", "queue_full")
        assert exc.headers == {"Retry-After": "1"}
        assert "1 requests in flight, 1 waiting" in exc.message and "retry after 1 s" in exc.message
        limiter.release()
        await waiting
        limiter.release()
        assert limiter.rejected == {"queue_full": 1, "wait_timeout": 0} and limiter.in_flight == 0
    run(scenario())


@pytest.mark.parametrize("max_queue, max_wait_s", [(0, 5.0), (4, 0.0)])
def test_no_queue_or_no_wait_refuses_at_once(max_queue, max_wait_s):
    async def scenario():
        limiter = Limiter(1, max_queue, max_wait_s)
        await limiter.acquire()
        with pytest.raises(Overloaded) as info:
            await limiter.acquire()
        assert info.value.reason == "queue_full" and limiter.waiting == 0
    run(scenario())


def test_a_wait_past_the_bound_is_refused_and_leaves_nothing_behind():
    async def scenario():
        limiter = Limiter(1, 4, 0.05)
        await limiter.acquire()
        started = time.perf_counter()
        with pytest.raises(Overloaded) as info:
            await limiter.acquire()
        waited = time.perf_counter() - started
        assert 0.04 <= waited < 2.0 and info.value.reason == "wait_timeout"
        assert "within 50 ms" in info.value.message
        assert (limiter.in_flight, limiter.waiting) == (1, 0)
        limiter.release()
        assert limiter.in_flight == 0
    run(scenario())


def test_a_waiter_cancelled_before_its_turn_is_skipped():
    async def scenario():
        limiter = Limiter(1, 4, 5.0)
        await limiter.acquire()
        gone = asyncio.create_task(limiter.acquire())
        stays = asyncio.create_task(limiter.acquire())
        await settle()
        gone.cancel()
        await settle()
        assert limiter.waiting == 1
        limiter.release()
        await stays
        assert (limiter.in_flight, limiter.waiting) == (1, 0)
        limiter.release()
        assert limiter.in_flight == 0
    run(scenario())


def test_a_slot_handed_to_a_waiter_cancelled_in_the_same_turn_goes_back():
    async def scenario():
        limiter = Limiter(1, 4, 5.0)
        await limiter.acquire()
        task = asyncio.create_task(limiter.acquire())
        await settle()
        limiter.release()  # hands the slot to the waiter ...
        task.cancel()  # ... which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (limiter.in_flight, limiter.waiting) == (0, 0)
    run(scenario())


def test_under_random_load_never_more_than_the_limit_and_nothing_leaks():
    async def scenario():
        rng = random.Random(14)
        limiter = Limiter(3, 5, 0.02)
        holding = peak = 0
        outcomes = {"ok": 0, "refused": 0}

        async def request():
            nonlocal holding, peak
            await asyncio.sleep(rng.random() * 0.2)
            try:
                await limiter.acquire()
            except Overloaded:
                outcomes["refused"] += 1
                return
            holding += 1
            peak = max(peak, holding)
            await asyncio.sleep(rng.random() * 0.01)
            holding -= 1
            limiter.release()
            outcomes["ok"] += 1

        await asyncio.gather(*(request() for _ in range(400)))
        assert peak == 3 and outcomes["refused"] > 0 and outcomes["ok"] + outcomes["refused"] == 400
        assert (limiter.in_flight, limiter.waiting) == (0, 0)
        assert limiter.admitted == outcomes["ok"] and sum(limiter.rejected.values()) == outcomes["refused"]
    run(scenario())


def test_settings_choose_the_limiter():
    assert limiter_for(load_settings({"KB_MAX_IN_FLIGHT": "0"})) is None  # 0: no limit, as before
    limiter = limiter_for(load_settings({"KB_MAX_IN_FLIGHT": "3", "KB_MAX_QUEUE": "7", "KB_MAX_QUEUE_WAIT_MS": "120"}))
    assert (limiter.max_in_flight, limiter.max_queue, limiter.max_wait_s) == (3, 7, 0.12)


# ---- through the service: the one error renderer, exempt routes, /metrics -----------------------------------------
@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("admission")
    settings = load_settings({}, content_dir=FIXTURE_CONTENT, index_dir=root / "index")
    build_index(settings, TinyEncoder(), progress=False)
    return root / "index"


def service(tmp_path, index_dir, **limits) -> TestClient:
    settings = load_settings({}, content_dir=FIXTURE_CONTENT, index_dir=index_dir, reload_poll_seconds=0,
                             feedback_db=tmp_path / "fb.sqlite", usage_db=tmp_path / "usage.sqlite",
                             auth_db=tmp_path / "auth.sqlite", webhook_db=tmp_path / "webhooks.sqlite",
                             analytics_db=tmp_path / "analytics.sqlite", **limits)
    return TestClient(create_app(settings, encoder=TinyEncoder()))


@pytest.fixture
def full_service(tmp_path, index_dir):
    """The service with one slot, no queue, and that slot taken: every admitted route is refused at the door."""
    with service(tmp_path, index_dir, max_in_flight=1, max_queue=0) as client:
        limiter = client.app.state.admission
        client.portal.call(limiter.acquire)  # on the service's event loop, as a request would
        yield client, limiter


def test_a_refused_search_is_503_json_with_retry_after(full_service):
    client, limiter = full_service
    for response in (client.get("/api/search", params={"q": "teams microphone"}),
                     client.post("/api/suggest", json={"subject": "Teams", "body": "microphone not working"})):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        error = response.json()["error"]
        assert error["code"] == "overloaded" and "retry after 1 s" in error["message"]


def test_a_refused_page_is_an_html_page_for_a_browser(full_service):
    client, _ = full_service
    response = client.get("/", params={"q": "teams"}, headers={"accept": "text/html"})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.headers["content-type"].startswith("text/html")


def test_health_and_metrics_never_wait_and_metrics_count_refusals(full_service):
    client, limiter = full_service
    assert client.get("/api/search", params={"q": "teams"}).status_code == 503
    assert client.get("/healthz").status_code == 200
    samples = parse(client.get("/metrics").text)
    assert value(samples, "kb_admission_rejected_total", reason="queue_full") == limiter.rejected["queue_full"] >= 1
    assert value(samples, "kb_admission_in_flight") == 1 and value(samples, "kb_admission_waiting") == 0
    assert value(samples, "kb_http_requests_total", method="GET", route="/api/search", status="503") >= 1
    client.portal.call(limiter.release)
    assert client.get("/api/search", params={"q": "teams"}).status_code == 200
    assert limiter.in_flight == 0  # released once the route's function ended


def test_the_door_refuses_before_reading_the_body(full_service):
    client, _ = full_service
    response = client.post("/api/suggest", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 503 and response.json()["error"]["code"] == "overloaded"  # not 400: unread


def test_a_request_that_waited_gets_the_slot_or_a_503_after_the_bound(tmp_path, index_dir):
    with service(tmp_path, index_dir, max_in_flight=1, max_queue=1, max_queue_wait_ms=3000) as client:
        limiter = client.app.state.admission
        client.portal.call(limiter.acquire)
        answers = []
        waiter = threading.Thread(target=lambda: answers.append(client.get("/api/search", params={"q": "teams"})))
        waiter.start()
        deadline = time.monotonic() + 10
        while limiter.waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert limiter.waiting == 1  # authorized, its query parsed, waiting for the slot
        assert client.get("/api/search", params={"q": "teams"}).status_code == 503  # the queue is full: the door
        client.portal.call(limiter.release)
        waiter.join(timeout=10)
        assert answers[0].status_code == 200 and limiter.in_flight == 0
    with service(tmp_path, index_dir, max_in_flight=1, max_queue=1, max_queue_wait_ms=50) as client:
        limiter = client.app.state.admission
        client.portal.call(limiter.acquire)
        started = time.perf_counter()
        response = client.post("/api/suggest", json={"subject": "Teams", "body": "microphone"})
        assert 0.05 <= time.perf_counter() - started < 2.0
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        error = response.json()["error"]
        assert error["code"] == "overloaded" and "within 50 ms" in error["message"]
        assert limiter.rejected == {"queue_full": 0, "wait_timeout": 1} and limiter.waiting == 0


def test_worker_threads_are_reserved_beyond_the_limit(tmp_path, index_dir):
    import anyio.to_thread

    with service(tmp_path, index_dir, max_in_flight=64) as client:
        assert client.get("/api/search", params={"q": "teams"}).status_code == 200
        tokens = client.portal.call(lambda: anyio.to_thread.current_default_thread_limiter().total_tokens)
        assert tokens >= 64 + THREAD_RESERVE


# ---- a real server ------------------------------------------------------------------------------------------------
TICKET = {"subject": "Outlook keeps asking for my password after the update",
          "body": " ".join(["Since Monday Outlook prompts for my password every few minutes, webmail works fine, "
                            "the Teams microphone also stopped working in meetings and OneDrive does not sync."] * 12)}


@pytest.mark.model
def test_a_saturated_server_refuses_at_once_while_health_answers(real_index, tmp_path):
    """One slot, one waiter, 50 ms of wait, eight clients posting suggestions on keep-alive connections: some are
    refused with 503 + Retry-After within moments, every other answer is a 200 (the connection survives a 503 of a
    POST), /healthz answers 200 at once throughout, and /metrics counts every refusal the clients saw."""
    env = {"KB_LOG_LEVEL": "warning", "KB_AUTH_DB": str(tmp_path / "auth.sqlite"),
           "KB_WEBHOOK_DB": str(tmp_path / "webhooks.sqlite"), "KB_MAX_IN_FLIGHT": "1", "KB_MAX_QUEUE": "1",
           "KB_MAX_QUEUE_WAIT_MS": "50"}
    with running_server(real_index.index_dir, tmp_path, env=env) as (base, _):
        with httpx.Client(base_url=base, timeout=30) as http:  # the first answers initialise what searches share
            assert http.post("/api/suggest", json=TICKET).status_code == 200
            assert http.get("/api/search", params={"q": "outlook password"}).status_code == 200
        stop = threading.Event()
        lock = threading.Lock()
        answers: list[tuple[int, float, str | None, str | None]] = []  # status, seconds, Retry-After, error code
        health: list[tuple[int, float]] = []
        failures: list[str] = []

        def client() -> None:
            with httpx.Client(base_url=base, timeout=30) as http:
                while not stop.is_set():
                    started = time.perf_counter()
                    try:
                        response = http.post("/api/suggest", json=TICKET)
                    except httpx.HTTPError as exc:
                        with lock:
                            failures.append(repr(exc))
                        continue
                    code = response.json().get("error", {}).get("code") if response.status_code != 200 else None
                    with lock:
                        answers.append((response.status_code, time.perf_counter() - started,
                                        response.headers.get("retry-after"), code))

        def probe() -> None:
            with httpx.Client(base_url=base, timeout=30) as http:
                while not stop.is_set():
                    started = time.perf_counter()
                    status = http.get("/healthz").status_code
                    with lock:
                        health.append((status, time.perf_counter() - started))
                    time.sleep(0.05)

        threads = [threading.Thread(target=client) for _ in range(8)] + [threading.Thread(target=probe)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                with lock:
                    refused = sum(status == 503 for status, *_ in answers)
                    if refused >= 20 and len(health) >= 20:
                        break
                time.sleep(0.1)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        refusals = [a for a in answers if a[0] == 503]
        assert not failures and len(refusals) >= 20, (failures[:3], len(refusals))
        assert {a[0] for a in answers} == {200, 503}
        assert all(retry == "1" and code == "overloaded" for _, _, retry, code in refusals)
        refused_s = sorted(seconds for _, seconds, _, _ in refusals)
        health_s = sorted(seconds for _, seconds in health)
        median = lambda values: values[len(values) // 2] * 1000  # noqa: E731
        p90 = lambda values: values[int(len(values) * 0.9)]  # noqa: E731
        print(f"refused {len(refusals)} of {len(answers)}: median {median(refused_s):.0f} ms, max "
              f"{refused_s[-1] * 1000:.0f} ms; /healthz x{len(health)}: median {median(health_s):.0f} ms, max "
              f"{health_s[-1] * 1000:.0f} ms")
        # at once: a refusal never waits behind the eight clients' work, nor does /healthz (a generous 90th
        # percentile, as other suites may share the machine and stall any process now and then)
        assert median(refused_s) < 250 and p90(refused_s) < 1.0
        assert {status for status, _ in health} == {200} and median(health_s) < 250 and p90(health_s) < 1.0
        metrics = httpx.get(base + "/metrics", timeout=30).text
        counted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                      if line.startswith("kb_admission_rejected_total"))
        assert counted == len(refusals)
