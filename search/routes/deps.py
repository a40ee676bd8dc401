"""Dependencies shared by routes: the searcher of the version in service (leased per request), and counting what
searches returned."""
from __future__ import annotations

import logging
from typing import Annotated, AsyncIterator

from fastapi import Depends, Request

from kb.errors import IndexNotFound
from search.searcher import Searcher

log = logging.getLogger("kb.usage")


def get_searcher(request: Request) -> Searcher:
    """The searcher in service, its version leased until the request has finished (`release_versions`), so that
    a version replaced meanwhile closes its files when its last request is done (search/versions.py)."""
    state = request.app.state.kb
    searcher = state.versions.lease()
    if searcher is None:
        raise state.load_error or IndexNotFound("no index loaded")
    leases = getattr(request.state, "index_leases", None)
    if leases is None:
        leases = request.state.index_leases = []
    leases.append(searcher.version)
    return searcher


async def release_versions(request: Request) -> AsyncIterator[None]:
    """Dependency of every route that calls get_searcher: gives back, when the request ends, what it leased.

    Async, like `leased_searcher`, because it never waits on I/O: FastAPI runs a plain `def` dependency in its
    thread pool, a hop each way that cost more than the lease itself (docs/benchmarks.md, "What HTTP adds")."""
    try:
        yield
    finally:
        for version in getattr(request.state, "index_leases", ()):
            version.release()
        request.state.index_leases = []


async def leased_searcher(request: Request, _: Annotated[None, Depends(release_versions)]) -> Searcher:
    return get_searcher(request)


SearcherDep = Annotated[Searcher, Depends(leased_searcher)]


def record_returned(request: Request, result: dict) -> None:
    """Count the articles a search or suggest response lists in the usage log (ids only, never the query), written
    by the log's own thread: the response never waits for the store.

    A failure is logged and swallowed: counting must never fail the search it counts.
    """
    usage = getattr(request.app.state.kb, "usage", None)
    if usage is None:
        return
    try:
        ids = [hit["id"] for hit in (*result.get("results", ()), *result.get("articles", ()))]
        usage.record_later(ids + [answer["article_id"] for answer in result.get("answers", ())])
    except Exception:  # noqa: BLE001 - a full disk or a locked file must not turn a search into a 500
        log.exception("could not record returned articles in the usage log")
