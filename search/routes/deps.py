"""Dependencies shared by routes: the searcher of the version in service."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from kb.errors import IndexNotFound
from search.searcher import Searcher


def get_searcher(request: Request) -> Searcher:
    state = request.app.state.kb
    if state.searcher is None:
        raise state.load_error or IndexNotFound("no index loaded")
    return state.searcher


SearcherDep = Annotated[Searcher, Depends(get_searcher)]
