"""The index: one backend interface (kb.index.backend), typed records, and the engines that implement it."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kb.errors import BadRequest
from kb.index.backend import IndexBackend, IndexReader, IndexWriter
from kb.index.records import ArticleRecord, PassageRecord, PhraseHits, PhraseQuery, Selection, TermQuery

if TYPE_CHECKING:
    from kb.settings import Settings

BACKENDS = ("faiss", "milvus")

__all__ = ["BACKENDS", "ArticleRecord", "IndexBackend", "IndexReader", "IndexWriter", "PassageRecord", "PhraseHits",
           "PhraseQuery", "Selection", "TermQuery", "backend_for", "open_backend"]


def open_backend(index_dir: Path, kind: str = "faiss", milvus_uri: str | None = None, *,
                 ann_min_passages: int | None = None, postings_min_passages: int | None = None,
                 milvus_timeout: float | None = None) -> IndexBackend:
    """The backend of `kind` for the index at `index_dir` (engines are imported only when asked for); Milvus at
    `milvus_uri`, by default a milvus-lite file in `index_dir`, each call waiting at most `milvus_timeout` seconds
    (None: kb.index.milvus.connection.TIMEOUT). FAISS versions it writes of `ann_min_passages` or more passages carry
    an approximate index, of `postings_min_passages` or more BM25 postings arrays (None: none does)."""
    if kind == "faiss":
        from kb.index.faiss_sqlite import FaissSqliteBackend

        return FaissSqliteBackend(index_dir, ann_min_passages=ann_min_passages,
                                  postings_min_passages=postings_min_passages)
    if kind == "milvus":
        try:
            from kb.index.milvus import MilvusBackend
        except ImportError as exc:
            raise BadRequest(f"KB_INDEX_BACKEND=milvus needs the milvus extra (pip install 'kb-search[milvus]'): "
                             f"{exc}") from None
        return MilvusBackend(index_dir, milvus_uri, milvus_timeout)
    raise BadRequest(f"unknown index backend {kind!r}: one of {', '.join(BACKENDS)}")


def backend_for(settings: Settings, index_dir: Path | None = None) -> IndexBackend:
    """The backend the settings name (KB_INDEX_BACKEND), for their index (or `index_dir`: an evaluation's, which on
    Milvus is a milvus-lite file of its own in that folder, not KB_MILVUS_URI)."""
    own = index_dir is None or Path(index_dir) == Path(settings.index_dir)
    return open_backend(index_dir or settings.index_dir, settings.index_backend,
                        settings.milvus_uri or None if own else None, ann_min_passages=settings.ann_min_passages,
                        postings_min_passages=settings.postings_min_passages, milvus_timeout=settings.milvus_timeout)
