"""The FAISS + SQLite index backend: one folder per version (vectors.faiss, meta.sqlite, sealed manifest), CURRENT."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from kb.errors import IndexNotFound
from kb.index.faiss_sqlite import ann, delta, extras, postings, store
from kb.index.faiss_sqlite.version import IndexVersion
from kb.index.backend import write_whole
from kb.index.lock import build_lock
from kb.index.records import ArticleRecord, PassageRecord


class FaissSqliteBackend:
    """The versions in one folder (kb.index.IndexBackend): built into a temp folder, renamed into place, switched to
    by rewriting CURRENT atomically; opened with their checksums verified; leased while in use. Versions of
    `ann_min_passages` passages or more also carry an approximate index (ann.py; None: none does); of
    `postings_min_passages` or more, their BM25 postings as arrays (postings.py), which lexical searches read."""

    kind = "faiss"

    def __init__(self, index_dir: Path, ann_min_passages: int | None = None, postings_min_passages: int | None = None):
        self.index_dir = Path(index_dir)
        self.ann_min_passages = ann_min_passages
        self.postings_min_passages = postings_min_passages

    def __repr__(self) -> str:
        return f"FaissSqliteBackend({str(self.index_dir)!r})"

    def current(self) -> str | None:
        return store.current_id(self.index_dir)

    def list(self) -> list[str]:
        return store.list_versions(self.index_dir)

    def manifest(self, name: str) -> dict:
        return store.read_manifest(self.index_dir / name)

    def open(self, name: str | None = None, model_id: str | None = None, check: bool = True) -> IndexVersion:
        name = name or self.current()
        if name is None:
            raise IndexNotFound(f"no index in {self.index_dir}: run `kb index --index-dir {self.index_dir}` first")
        return store.open_version(self.index_dir / name, model_id, check_files=check)

    def switch(self, name: str) -> None:
        store.switch_current(self.index_dir, name)

    def new_name(self) -> str:
        return store.new_build_id()

    def writer(self, name: str, dim: int, *, base: IndexVersion | None = None,
               remove: set[str] = frozenset()) -> store.VersionWriter | delta.DeltaWriter:
        sizes = {ann.REQUEST: self.ann_min_passages, postings.REQUEST: self.postings_min_passages}
        if base is None:
            return extras.asking(store.VersionWriter(self.index_dir, name, dim), sizes)
        if isinstance(base, IndexVersion):
            return extras.asking(delta.DeltaWriter(self.index_dir, name, base, set(remove), int(dim)), sizes)
        raise TypeError(f"a FAISS + SQLite version is patched from another of its kind, not {type(base).__name__}")

    def write(self, name: str, articles: Sequence[ArticleRecord], passages: Sequence[PassageRecord],
              vectors: np.ndarray, manifest: dict, *, base: IndexVersion | None = None,
              remove: set[str] = frozenset()) -> None:
        write_whole(self, name, articles, passages, vectors, manifest, base=base, remove=remove)

    def prune(self, keep: int) -> list[str]:
        return store.prune_versions(self.index_dir, keep)

    def lock(self):
        return build_lock(self.index_dir)

    def remove_leftovers(self) -> list[str]:
        return store.remove_leftovers(self.index_dir)
