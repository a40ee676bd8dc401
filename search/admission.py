"""Admission control: a bounded number of requests in flight and a bounded wait; beyond, 503 with Retry-After."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from kb.errors import Overloaded
from kb.settings import Settings
from search.security import app_path, render_error

log = logging.getLogger("kb.admission")

EXEMPT = frozenset({"/healthz", "/metrics"})  # paths that never wait behind searches (probes, scrapes)
STATIC = "/static/"  # nor do static files
REASONS = ("queue_full", "wait_timeout")  # why a request was refused
RETRY_AFTER_SECONDS = 1
THREAD_RESERVE = 8  # worker threads left free of admitted requests, for the exempt routes' sync handlers
LOG_EVERY_SECONDS = 60.0  # refusals are logged at most this often, with their count, never once per request


class Limiter:
    """At most `max_in_flight` requests hold a slot; up to `max_queue` more wait for one in arrival order, each at
    most `max_wait_s`; any other request is refused at once with Overloaded.

    Lives on the event loop of its worker process (one per `kb serve` worker): not thread-safe, and needs none.
    """

    def __init__(self, max_in_flight: int, max_queue: int, max_wait_s: float):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight, self.max_queue, self.max_wait_s = max_in_flight, max_queue, max_wait_s
        self.in_flight = 0
        self.admitted = 0
        self.rejected = dict.fromkeys(REASONS, 0)
        self._queue: deque[asyncio.Future[None]] = deque()
        self._unlogged = 0
        self._logged_at = float("-inf")

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def shed(self) -> Overloaded | None:
        """The refusal a request arriving now gets at once (every slot taken, no room to wait), else None."""
        if self.in_flight < self.max_in_flight or (len(self._queue) < self.max_queue and self.max_wait_s > 0):
            return None
        return self._refuse("queue_full", f"the service is busy ({self.in_flight} requests in flight, "
                                          f"{len(self._queue)} waiting)")

    def stats(self) -> dict:
        return {"in_flight": self.in_flight, "waiting": self.waiting, "admitted": self.admitted,
                "rejected": dict(self.rejected)}

    async def acquire(self) -> None:
        """Take a slot, waiting for one at most `max_wait_s`; Overloaded when the queue is full or time runs out."""
        if self.in_flight < self.max_in_flight and not self._queue:
            self.in_flight += 1
            self.admitted += 1
            return
        refusal = self.shed()
        if refusal is not None:
            raise refusal
        slot = asyncio.get_running_loop().create_future()
        self._queue.append(slot)
        try:
            async with asyncio.timeout(self.max_wait_s):
                await slot
        except TimeoutError:
            if slot.done() and not slot.cancelled():  # handed a slot just as the time ran out: keep it
                self.admitted += 1
                return
            self._forget(slot)
            raise self._refuse("wait_timeout", f"no request slot came free within {self.max_wait_s * 1000:.0f} ms "
                                               f"({self.in_flight} requests in flight)") from None
        except BaseException:  # cancelled while waiting (shutdown): give back a slot handed over meanwhile
            if slot.done() and not slot.cancelled():
                self.release()
            else:
                self._forget(slot)
            raise
        self.admitted += 1  # release() handed its slot over: in_flight already counts it

    def release(self) -> None:
        """Give a slot back: to the longest waiter still waiting, else to the pool."""
        while self._queue:
            slot = self._queue.popleft()
            if not slot.done():
                slot.set_result(None)
                return
        self.in_flight -= 1

    def _forget(self, slot: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):  # release() may have dropped it already
            self._queue.remove(slot)

    def _refuse(self, reason: str, why: str) -> Overloaded:
        self.rejected[reason] += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            log.warning("overloaded: %d request(s) refused with 503 since the last report; %s (KB_MAX_IN_FLIGHT "
                        "%d, KB_MAX_QUEUE %d, KB_MAX_QUEUE_WAIT_MS %.0f)", self._unlogged, why, self.max_in_flight,
                        self.max_queue, self.max_wait_s * 1000)
            self._unlogged, self._logged_at = 0, now
        return Overloaded(f"{why}; retry after {RETRY_AFTER_SECONDS} s", reason, RETRY_AFTER_SECONDS)


def exempt(scope: Scope) -> bool:
    return (path := app_path(scope)) in EXEMPT or path.startswith(STATIC)


class AdmissionGate:
    """ASGI middleware: while every slot is taken and the queue is full, a request is refused at the door, before
    its body is read and before authorization (about 0.1 ms on the event loop, no worker thread). Requests that
    pass take their slot in the `admitted` dependency, once authorized and with their body read, so that a slow
    upload never holds one."""

    def __init__(self, app: ASGIApp, limiter: Limiter):
        self.app, self.limiter = app, limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not exempt(scope):
            refusal = self.limiter.shed()
            if refusal is not None:
                await render_error(Request(scope), refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def limiter_for(settings: Settings) -> Limiter | None:
    """The limiter `settings` ask for; None when KB_MAX_IN_FLIGHT is 0 (no limit: requests queue without bound)."""
    if settings.max_in_flight == 0:
        return None
    return Limiter(settings.max_in_flight, settings.max_queue, settings.max_queue_wait_ms / 1000)


def install_admission(app: FastAPI, settings: Settings) -> Limiter | None:
    """The gate middleware and the limiter in `app.state.admission`, where the `admitted` dependency of every route
    finds it. Install it after the body limits (outside them: a refusal reads no body) and before the security
    headers and CORS (inside them: refusals carry their headers)."""
    limiter = app.state.admission = limiter_for(settings)
    app.state.admission_threads_reserved = False
    if limiter is not None:
        app.add_middleware(AdmissionGate, limiter=limiter)
    return limiter


def reserve_threads(app: FastAPI, limiter: Limiter) -> None:
    """Sync handlers run on anyio's worker threads (40 by default): keep THREAD_RESERVE of them beyond the admitted
    requests, so that /healthz and /metrics never wait for a thread behind searches (once per process, on its loop)."""
    if not app.state.admission_threads_reserved:
        threads = anyio.to_thread.current_default_thread_limiter()
        threads.total_tokens = max(threads.total_tokens, limiter.max_in_flight + THREAD_RESERVE)
        app.state.admission_threads_reserved = True


async def admitted(request: Request) -> AsyncIterator[None]:
    """FastAPI dependency of every route (after authorization, once the body is read): holds a slot while the
    route's function runs; health and metrics pass at once. Declare it with scope="function"."""
    limiter: Limiter | None = getattr(request.app.state, "admission", None)
    if limiter is None or exempt(request.scope):
        yield
        return
    reserve_threads(request.app, limiter)
    await limiter.acquire()
    try:
        yield
    finally:
        limiter.release()
