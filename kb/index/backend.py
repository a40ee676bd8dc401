"""The index backend interface: versions written, listed, switched and opened by name; one opened version read."""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol, Sequence

from kb.index.records import ArticleRecord, PassageRecord, PhraseHits, PhraseQuery, Selection, TermQuery

if TYPE_CHECKING:
    import numpy as np


class IndexReader(Protocol):
    """One opened, read-only index version. Passages are addressed by key (0 .. size - 1).

    Lifetime: a service counts its users (`acquire` / `release`) and `retire`s it when another version replaces
    it, so that it closes (its files, connections, leases) when its last request finishes; `close` at once.
    """

    manifest: dict  # what the builder recorded (model, dim, settings, content hash...) plus build_id, created, counts
    sealed: bool  # the version carries checksums that `verify` can read again

    @property
    def build_id(self) -> str: ...
    @property
    def size(self) -> int:
        """Number of passages (keys are 0 .. size - 1)."""
    @property
    def dim(self) -> int: ...
    @property
    def closed(self) -> bool: ...

    def acquire(self) -> bool:
        """Count one more user; False when the version is already closed (take the one now in service)."""
    def release(self) -> None: ...
    def retire(self) -> None: ...
    def close(self) -> None: ...
    def verify(self) -> bool:
        """Check the stored data again against its checksums; False when it has none, IndexDamaged on damage."""

    # ---- records ------------------------------------------------------------------------------
    def articles(self, ids: Sequence[str] | None = None, body: bool = False) -> list[ArticleRecord]:
        """Articles (all, or those of `ids` that exist), bodies only when asked for."""
    def article(self, article_id: str) -> ArticleRecord | None:
        """One article with its body, or None."""
    def passages(self, keys: Sequence[int]) -> dict[int, PassageRecord]:
        """Passages by key (keys that do not exist are left out)."""
    def passage_articles(self) -> list[str]:
        """The article id of every passage, in key order."""
    def vectors(self, keys: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Dense vectors (unit length, float32) of `keys`, or of every passage in key order."""
    def term_df(self) -> dict[str, int]:
        """Passages containing each lower-case word (as search.lexical splits words)."""
    def title_vectors(self) -> tuple[list[str], np.ndarray] | None:
        """(article ids in id order, their title embeddings in that order as unit float32 rows); None for a version
        written without them (before they were stored) or whose articles have none."""

    # ---- search -------------------------------------------------------------------------------
    def dense_search(self, vector: np.ndarray, limit: int, selection: Selection | None = None) -> dict[int, float]:
        """Key -> inner product of the `limit` nearest passages to `vector` among those `selection` admits."""
    def lexical_search(self, query: TermQuery, limit: int,
                       selection: Selection | None = None) -> dict[int, float]:
        """Key -> BM25 score (higher is better) of the best `limit` passages `selection` admits, best first."""
    def phrase_search(self, query: PhraseQuery, limit: int, selection: Selection | None = None) -> PhraseHits:
        """Passages (at most `limit`, in key order) containing the phrase(s) exactly."""


class IndexWriter(Protocol):
    """One version being written, batch by batch (from `IndexBackend.writer`): nothing of it is listed, opened or
    in service until `commit`; `abort` (or leaving its `with` block without committing) discards it."""

    dim: int  # of the vectors it takes
    committed: bool

    def add(self, articles: Sequence[ArticleRecord], passages: Sequence[PassageRecord], vectors: np.ndarray) -> None:
        """Append a batch: passages get the next keys in order and row i of `vectors` belongs to passages[i]; each
        passage's article is in this batch or an earlier one."""
    def commit(self, manifest: dict) -> None:
        """Finish the version with `manifest` (its "dim" the writer's), check it opens, and switch to it."""
    def abort(self) -> None:
        """Discard what was written (also when the process dies: `remove_leftovers` clears it)."""
    def __enter__(self) -> IndexWriter: ...
    def __exit__(self, *exc) -> None:
        """Abort unless committed."""


class IndexBackend(Protocol):
    """The versions of one index location (a folder, a collection prefix): written whole and switched to
    atomically, so that a reader never sees a half-written version and a killed build leaves the previous one."""

    def current(self) -> str | None:
        """The name of the version in service; None before the first; IndexDamaged when it names none."""
    def list(self) -> list[str]:
        """Complete versions, oldest first."""
    def manifest(self, name: str) -> dict:
        """What version `name` recorded, read without opening or checking it (OSError / ValueError when it cannot
        be read)."""
    def open(self, name: str | None = None, model_id: str | None = None, check: bool = True) -> IndexReader:
        """Open version `name` (default: the current one) with its checks (`check`: re-read its data against
        checksums); IndexNotFound without one, IndexMismatch for another format or model (`model_id` None: any
        model), IndexDamaged when it fails a check."""
    def switch(self, name: str) -> None:
        """Put version `name` into service."""
    def new_name(self) -> str:
        """A fresh, sortable version name."""
    def writer(self, name: str, dim: int, *, base: IndexReader | None = None,
               remove: set[str] = frozenset()) -> IndexWriter:
        """Start writing version `name` of vectors of `dim`: `base` (when given) minus the articles in `remove`,
        plus the batches `add`ed (an article rewritten must be in `remove`); memory holds one batch, not the
        version, when there is no base. Keys of the new version are the backend's to assign."""
    def write(self, name: str, articles: Sequence[ArticleRecord], passages: Sequence[PassageRecord],
              vectors: np.ndarray, manifest: dict, *, base: IndexReader | None = None,
              remove: set[str] = frozenset()) -> None:
        """Write version `name` in one batch and switch to it (`writer`, one `add`, `commit`)."""
    def prune(self, keep: int) -> list[str]:
        """Delete the oldest versions beyond `keep`, never the current one nor one in use; returns their names."""
    def lock(self) -> AbstractContextManager:
        """Held by a build: Conflict when another build writes here."""
    def remove_leftovers(self) -> list[str]:
        """Delete what killed builds left; returns their names."""


def write_whole(backend: IndexBackend, name: str, articles: Sequence[ArticleRecord],
                passages: Sequence[PassageRecord], vectors: np.ndarray, manifest: dict, *,
                base: IndexReader | None = None, remove: set[str] = frozenset()) -> None:
    """`IndexBackend.write` of every engine: one batch through the engine's writer, then commit."""
    if len(passages) != len(vectors):
        raise ValueError(f"{len(passages)} passages but {len(vectors)} vectors")
    with backend.writer(name, int(manifest["dim"]), base=base, remove=remove) as writer:
        writer.add(articles, passages, vectors)
        writer.commit(manifest)
