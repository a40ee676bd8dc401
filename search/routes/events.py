"""The analytics event log from the routes' side: answers recorded with their source and id, POST /api/events."""
from __future__ import annotations

import logging
from time import perf_counter
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from kb.errors import ArticleNotFound, BadRequest
from kb.events import ANSWER_ID, new_answer_id
from search.auth import caller
from search.routes.deps import SearcherDep, record_returned
from search.schemas import API_ERRORS, EventResponse, error_responses
from search.tickets import detect_language

log = logging.getLogger("kb.events")
router = APIRouter(prefix="/api", tags=["feedback"])

CLIENT_SOURCES = ("page", "widget")  # what a client may say it is (X-KB-Source, or `source` of POST /api/events)
MAX_POSITION = 100


def event_source(request: Request, fixed: str | None = None) -> str:
    """Where a request comes from, for the event log: `fixed` (pages, webhooks); else a client's X-KB-Source when it
    is page or widget (anything else is ignored); else api:<key name> for an API key, api:<kind> for other callers."""
    if fixed:
        return fixed
    claimed = request.headers.get("x-kb-source", "").strip().lower()
    if claimed in CLIENT_SOURCES:
        return claimed
    who = caller(request)
    return f"api:{who.name}" if who.kind == "key" else f"api:{who.kind}"


def answered(request: Request, kind: str, result: dict, started: float, source: str | None = None,
             product: str | None = None) -> dict:
    """Give a search or suggest `result` its `answer_id`, count its articles in the usage log and queue its answer
    event (source, language, product filter, cleaned query, articles with positions and scores, confidence,
    latency since `started`). Never fails the answer: the event log only queues, and drops when full."""
    latency_ms = (perf_counter() - started) * 1000
    result["answer_id"] = new_answer_id()
    record_returned(request, result)
    events = getattr(request.app.state.kb, "events", None)
    if events is None:
        return result
    try:
        if kind == "search":
            query, language = result.get("query"), detect_language(result.get("query") or "")
            ranked = [(hit["id"], hit["score"]) for hit in result.get("results", ())]
        else:  # a suggest's query text is what it embedded
            query, language = result["query"].get("text"), result["query"].get("language")
            ranked = [(hit["id"], hit["score"]) for hit in result.get("articles", ())]
        events.record_answer(kind, event_source(request, source), result["answer_id"], query, ranked,
                             language=language, product=product, confidence=result.get("confidence"),
                             confident=result.get("confident"), latency_ms=latency_ms,
                             embedded=result.get("searched_as") if kind == "search" else None)
    except Exception:  # noqa: BLE001 - an odd result shape must not turn an answer into a 500
        log.exception("could not queue an answer event")
    return result


def acted(request: Request, kind: str, article_id: str, answer_id: str | None = None, position: int | None = None,
          source: str | None = None, helpful: bool | None = None) -> bool:
    """Queue what an agent did with an answer (open, copy, insert, link, feedback); the article's product is looked up
    in the index in service. False when there is no event log or its queue is full."""
    state = request.app.state.kb
    events = getattr(state, "events", None)
    if events is None:
        return False
    searcher = getattr(state, "searcher", None)
    article = getattr(searcher, "articles", {}).get(article_id) if searcher is not None else None
    product = article.get("product") if isinstance(article, dict) else None
    answer_id = answer_id if isinstance(answer_id, str) and ANSWER_ID.match(answer_id) else None
    return events.record_action(kind, event_source(request, source), article_id, answer_id, position, product,
                                helpful)


def parse_position(value: str | int | None) -> int | None:
    """A result position 1..100 from a link's `pos`; None for anything else."""
    text = str(value).strip() if value is not None else ""
    return int(text) if text.isdigit() and 1 <= int(text) <= MAX_POSITION else None


class EventRequest(BaseModel):
    kind: Literal["open", "copy", "insert", "link"] = Field(description="What the agent did with the article: opened "
                                                                       "it, copied it, inserted it into a reply, "
                                                                       "linked it to the ticket.")
    answer_id: str | None = Field(None, description="The `answer_id` of the search or suggest response the article "
                                                    "came from (16 hexadecimal characters).")
    article_id: str = Field(..., max_length=1000, description="Id of the article (it must be in the index in service).")
    position: int | None = Field(None, strict=True, description=f"Its 1-based position in that response "
                                                                f"(1..{MAX_POSITION}).")
    source: Literal["page", "widget"] = Field(description="Where the agent did it: the agent pages or the widget.")


@router.post("/events", status_code=202, response_model=EventResponse,
             summary="Record what an agent did with a search or suggest answer",
             description="Open, copy, insert into a reply, link to the ticket. Queued for the analytics event log "
             "(KB_ANALYTICS_DB), never waited for: `recorded` is false only when the log's queue was full and the "
             "event was dropped. Unknown article: 404; a malformed answer_id or a position outside 1..100: 400; an "
             "event log that cannot write its file (read-only, full disk): 503 `store_unavailable`, searches go on.",
             responses=error_responses(400, 404, 422, 503, *API_ERRORS))
def post_event(body: EventRequest, request: Request, searcher: SearcherDep) -> dict:
    if body.answer_id is not None and not ANSWER_ID.match(body.answer_id):
        raise BadRequest("answer_id must be the 16 hexadecimal characters a search or suggest response returned")
    if body.position is not None and not 1 <= body.position <= MAX_POSITION:
        raise BadRequest(f"position must be from 1 to {MAX_POSITION}, got {body.position}")
    article = searcher.articles.get(body.article_id)
    hidden = article is not None and not caller(request).sees_internal and \
        str(article.get("audience", "")).lower() == "internal"
    if article is None or hidden:
        raise ArticleNotFound(f"no article with id {body.article_id!r}")
    events = getattr(request.app.state.kb, "events", None)
    refusal = events.unavailable() if hasattr(events, "unavailable") else None
    if refusal is not None:  # the event log cannot write its file (read-only, full disk): 503 store_unavailable
        raise refusal
    return {"recorded": acted(request, body.kind, body.article_id, body.answer_id, body.position, body.source)}
