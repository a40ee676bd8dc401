"""JSON API for agents and helpdesk tools: /api/search, /api/suggest, /api/articles/{id}."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from search.auth import CallerDep
from search.routes.deps import SearcherDep, record_returned
from search.searcher import Filters

router = APIRouter(prefix="/api", tags=["search"])


class SuggestRequest(BaseModel):
    subject: str = Field("", description="Ticket subject line.")
    body: str = Field("", description="Ticket body: may contain greetings, signatures, quoted replies, logs.")
    tags: list[str] = Field(default_factory=list, description="Helpdesk tags of the ticket.")
    language: str | None = Field(None, description="Ticket language (en, id, ...); detected when absent.")
    k: int = Field(5, description="How many answers and articles to return (1..100).")


@router.get("/search", summary="Search articles; passages grouped into articles")
def search(searcher: SearcherDep, http: Request, who: CallerDep,
           q: Annotated[str, Query(description="Search words")] = "",
           k: int = 10, product: str | None = None, language: str | None = None,
           audience: str | None = None, mode: str = "fused") -> dict:
    filters = Filters(product=product or None, language=language or None, audience=audience or None,
                      public_only=not who.sees_internal)
    result = searcher.search(q, k, filters, mode)
    record_returned(http, result)
    return result


@router.post("/suggest", summary="Suggest answers and articles for a ticket")
def suggest(searcher: SearcherDep, request: SuggestRequest, http: Request, who: CallerDep) -> dict:
    result = searcher.suggest(request.subject, request.body, request.tags, request.language, request.k,
                              Filters(public_only=not who.sees_internal))
    record_returned(http, result)
    return result


@router.get("/articles/{article_id:path}", summary="One article: metadata and rendered HTML")
def article(searcher: SearcherDep, article_id: str, who: CallerDep) -> dict:
    return searcher.article(article_id, public_only=not who.sees_internal)
