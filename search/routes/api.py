"""JSON API for agents and helpdesk tools: /api/search, /api/suggest, /api/articles/{id}."""
from __future__ import annotations

from time import perf_counter
from typing import Annotated, Any, Callable

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from starlette.concurrency import run_in_threadpool

from search.auth import CallerDep
from search.routes.deps import SearcherDep
from search.routes.events import answered
from search.schemas import (API_ERRORS, K_BOUNDS, ArticleResponse, QueryInt, SearchResponse, SuggestResponse,
                            error_responses)
from search.searcher import MODES, Filters

router = APIRouter(prefix="/api", tags=["search"])
SEARCH_JSON = TypeAdapter(SearchResponse)
SUGGEST_JSON = TypeAdapter(SuggestResponse)


def respond(http: Request, kind: str, schema: TypeAdapter, call: Callable[[], dict], **labels: Any) -> Response:
    """Run a search or suggest `call`, record it (`answered`) and give it as the route's response model would:
    validated, JSON by pydantic. The route hands this whole step to one worker thread, where FastAPI takes two hops
    for a plain `def` route (the endpoint, then the response's validation; docs/benchmarks.md, "What HTTP adds")."""
    started = perf_counter()
    result = answered(http, kind, call(), started, **labels)
    return Response(schema.dump_json(schema.validate_python(result, from_attributes=True)),
                    media_type="application/json")


class SuggestRequest(BaseModel):
    # Strict: `"k": true`, `"k": "5"`, `"k": 7.0` and a tag that is a number are wrongly typed fields (422).
    model_config = ConfigDict(strict=True)

    subject: str = Field("", description="Ticket subject line.")
    body: str = Field("", description="Ticket body: may contain greetings, signatures, quoted replies, logs.")
    tags: list[str] = Field(default_factory=list, description="Helpdesk tags of the ticket.")
    language: str | None = Field(None, description="Ticket language (en, id, ...); detected when absent.")
    prefer: str | None = Field(None, description="The agent's language (en, id): on a knowledge base in several "
                               "languages its articles rank first (default: the ticket's language).")
    k: int = Field(5, description="How many answers and articles to return (1..100; outside: 400).",
                   json_schema_extra=K_BOUNDS)


@router.get("/search", summary="Search articles; passages grouped into articles", response_model=SearchResponse,
            responses=error_responses(400, 422, 503, *API_ERRORS))
async def search(searcher: SearcherDep, http: Request, who: CallerDep,
                 q: Annotated[str, Query(description="Search words (required; empty: 400)")] = "",
                 k: Annotated[QueryInt, Query(description="How many articles (1..100; outside: 400; not digits: 422)",
                                              json_schema_extra=K_BOUNDS)] = 10,
                 product: Annotated[str | None, Query(description="Only articles of this product")] = None,
                 language: Annotated[str | None, Query(description="Only articles in this language (en, id)")] = None,
                 audience: Annotated[str | None, Query(description="Only public or internal articles")] = None,
                 mode: Annotated[str, Query(description="fused (default), dense or lexical (anything else: 400)",
                                            json_schema_extra={"enum": list(MODES)})] = "fused",
                 prefer: Annotated[str | None, Query(description="The agent's language (en, id): on a knowledge base "
                                                     "in several languages its articles rank first (default: the "
                                                     "language of the query)")] = None) -> Response:
    filters = Filters(product=product or None, language=language or None, audience=audience or None,
                      public_only=not who.sees_internal)
    return await run_in_threadpool(respond, http, "search", SEARCH_JSON,
                                   lambda: searcher.search(q, k, filters, mode, prefer), product=product or None)


@router.post("/suggest", summary="Suggest answers and articles for a ticket", response_model=SuggestResponse,
             responses=error_responses(400, 413, 422, 503, *API_ERRORS))
async def suggest(searcher: SearcherDep, request: SuggestRequest, http: Request, who: CallerDep) -> Response:
    filters = Filters(public_only=not who.sees_internal)
    return await run_in_threadpool(respond, http, "suggest", SUGGEST_JSON, lambda: searcher.suggest(
        request.subject, request.body, request.tags, request.language, request.k, filters, request.prefer))


@router.get("/articles/{article_id:path}", summary="One article: metadata and rendered HTML",
            response_model=ArticleResponse, responses=error_responses(400, 404, 503, *API_ERRORS))
def article(searcher: SearcherDep, article_id: str, who: CallerDep) -> dict:
    return searcher.article(article_id, public_only=not who.sees_internal)
