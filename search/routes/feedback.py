""""Was this helpful?": POST /api/feedback (JSON), POST /feedback (form, no JavaScript), GET /api/feedback/summary."""
from __future__ import annotations

import threading
from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from kb.errors import ArticleNotFound, BadRequest, FeedbackUnavailable, IndexNotFound
from kb.feedback import SOURCES, SUMMARY_LIMIT, SUMMARY_MAX_LIMIT, FeedbackStore, check_article_id
from kb.rate_window import RateWindow
from kb.settings import Settings
from search.auth import caller
from search.routes.events import acted
from search.schemas import API_ERRORS, ERRORS, FeedbackResponse, FeedbackSummaryResponse, QueryInt, error_responses

router = APIRouter(tags=["feedback"])

YES = ("1", "true", "yes", "on", "y")
NO = ("0", "false", "no", "off", "n")
MAX_REDIRECT_CHARS = 4000


class FeedbackRequest(BaseModel):
    query: str = Field("", description="The search words that produced the result (stored redacted); may be empty "
                                       "for source=article or when `answer_id` is given. Ticket text: send "
                                       "`answer_id` instead.")
    answer_id: str | None = Field(None, description="The `answer_id` of the search or suggest response the result "
                                                    "came from (16 hexadecimal characters); stands in for the query.")
    article_id: str = Field(..., description="Id of the article the answer is about (path without .md).")
    passage_id: str | None = Field(None, description="Id of the passage shown, when the result was a passage.")
    helpful: bool = Field(..., strict=True, description="true: it helped; false: it did not.")
    source: str = Field("search", description=f"Where the result was shown: {', '.join(SOURCES)}.")


def get_feedback(request: Request) -> FeedbackStore:
    store = getattr(request.app.state.kb, "feedback", None)
    if store is None:
        raise FeedbackUnavailable("feedback is not being recorded by this service")
    return store


FeedbackDep = Annotated[FeedbackStore, Depends(get_feedback)]
_CREATE = threading.Lock()


def settings_of(request: Request) -> Settings:
    return getattr(request.app.state.kb, "settings", None) or Settings()


def rate_window(app: FastAPI, settings: Settings) -> RateWindow:
    """The app's feedback rate window (KB_FEEDBACK_RATE_PER_MIN), created on first use."""
    with _CREATE:
        window = getattr(app.state, "feedback_rate", None)
        if window is None:
            window = app.state.feedback_rate = RateWindow(settings.feedback_rate_per_min, "feedback answers")
        return window


def client_of(request: Request) -> str:
    """Who a feedback answer comes from, for its rate: the caller (key, agent, token, open) and its address."""
    who = caller(request)
    peer = request.client.host if request.client else "local"
    return f"{who.kind}:{who.name}@{peer}"


def admit_feedback(request: Request) -> None:
    """429 with Retry-After for a client over KB_FEEDBACK_RATE_PER_MIN (counted before anything else is checked)."""
    rate_window(request.app, settings_of(request)).admit(client_of(request))


def check_feedback(request: Request, query: str | None, article_id: str) -> None:
    """400 for a query longer than KB_FEEDBACK_MAX_QUERY_CHARS or a malformed article id; 404 for an article that is not
    in the index in service (or that the caller may not see); 503 while no index is in service to tell."""
    limit = settings_of(request).feedback_max_query_chars
    if query and len(query) > limit:
        raise BadRequest(f"query is {len(query)} characters long; feedback keeps at most {limit} "
                         "(KB_FEEDBACK_MAX_QUERY_CHARS): send the answer_id of the response instead of long text")
    check_article_id(article_id)  # 400 for what cannot be an article id at all (`..`, a leading /, too long)
    state = request.app.state.kb
    searcher = getattr(state, "searcher", None)
    if searcher is None:
        raise getattr(state, "load_error", None) or IndexNotFound("no index in service: feedback cannot be checked "
                                                                  "against its articles yet")
    article = searcher.articles.get(article_id) if isinstance(article_id, str) else None
    hidden = article is not None and not caller(request).sees_internal and \
        str(article.get("audience", "")).lower() == "internal"
    if article is None or hidden:
        shown = article_id if len(article_id) <= 200 else article_id[:200] + "..."
        raise ArticleNotFound(f"no article with id {shown!r} in the index in service: feedback is about an article "
                              "a search, suggestion or article page showed")


def index_version(request: Request) -> str | None:
    """Build id of the index in service, so that feedback can be tied to the results it judged."""
    searcher = getattr(request.app.state.kb, "searcher", None)
    version = getattr(searcher, "version", None)
    return getattr(version, "build_id", None)


def parse_helpful(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in YES:
        return True
    if lowered in NO:
        return False
    raise BadRequest(f"helpful must be yes or no, got {value!r}")


def safe_path(target: str | None, request: Request) -> str | None:
    """`target` as a same-site relative URL (path, query, fragment), or None when it is not one.

    Accepts a relative path ("/articles/x?q=1") or an absolute http(s) URL on this service's own host
    (what browsers send as Referer); never returns anything a browser could read as another host
    ("//evil", "/\\evil", control characters, other schemes).
    """
    if not target or len(target) > MAX_REDIRECT_CHARS or "\\" in target \
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        if parts.scheme.lower() not in ("http", "https") or parts.netloc.lower() != request.url.netloc.lower():
            return None
    if not parts.path.startswith("/") or parts.path.startswith("//"):
        return None
    return urlunsplit(("", "", parts.path, parts.query, parts.fragment))


def thanked(location: str) -> str:
    """`location` with feedback=thanks in its query string, so the page can confirm without JavaScript."""
    parts = urlsplit(location)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "feedback"]
    query.append(("feedback", "thanks"))
    return urlunsplit(("", "", parts.path, urlencode(query), parts.fragment))


@router.post("/api/feedback", status_code=201, response_model=FeedbackResponse,
             summary="Record whether a result helped (JSON)",
             description="The article must be in the index in service (404 otherwise); the query is bounded by "
             "KB_FEEDBACK_MAX_QUERY_CHARS (400 beyond); a client may send KB_FEEDBACK_RATE_PER_MIN answers a minute "
             "(429 with Retry-After beyond); a feedback file that cannot be written (read-only, full disk) gives 503 "
             "`store_unavailable` while searches go on.",
             responses=error_responses(400, 404, 413, 422, 503, *API_ERRORS),
             dependencies=[Depends(admit_feedback)])
def post_feedback(body: FeedbackRequest, store: FeedbackDep, request: Request) -> dict:
    check_feedback(request, body.query, body.article_id)
    feedback_id = store.record(body.query, body.article_id, body.helpful, passage_id=body.passage_id,
                               source=body.source, index_version=index_version(request), answer_id=body.answer_id)
    acted(request, "feedback", body.article_id, body.answer_id, helpful=body.helpful)
    return {"id": feedback_id, "recorded": True}


@router.post("/feedback", status_code=303, response_class=RedirectResponse,
             summary="Record whether a result helped (HTML form), then go back to the page",
             responses={303: {"description": "Back to `next` (or the Referer) with feedback=thanks added."},
                        400: {"description": ERRORS[400]}, 404: {"description": ERRORS[404]},
                        413: {"description": ERRORS[413]}, 422: {"description": ERRORS[422]},
                        429: {"description": ERRORS[429]}, 503: {"description": ERRORS[503]}},
             dependencies=[Depends(admit_feedback)])
def post_feedback_form(store: FeedbackDep, request: Request,
                       article_id: Annotated[str, Form()], helpful: Annotated[str, Form()],
                       query: Annotated[str, Form()] = "", passage_id: Annotated[str | None, Form()] = None,
                       source: Annotated[str, Form()] = "search",
                       answer_id: Annotated[str | None, Form()] = None,
                       next: Annotated[str | None, Form(description="Relative path to return to; "
                                                        "defaults to the Referer")] = None) -> RedirectResponse:
    useful = parse_helpful(helpful)
    check_feedback(request, query, article_id)
    store.record(query, article_id, useful, passage_id=passage_id or None, source=source,
                 index_version=index_version(request), answer_id=answer_id or None)
    acted(request, "feedback", article_id, answer_id or None, source="page", helpful=useful)
    location = safe_path(next, request) or safe_path(request.headers.get("referer"), request) or "/"
    return RedirectResponse(thanked(location), status_code=303)


@router.get("/api/feedback/summary", summary="Helpful / not helpful counts, overall and per article (a page)",
            description="Totals over all feedback, and `limit` articles from `offset`, most feedback first; "
            "`next_offset` is the offset of the next page, null on the last.",
            response_model=FeedbackSummaryResponse, responses=error_responses(422, 503, *API_ERRORS))
def feedback_summary(store: FeedbackDep,
                     limit: Annotated[QueryInt, Query(ge=1, le=SUMMARY_MAX_LIMIT, description="Articles per page "
                                                 f"(1..{SUMMARY_MAX_LIMIT})")] = SUMMARY_LIMIT,
                     offset: Annotated[QueryInt, Query(ge=0, description="Articles to skip (0: the first page)")] = 0
                     ) -> dict:
    return store.summary(limit, offset)
