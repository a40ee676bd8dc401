"""GET /health/content: the content health report (`kb check`) for writers, as an HTML page or JSON."""
from __future__ import annotations

import re
import threading

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from markupsafe import Markup, escape

from kb.errors import KBError
from search.content_health import ContentHealth
from search.i18n import STRINGS
from search.routes.pages import error_page, render
from search.schemas import ComputingResponse, ContentHealthResponse, ErrorResponse

router = APIRouter(tags=["health"])

WAIT_SECONDS = 2.0  # a small knowledge base is checked within this; a big one answers 202 "computing" first
MAX_PER_KIND = 200  # findings listed per check on the page; the JSON report has them all
_CREATE = threading.Lock()
HTML = {"text/html": {"schema": {"type": "string"}}}
RESPONSES = {200: {"model": ContentHealthResponse, "content": HTML, "description": "The report (JSON: the `kb check` "
                   "report; status `updating` while a newer one is computed)."},
             202: {"model": ComputingResponse, "content": HTML, "description": "The first report is being computed."},
             422: {"model": ErrorResponse, "description": "Wrongly typed parameters."},
             503: {"model": ErrorResponse, "description": "JSON: the index in service could not be read."}}
CODE_SPAN = re.compile(r"`([^`\n]+)`")
KIND_KEYS = frozenset(key for key in STRINGS["en"] if key.startswith("kind_"))  # checks with a human name


def code_spans(text: str) -> Markup:
    """Plain text with Markdown `code` spans as <code> elements, everything else escaped (a lone ` stays)."""
    parts = CODE_SPAN.split(text)  # odd positions are the insides of code spans
    return Markup("").join(Markup("<code>{}</code>").format(part) if n % 2 else escape(part)
                           for n, part in enumerate(parts))


def content_health(app: FastAPI) -> ContentHealth:
    """The app's ContentHealth, created on first use."""
    with _CREATE:
        health = getattr(app.state, "content_health", None)
        if health is None:
            health = app.state.content_health = ContentHealth(app.state.kb.settings)
        return health


def wants_json(request: Request, format: str) -> bool:
    accept = request.headers.get("accept", "")
    return format == "json" or ("application/json" in accept and "text/html" not in accept)


@router.get("/health/content", summary="Content health report: HTML page, or JSON with ?format=json "
            "(202 while it is being computed)", responses=RESPONSES)
def content_health_page(request: Request, format: str = "") -> Response:
    state = request.app.state.kb
    searcher = state.searcher
    as_json = wants_json(request, format)
    try:
        report, fresh = content_health(request.app).get(searcher.version if searcher else None,
                                                        getattr(state, "usage", None), wait=WAIT_SECONDS)
    except KBError as exc:
        if as_json:
            raise
        return error_page(request, exc)
    if as_json:
        if report is None:
            return JSONResponse({"status": "computing"}, status_code=202)
        return JSONResponse({"status": "ok" if fresh else "updating", **report.to_dict()})
    groups = []
    if report is not None:
        for kind, count in report.counts.items():
            findings = [f for f in report.findings if f.kind == kind]
            if findings:
                groups.append({"kind": kind, "count": count, "findings": findings[:MAX_PER_KIND],
                               "more": max(0, count - MAX_PER_KIND)})
    indexed = set(searcher.articles) if searcher else set()
    return render(request, "content_health.html", {
        "page": "health", "report": report, "fresh": fresh, "groups": groups, "code_spans": code_spans,
        "kind_keys": KIND_KEYS,
        "article_id": lambda path: path.removesuffix(".md") if path.removesuffix(".md") in indexed else None,
    }, 200 if report is not None else 202)
