"""Operations metrics: requests per route template (ASGI middleware), index, builds, watch, queues; across workers."""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from search.metrics_folder import MULTIPROC_ENV, forget_dead_workers, multiprocess_mode

log = logging.getLogger("kb.metrics")

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the classic Prometheus text format every Prometheus version reads
UNMATCHED = "unmatched"  # route label of requests no route matched (404s, scanners): one series, not one per path
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # anything else: "other"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BUILD_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0)
SAMPLE_SECONDS = 2.0  # how often every worker copies its state (index, queues, counters kept elsewhere) into its series


def route_template(scope: Scope) -> str:
    """The route template a request went to (`/api/articles/{article_id:path}`), never its raw path.

    The router leaves the route in the scope; a request answered before routing (a refused cross-site post) is
    matched here; a path no route matches is UNMATCHED.
    """
    path = getattr(scope.get("route"), "path", None)
    if path is not None:
        return path
    try:
        return _match(getattr(getattr(scope.get("app"), "router", None), "routes", ()), scope) or UNMATCHED
    except Exception:  # noqa: BLE001 - a label is never worth a failed request
        return UNMATCHED


def _match(routes, scope: Scope) -> str | None:
    """The template of the route that would take `scope`, looking into included routers (FastAPI keeps them
    nested); a full match before a partial one (a wrong method), as the router does."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.NONE:
            continue
        included = getattr(route, "original_router", None)
        found = _match(included.routes, scope) if included is not None else getattr(route, "path", None)
        if found is not None and match is Match.FULL:
            return found
        partial = partial or found
    return partial


# Series copied from the service's state by `sample()`, made on first use, so that what the service does not have
# (no watcher, no event log, write-back not configured, no index yet) has no samples: name -> (kind, help, labels,
# multiprocess mode of a gauge: liveall = one series per live worker, with a `pid` label; livesum / livemax = one).
SAMPLED: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "kb_index_info": ("gauge", "The index version in service (1; 0: a version this process served before), by build id "
                      "and model.", ("build_id", "model"), "liveall"),
    "kb_index_created_timestamp_seconds": ("gauge", "When the index version in service was written (Unix time).", (),
                                           "liveall"),
    "kb_index_articles": ("gauge", "Articles in the index version in service.", (), "liveall"),
    "kb_index_passages": ("gauge", "Passages in the index version in service.", (), "liveall"),
    "kb_index_versions_refused": ("gauge", "Index versions (built by the service, kb index or kb watch) that failed "
                                  "their checks on open and were not put into service.", (), "livemax"),
    "kb_index_unavailable": ("gauge", "1 while the index engine (a Milvus server) does not answer: searches and "
                             "/healthz answer 503 until it does, then 0.", (), "livemax"),
    "kb_watch_events": ("counter", "Bursts of content changes the watcher reported.", (), ""),
    "kb_watch_changed_files": ("counter", "Content files in those bursts.", (), ""),
    "kb_analytics_queue_depth": ("gauge", "Analytics events waiting for the event log's writer.", (), "livesum"),
    "kb_analytics_events_dropped": ("counter", "Analytics events dropped: the event log's queue was full.", (), ""),
    "kb_analytics_events_written": ("counter", "Analytics events written to the event log.", (), ""),
    "kb_analytics_events_errors": ("counter", "Analytics events the event log's writer failed to write.", (), ""),
    "kb_side_store_write_errors": ("counter", "Writes a side store failed (read-only or full disk, a file it cannot "
                                   "open), by store: feedback, usage, analytics.", ("store",), ""),
    "kb_side_store_unwritable": ("gauge", "1 while a side store cannot write (its own routes answer 503, searches go "
                                 "on), 0 once it writes again, by store.", ("store",), "livemax"),
    "kb_writeback_notes": ("counter", "Helpdesk write-back notes by outcome (queued, sent, failed, retries, dropped).",
                           ("outcome",), ""),
    "kb_writeback_pending": ("gauge", "Write-back notes not yet sent or given up.", (), "livesum"),
    "kb_webhook_db_errors": ("counter", "Times KB_WEBHOOK_DB could not be written.", (), ""),
    "kb_admission_rejected": ("counter", "Requests answered 503 with Retry-After at once by admission control "
                              "(queue_full: KB_MAX_QUEUE already waiting; wait_timeout: no slot within "
                              "KB_MAX_QUEUE_WAIT_MS).", ("reason",), ""),
    "kb_admission_in_flight": ("gauge", "Requests holding an admission slot (at most KB_MAX_IN_FLIGHT per worker).",
                               (), "livesum"),
    "kb_admission_waiting": ("gauge", "Requests waiting for an admission slot (at most KB_MAX_QUEUE per worker).", (),
                             "livesum"),
}
EVENT_COUNTS = ("dropped", "written", "errors")  # of the event log's stats(), besides `queued`
SIDE_STORES = ("feedback", "usage", "events")  # ServiceState attributes whose `health` says whether they can write
WRITEBACK_OUTCOMES = ("queued", "sent", "failed", "retries", "dropped")


class ServiceMetrics:
    """The series of one service process and the registry /metrics renders.

    In multiprocess mode the series are written to per-process files and the registry reads every worker's files
    (counters and histograms summed, gauges per worker with a `pid` label); otherwise they live in this registry.
    """

    def __init__(self, admission: Any = None) -> None:
        disable_created_metrics()  # no `*_created` series: the output multiprocess mode gives, with half the lines
        self.multiprocess = multiprocess_mode()
        self.registry = CollectorRegistry(auto_describe=True)
        self._own = None if self.multiprocess else self.registry  # in multiprocess mode, files are the registry
        self.folder = Path(os.environ[MULTIPROC_ENV]) if self.multiprocess else None
        if self.folder is not None:
            MultiProcessCollector(self.registry, str(self.folder))
        labels = ("method", "route", "status")
        self.requests = Counter("kb_http_requests", "HTTP requests answered, by method, route template and status.",
                                labels, registry=self._own)
        self.latency = Histogram("kb_http_request_duration_seconds", "Time from a request's arrival to the end of "
                                 "its response, by method, route template and status.", labels,
                                 buckets=LATENCY_BUCKETS, registry=self._own)
        self.builds = Histogram("kb_build_duration_seconds", "Duration of builds run by the service (trigger: api, "
                                "watch, start), failed ones included.", ("trigger",), buckets=BUILD_BUCKETS,
                                registry=self._own)
        self.build_failures = Counter("kb_build_failures", "Builds run by the service that failed, by trigger.",
                                      ("trigger",), registry=self._own)
        self._sampled: dict[str, Counter | Gauge] = {}
        self._last: dict[tuple[str, ...], float] = {}  # counts kept elsewhere, as last copied
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._sample_lock = threading.Lock()
        self._info: tuple[str, str] | None = None
        self._state: Any = None
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        self.admission = admission  # search/admission.Limiter, None without admission control

    def series(self, name: str) -> Counter | Gauge:
        """A SAMPLED series, made on first use."""
        metric = self._sampled.get(name)
        if metric is None:
            kind, text, labels, mode = SAMPLED[name]
            metric = (Counter(name, text, labels, registry=self._own) if kind == "counter" else
                      Gauge(name, text, labels, registry=self._own, multiprocess_mode=mode))
            self._sampled[name] = metric
        return metric

    def _count(self, name: str, value: Any, *labels: str) -> None:
        """Copy a count another object keeps (the event log, the write-back worker, the watcher) into a Counter: add
        what it grew by since the last look, so that the Counter also sums correctly over worker processes."""
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        key = (name, *labels)
        previous = self._last.get(key, 0)
        if value < previous:  # the source started again from zero
            previous = 0
        counter = self.series(name)
        if value > previous:
            (counter.labels(*labels) if labels else counter).inc(value - previous)
        self._last[key] = value

    # ---- requests (called by RequestMetrics for every request) ----------------------------------------------------
    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            labels = (method, route, str(status))
            children = self._children[key] = (self.requests.labels(*labels), self.latency.labels(*labels))
        children[0].inc()
        children[1].observe(seconds)

    # ---- the service's state --------------------------------------------------------------------------------------
    def attach(self, state: Any) -> None:
        """Follow a ServiceState: its build jobs report here, and its state is sampled every SAMPLE_SECONDS."""
        self._state = state
        listeners = getattr(state.jobs, "listeners", None)
        if listeners is not None:
            listeners.append(self.build_finished)
        if self.folder is not None:
            forget_dead_workers(self.folder)
        self._stop.clear()
        self._sampler = threading.Thread(target=self._follow, name="metrics-sampler", daemon=True)
        self._sampler.start()

    def detach(self) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)
        if self.folder is not None:  # this worker's gauges go; its counts stay
            mark_process_dead(os.getpid(), str(self.folder))

    def build_finished(self, job: Any) -> None:
        seconds = getattr(job, "seconds", None)
        if seconds is not None:
            self.builds.labels(job.trigger).observe(seconds)
        if job.state == "failed":
            self.build_failures.labels(job.trigger).inc()

    def _follow(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - metrics must never take the service down
                log.exception("sampling the service state for /metrics failed")
            if self._stop.wait(SAMPLE_SECONDS):
                return

    def sample(self) -> None:
        """Copy the state's current figures into the series (also run by /metrics before it answers)."""
        state = self._state
        if state is None:
            return
        with self._sample_lock:
            self._sample_index(state)
            watcher = getattr(state, "watcher", None)
            if watcher is not None:
                self._count("kb_watch_events", getattr(watcher, "events", None))
                self._count("kb_watch_changed_files", getattr(watcher, "files", None))
            self._sample_events(state)
            self._sample_side_stores(state)
            self._sample_webhooks(state)
            self._sample_admission()

    def _sample_index(self, state: Any) -> None:
        self.series("kb_index_versions_refused").set(len(getattr(state, "failed", ())))
        self.series("kb_index_unavailable").set(1 if getattr(getattr(state, "versions", None), "unavailable", None)
                                                else 0)
        searcher = getattr(state, "searcher", None)
        if searcher is None:
            return
        manifest = searcher.version.manifest
        info = (str(manifest.get("build_id", "")), str(manifest.get("model", "")))
        versions = self.series("kb_index_info")
        if info != self._info:
            if self._info is not None:
                versions.labels(*self._info).set(0)  # in multiprocess mode a series stays once written: say "no more"
                if not self.multiprocess:
                    versions.remove(*self._info)
            versions.labels(*info).set(1)
            self._info = info
        counts = manifest.get("counts", {})
        self.series("kb_index_articles").set(counts.get("articles", 0))
        self.series("kb_index_passages").set(counts.get("passages", 0))
        with contextlib.suppress(TypeError, ValueError):
            created = datetime.fromisoformat(manifest["created"]).timestamp()
            self.series("kb_index_created_timestamp_seconds").set(created)

    def _sample_events(self, state: Any) -> None:
        """The analytics event log's stats() {queued, dropped, written, errors}, when the service has an event log."""
        stats = getattr(getattr(state, "events", None), "stats", None)
        if not callable(stats):
            return
        try:
            figures = stats()
        except Exception:  # noqa: BLE001 - its own problem, never /metrics'
            log.exception("the analytics event log's stats() failed")
            return
        queued = figures.get("queued")
        if isinstance(queued, (int, float)) and not isinstance(queued, bool):
            self.series("kb_analytics_queue_depth").set(queued)
        for name in EVENT_COUNTS:
            self._count(f"kb_analytics_events_{name}", figures.get(name))

    def _sample_side_stores(self, state: Any) -> None:
        """Each side store's failed writes and whether it can write now (its `health`, kb/side_store.py)."""
        for attribute in SIDE_STORES:
            health = getattr(getattr(state, attribute, None), "health", None)
            status = getattr(health, "status", None)
            if not callable(status):
                continue
            figures = status()
            self._count("kb_side_store_write_errors", figures["errors"], figures["store"])
            self.series("kb_side_store_unwritable").labels(figures["store"]).set(0 if figures["writable"] else 1)

    def _sample_webhooks(self, state: Any) -> None:
        """Write-back counters and webhook log errors (state.webhooks.status(), as /healthz shows them)."""
        webhooks = getattr(state, "webhooks", None)
        if webhooks is None:
            return
        status = webhooks.status()
        self._count("kb_webhook_db_errors", status.get("webhook_db_errors"))
        if status.get("enabled"):
            for outcome in WRITEBACK_OUTCOMES:
                self._count("kb_writeback_notes", status.get(outcome), outcome)
            self.series("kb_writeback_pending").set(status.get("pending", 0))

    def _sample_admission(self) -> None:
        """Admission control's slots in use, waiters and refusals (search/admission.Limiter.stats())."""
        if self.admission is None:
            return
        figures = self.admission.stats()
        self.series("kb_admission_in_flight").set(figures["in_flight"])
        self.series("kb_admission_waiting").set(figures["waiting"])
        for reason, count in figures["rejected"].items():
            self._count("kb_admission_rejected", count, reason)

    # ---- exposition -----------------------------------------------------------------------------------------------
    def exposition(self) -> bytes:
        """Every series in the Prometheus text format: this process's, or every worker's in multiprocess mode."""
        self.sample()
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: counts every HTTP request and times it, by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started: the server answers 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            try:
                self.metrics.observe(scope["method"], route_template(scope), status, time.perf_counter() - started)
            except Exception:  # noqa: BLE001 - counting must never fail the request it counts
                log.exception("counting a request for /metrics failed")


def install_metrics(app: FastAPI, admission: Any = None) -> ServiceMetrics:
    """Count and time every request (outermost middleware: install it after the others); GET /metrics
    (search/routes/metrics.py) renders `app.state.metrics`, with admission control's figures when it has any."""
    metrics = ServiceMetrics(admission)
    app.state.metrics = metrics
    app.add_middleware(RequestMetrics, metrics=metrics)
    return metrics
