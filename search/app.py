"""create_app(settings) -> FastAPI: loads the model and index once at start-up; one handler renders all errors."""
from __future__ import annotations

import fcntl
import logging
import os
import threading
from urllib.parse import urlencode
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexer.build import BuildReport, build_index
from indexer.jobs import BuildJobs
from indexer.watch import ContentWatcher
from kb.allocator import return_large_blocks
from kb.database import side_database
from kb.embedder import TextEncoder, make_embedder
from kb.errors import IndexNotFound, KBError
from kb.events import EventLog
from kb.index import backend_for
from kb.recent_vectors import RecentVectors
from kb.settings import Settings, load_settings
from kb.feedback import FeedbackStore
from kb.usage import UsageLog
from search.access_log import install_path_only
from search.admission import admitted, install_admission
from search.auth import Authenticator, SignInRequired, authorize
from search.limits import install_limits
from search.metrics import install_metrics
from search.routes import admin, api, content, docs, feedback, health, pages, signin, webhooks, widget
from search.routes.metrics import router as metrics_router
from search.routes import events as event_routes
from search.routes import reports as report_routes
from search.searcher import Searcher
from search.security import install_security
from search.versions import Versions

log = logging.getLogger("kb.app")


class ServiceState:
    """What the running service holds: the encoder, the searcher of the version in service, build jobs.

    A new version goes into service by one reference swap (`self.searcher`): a request holds the searcher
    it started with, so requests in flight finish on their version. A version that fails its checks on
    open is never swapped in; it is remembered in `failed` and reported by /healthz. `versions`
    (search/versions.py) does this, falls back from a damaged version and releases replaced ones.
    """

    searcher = property(lambda self: self.versions.searcher)
    failed = property(lambda self: self.versions.failed)  # build id -> why it was not put into service
    load_error = property(lambda self: self.versions.load_error,
                          lambda self, error: setattr(self.versions, "load_error", error))

    def __init__(self, settings: Settings, encoder: TextEncoder):
        self.settings, self.encoder = settings, encoder
        self.versions = Versions(backend_for(settings), settings.index_dir, encoder.model_id,
                                 lambda version: Searcher(version, self.queries, settings).warm(),  # before it serves
                                 settings.verify_seconds)
        self.feedback = FeedbackStore(side_database(settings, "feedback"), settings.max_query_chars,
                                      store_text=settings.analytics_store_text)
        self.queries = RecentVectors(encoder)  # query vectors of the last searches: the event log reuses them
        self.events = EventLog(settings, self.queries)  # analytics event log: a queue and one writer (kb/events.py)
        self.usage = UsageLog(side_database(settings, "usage"))
        self.jobs = BuildJobs(self.build, on_built=lambda report: self.refresh())
        self.jobs.listeners.append(self.versions.note_job)  # a failed build shows in /healthz
        self.watcher: ContentWatcher | None = None
        self.watch_refused: str | None = None
        self.webhooks = webhooks.Webhooks(settings)  # replay cache, write-back worker (search/routes/webhooks.py)
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def build(self, on_progress) -> BuildReport:
        """One incremental build of the content folder (run by a build job)."""
        return build_index(self.settings, self.encoder, progress=False, on_progress=on_progress)

    def load(self) -> None:
        """Open the current index version; keep serving the old one (or none) if it fails its checks."""
        self.refresh()

    def refresh(self) -> bool:
        """Swap in the version named by CURRENT if it is new and passes its checks; True when swapped."""
        return self.versions.refresh()

    def start_background(self, watch: bool) -> None:
        """Follow CURRENT (builds by `kb index` / `kb watch`) and, with `watch`, re-index on content changes."""
        self.events.start()
        self.webhooks.start()
        watch = watch and self._may_watch()
        if self.searcher is None and isinstance(self.load_error, IndexNotFound):  # no CURRENT yet
            self._no_index_yet(building=watch)
        if self.settings.reload_poll_seconds > 0:
            self._poller = threading.Thread(target=self._follow, name="version-follower", daemon=True)
            self._poller.start()
        if watch:
            self.watcher = ContentWatcher(self.settings.content_dir, lambda paths: self.jobs.request("watch"),
                                          self.settings.watch_debounce_ms)
            self.watcher.start()
            self.jobs.request("start")  # catch up with edits made while the service was down (or no index yet)

    def _no_index_yet(self, building: bool) -> None:
        """No index at start: being built from the content folder (info), or someone has to build one (error)."""
        if building:
            folder = self.settings.content_dir.resolve()
            log.info("no index yet; building one from %s", folder)
            self.load_error = IndexNotFound(f"no index yet in {self.settings.index_dir}: building one from {folder}")
        elif self.load_error is not None:
            log.error("index not loaded: %s", self.load_error.message)

    def _may_watch(self) -> bool:
        """Never rebuild an index from a folder it was not built from (`kb serve --index-dir X` run from
        another directory would otherwise replace X with whatever ./content holds)."""
        built_from = self.searcher.version.manifest.get("content_dir") if self.searcher else None
        here = str(self.settings.content_dir.resolve())
        if built_from is not None and built_from != here:
            self.watch_refused = (f"not watching {here}: the index in service was built from {built_from}; "
                                  f"pass --content {built_from} to watch it, or --no-watch")
            log.warning(self.watch_refused)
            return False
        return True

    def _follow(self) -> None:
        while not self._stop.wait(self.settings.reload_poll_seconds):
            if self.jobs.running is None:  # the job swaps in its own version when it finishes
                try:
                    self.refresh()
                    self.versions.verify()  # the files in service against their checksums, every KB_VERIFY_SECONDS
                except Exception:  # noqa: BLE001 - keep following
                    log.exception("checking for a new index version failed")

    def stop(self) -> None:
        self._stop.set()
        self.webhooks.stop()
        if self.watcher is not None:
            self.watcher.stop()
        self.jobs.wait(timeout=60)
        self.events.close()  # writes what is still queued
        self.usage.close()  # the same for the counts of returned articles


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def wants_html(request: Request) -> bool:
    """A browser asking for a page (not the JSON API) gets errors as an HTML page."""
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KBError)
    async def handle_kb_error(request: Request, exc: KBError) -> Response:
        """The one renderer of KBErrors: an HTML page for a browser asking for a page, JSON otherwise."""
        if wants_html(request):
            if isinstance(exc, SignInRequired):  # an agent's browser without a session: to the sign-in page
                root = request.scope.get("root_path", "").rstrip("/")
                return RedirectResponse(f"{root}/signin?{urlencode({'next': request.url.path})}", status_code=303)
            response = pages.error_page(request, exc)
            response.headers.update(exc.headers)
            return response
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def handle_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        malformed = any(e.get("type") == "json_invalid" for e in exc.errors())
        if malformed:
            return error_response(400, "malformed_json", "request body is not valid JSON: " + describe_validation(exc))
        return error_response(422, "invalid_request", describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def handle_http(request: Request, exc: StarletteHTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else "http_error"
        if wants_html(request):
            error = KBError(str(exc.detail))
            error.status, error.code = exc.status_code, code
            return pages.error_page(request, error)
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(500, "internal_error", "unexpected error; see the service log")


def create_app(settings: Settings, encoder: TextEncoder | None = None, watch: bool = False) -> FastAPI:
    """The service for `settings`; pass `encoder` to share an already loaded model (tests, benchmarks).

    With `watch`, changes in the content folder are indexed and swapped in while the service runs.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        install_path_only()  # access log lines without query strings (search/access_log.py)
        return_large_blocks()  # a replaced index version's memory goes back to the system (kb/allocator.py)
        state = ServiceState(settings, encoder or make_embedder(settings))
        app.state.metrics.attach(state)  # its builds, watch events and queues go into /metrics (search/metrics.py)
        state.encoder.encode_queries(["warm up"])  # load the model before the first request
        state.load()
        state.start_background(watch)
        app.state.kb = state
        yield
        app.state.metrics.detach()
        state.stop()

    app = FastAPI(title="KB Search", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Search and ticket suggestions over a Markdown support knowledge base.",
                  dependencies=[Depends(authorize),  # every route: who is calling, and may they (search/auth.py)
                                Depends(admitted, scope="function")])  # then a slot, or 503 (search/admission.py)
    app.state.auth = Authenticator(settings)
    install_error_handlers(app)
    install_limits(app, settings)  # bodies over KB_MAX_BODY_BYTES 413 unread, lone surrogates 400 (search/limits.py)
    admission = install_admission(app, settings)  # bounded in flight and wait, 503 beyond; not /healthz, /metrics
    install_security(app, settings)  # CSP and framing headers, cross-site posts refused, CORS (search/security.py)
    install_metrics(app, admission)  # outermost: counts and times every request by route template (search/metrics.py)
    app.include_router(api.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    app.include_router(metrics_router)  # GET /metrics, Prometheus text format (analytics or admin scope)
    app.include_router(content.router)
    app.include_router(feedback.router)
    app.include_router(event_routes.router)  # POST /api/events: opens, copies, inserts, links
    app.include_router(pages.router)
    app.include_router(report_routes.router)  # /reports and /api/analytics/*: reports for managers
    app.include_router(widget.router)  # /widget: the ticket-sidebar widget for helpdesk iframes
    app.include_router(signin.router)
    app.include_router(docs.router)  # /docs, /redoc from vendored assets
    webhooks.check_settings(settings)  # a bad KB_GENERIC_WEBHOOK_MAP stops start-up, naming the setting
    app.include_router(webhooks.router)
    app.mount("/static", StaticFiles(packages=[("search", "web/static")]), name="static")  # package data
    return app


def claim_watch(index_dir: Path):
    """An exclusive lock on `index_dir/.watch.lock`, held while the returned file stays open; None when another
    process holds it. Of several workers over one index folder, the one holding it watches the content folder."""
    index_dir.mkdir(parents=True, exist_ok=True)
    handle = open(index_dir / ".watch.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def app_from_environment() -> FastAPI:
    """The service as the KB_* variables configure it: the factory uvicorn's worker processes call
    (`kb serve --workers N` exports its flags as KB_* variables first).

    Every worker follows CURRENT; only the worker that claims the index folder's watch lock watches the content
    folder and builds, so that one change is not built N times over (the others would fail on the build lock).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")  # as `kb` does
    settings = load_settings()
    claim = claim_watch(settings.index_dir) if settings.watch else None
    if settings.watch and claim is None:
        log.info("worker %d follows CURRENT; another worker watches %s", os.getpid(), settings.content_dir)
    app = create_app(settings, watch=claim is not None)
    app.state.watch_claim = claim  # released when the worker exits; a replacement worker claims it again
    return app
