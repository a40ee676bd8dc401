"""Dependencies shared by routes: the searcher of the version in service, and counting what searches returned."""
from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request

from kb.errors import IndexNotFound
from search.searcher import Searcher

log = logging.getLogger("kb.usage")


def get_searcher(request: Request) -> Searcher:
    state = request.app.state.kb
    if state.searcher is None:
        raise state.load_error or IndexNotFound("no index loaded")
    return state.searcher


SearcherDep = Annotated[Searcher, Depends(get_searcher)]


def record_returned(request: Request, result: dict) -> None:
    """Count the articles a search or suggest response lists in the usage log (ids only, never the query).

    A failure is logged and swallowed: counting must never fail the search it counts.
    """
    usage = getattr(request.app.state.kb, "usage", None)
    if usage is None:
        return
    try:
        ids = [hit["id"] for hit in (*result.get("results", ()), *result.get("articles", ()))]
        usage.record(ids + [answer["article_id"] for answer in result.get("answers", ())])
    except Exception:  # noqa: BLE001 - a full disk or a locked file must not turn a search into a 500
        log.exception("could not record returned articles in the usage log")
