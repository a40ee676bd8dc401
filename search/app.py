"""create_app(settings) -> FastAPI: loads the model and index once at start-up; one handler renders all errors."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from kb.embedder import TextEncoder, make_embedder
from kb.errors import KBError
from kb.settings import Settings
from kb.store import open_current
from kb.feedback import FeedbackStore
from search.routes import api, feedback, health, pages
from search.searcher import Searcher

log = logging.getLogger("kb.app")


class ServiceState:
    """What the running service holds: the encoder and the searcher of the version in service."""

    def __init__(self, settings: Settings, encoder: TextEncoder):
        self.settings, self.encoder = settings, encoder
        self.searcher: Searcher | None = None
        self.load_error: KBError | None = None
        self.feedback = FeedbackStore(settings.feedback_db, settings.max_query_chars)

    def load(self) -> None:
        """Open the current index version; keep serving the old one (or none) if it fails its checks."""
        try:
            version = open_current(self.settings.index_dir, self.encoder.model_id)
            self.searcher = Searcher(version, self.encoder, self.settings)
            self.load_error = None
            log.info("serving index version %s", version.build_id)
        except KBError as exc:
            self.load_error = exc
            log.error("index not loaded: %s", exc.message)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


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
    async def handle_kb_error(request: Request, exc: KBError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

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


def create_app(settings: Settings, encoder: TextEncoder | None = None) -> FastAPI:
    """The service for `settings`; pass `encoder` to share an already loaded model (tests, benchmarks)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = ServiceState(settings, encoder or make_embedder(settings))
        state.encoder.encode_queries(["warm up"])  # load the model before the first request
        state.load()
        app.state.kb = state
        yield

    app = FastAPI(title="KB Search", version="0.1.0", lifespan=lifespan,
                  description="Search and ticket suggestions over a Markdown support knowledge base.")
    install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(health.router)
    app.include_router(feedback.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.WEB_DIR / "static"), name="static")
    return app
