"""The index: one backend interface (kb.index.backend), typed records, and the engines that implement it."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kb.errors import BadRequest
from kb.index.backend import IndexBackend, IndexReader
from kb.index.records import ArticleRecord, PassageRecord, PhraseHits, PhraseQuery, Selection, TermQuery

if TYPE_CHECKING:
    from kb.settings import Settings

BACKENDS = ("faiss",)

__all__ = ["BACKENDS", "ArticleRecord", "IndexBackend", "IndexReader", "PassageRecord", "PhraseHits", "PhraseQuery",
           "Selection", "TermQuery", "backend_for", "open_backend"]


def open_backend(index_dir: Path, kind: str = "faiss") -> IndexBackend:
    """The backend of `kind` for the index at `index_dir` (engines are imported only when asked for)."""
    if kind == "faiss":
        from kb.index.faiss_sqlite import FaissSqliteBackend

        return FaissSqliteBackend(index_dir)
    raise BadRequest(f"unknown index backend {kind!r}: one of {', '.join(BACKENDS)}")


def backend_for(settings: Settings, index_dir: Path | None = None) -> IndexBackend:
    """The backend the settings name (KB_INDEX_BACKEND), for their index (or `index_dir`: an evaluation's)."""
    return open_backend(index_dir or settings.index_dir, settings.index_backend)
