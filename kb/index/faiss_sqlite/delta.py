"""Delta versions of the FAISS + SQLite backend: the previous version's files copied and patched, so a small edit
costs a small build."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator, Sequence

import faiss
import numpy as np

from kb.index.faiss_sqlite import postings
from kb.index.faiss_sqlite.fts import count_terms
from kb.index.faiss_sqlite.store import (ARTICLE_COLUMNS, INSERT_TITLE_VECTOR, META, PASSAGE_COLUMNS, TMP_PREFIX,
                                         VECTORS, IndexVersion, article_row, fsync_path, fts_row, passage_row, publish,
                                         scratch_connection, title_vector_rows)
from kb.index.records import ArticleRecord, PassageRecord


def _chunks(items: list, size: int = 500) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def plan_rows(n_old: int, removed: list[int], n_added: int) -> tuple[list[int], list[tuple[int, int]], int]:
    """Keep rows dense after removing `removed` rows and adding `n_added`: (rows for the added passages,
    (from, to) moves of surviving tail rows into holes, new row count). Work is proportional to the change."""
    gone = set(removed)
    n_new = n_old - len(gone) + n_added
    targets = sorted(r for r in gone if r < n_new) + list(range(n_old, n_new))
    added, holes = targets[:n_added], targets[n_added:]
    movers = [r for r in range(n_new, n_old) if r not in gone]
    assert len(movers) == len(holes), (n_old, len(gone), n_added)
    return added, list(zip(movers, holes)), n_new


def write_delta_version(index_dir: Path, build_id: str, previous: IndexVersion, remove: set[str],
                        articles: Sequence[ArticleRecord], passages: Sequence[PassageRecord], vectors: np.ndarray,
                        manifest: dict) -> Path:
    """Write a version as `previous` minus the articles `remove`, plus `articles` / `passages` / `vectors`: its
    SQLite file is copied and patched, so the cost follows the change, not the corpus.

    Rows stay dense (tail rows move into holes) so that FAISS row i is still passage row i. Same atomic
    publishing as `write_version`.
    """
    if len(passages) != len(vectors):
        raise ValueError(f"{len(passages)} passages but {len(vectors)} vectors")
    tmp = index_dir / f"{TMP_PREFIX}{build_id}"
    tmp.mkdir(parents=True)
    shutil.copyfile(previous.path / META, tmp / META)
    conn = scratch_connection(tmp / META)
    try:
        if "sentences" not in {row[1] for row in conn.execute("PRAGMA table_info(passages)")}:
            conn.execute("ALTER TABLE passages ADD COLUMN sentences BLOB")  # a version from before they were stored
        removed = []
        for ids in _chunks(sorted(remove)):
            removed += conn.execute(
                f"SELECT p.row, a.title, p.heading_path, p.text FROM passages p JOIN articles a ON a.id = p.article_id "
                f"WHERE p.article_id IN ({','.join('?' * len(ids))})", ids).fetchall()
        n_old = previous.size
        added, moves, n_new = plan_rows(n_old, [r[0] for r in removed], len(passages))
        moved = []
        for pairs in _chunks(moves):
            by_row = {r[0]: r for r in conn.execute(
                f"SELECT p.row, a.title, p.heading_path, p.text FROM passages p JOIN articles a ON a.id = p.article_id "
                f"WHERE p.row IN ({','.join('?' * len(pairs))})", [src for src, _ in pairs])}
            moved += [(by_row[src], dst) for src, dst in pairs]
        old_fts = [(row, title, " ".join(json.loads(headings)), text) for row, title, headings, text in removed]
        moved_fts = [((row, title, " ".join(json.loads(headings)), text), dst) for (row, title, headings, text), dst
                     in moved]
        delete_fts = "INSERT INTO passages_fts(passages_fts, rowid, title, headings, body) VALUES ('delete', ?, ?, ?, ?)"
        insert_fts = "INSERT INTO passages_fts(rowid, title, headings, body) VALUES (?, ?, ?, ?)"
        conn.executemany(delete_fts, old_fts + [fts for fts, _ in moved_fts])
        conn.executemany("DELETE FROM passages WHERE row = ?", [(r[0],) for r in removed])
        conn.executemany("UPDATE passages SET row = ? WHERE row = ?", [(dst, fts[0]) for fts, dst in moved_fts])
        conn.executemany(insert_fts, [(dst, *fts[1:]) for fts, dst in moved_fts])
        conn.execute("CREATE TABLE IF NOT EXISTS article_vectors (id TEXT PRIMARY KEY, vector BLOB NOT NULL) "
                     "WITHOUT ROWID")  # a base from before titles were embedded (builds rebuild those in full anyway)
        conn.executemany("DELETE FROM article_vectors WHERE id = ?", [(a,) for a in sorted(remove)])
        conn.executemany(INSERT_TITLE_VECTOR, title_vector_rows(articles, previous.dim))
        conn.executemany("DELETE FROM articles WHERE id = ?", [(a,) for a in sorted(remove)])
        conn.executemany(f"INSERT INTO articles VALUES ({','.join('?' * len(ARTICLE_COLUMNS))})",
                         [article_row(a) for a in articles])
        conn.executemany(f"INSERT INTO passages VALUES ({','.join('?' * len(PASSAGE_COLUMNS))})",
                         [passage_row(row, p) for row, p in zip(added, passages)])
        titles = {a.id: a.title for a in articles}
        new_fts = [fts_row(row, titles[p.article_id], p) for row, p in zip(added, passages)]
        conn.executemany(insert_fts, new_fts)
        conn.executemany("UPDATE term_df SET df = df - ? WHERE term = ?",
                         [(n, term) for term, n in count_terms(old_fts).items()])
        conn.execute("DELETE FROM term_df WHERE df <= 0")
        conn.executemany("INSERT INTO term_df VALUES (?, ?) ON CONFLICT(term) DO UPDATE SET df = df + excluded.df",
                         count_terms(new_fts).items())
        (n_articles,) = conn.execute("SELECT count(*) FROM articles").fetchone()
        conn.commit()
    finally:
        conn.close()
    if previous.postings is not None and postings.wanted(manifest, n_new):  # patched too, not read again
        postings.write(tmp, postings.patched(previous.postings, [r[0] for r in removed],
                                             [(fts[0], dst) for fts, dst in moved_fts], new_fts, n_new))
    old = previous.vectors()
    matrix = np.empty((n_new, previous.dim), dtype=np.float32)
    keep = min(n_old, n_new)
    matrix[:keep] = old[:keep]
    for (fts, dst) in moved_fts:
        matrix[dst] = old[fts[0]]
    if len(passages):
        matrix[added] = vectors
    index = faiss.IndexFlatIP(previous.dim)
    if n_new:
        index.add(matrix)
    faiss.write_index(index, str(tmp / VECTORS))
    for name in (VECTORS, META):
        fsync_path(tmp / name)
    return publish(index_dir, tmp, build_id, manifest, {"articles": n_articles, "passages": n_new})


class DeltaWriter:
    """A version patched from `base` (kb.index.IndexWriter): the batches are kept until `commit` writes the delta
    version, which is as large as the change."""

    def __init__(self, index_dir: Path, build_id: str, base: IndexVersion, remove: set[str], dim: int):
        if dim != base.dim:
            raise ValueError(f"vectors of dim {dim} cannot patch a version of dim {base.dim}")
        self.index_dir, self.build_id, self.base, self.remove, self.dim = index_dir, build_id, base, set(remove), dim
        self.articles: list[ArticleRecord] = []
        self.passages: list[PassageRecord] = []
        self.vectors: list[np.ndarray] = []
        self.committed = False

    def __enter__(self) -> DeltaWriter:
        return self

    def __exit__(self, *exc) -> None:
        if not self.committed:
            self.abort()

    def add(self, articles: Sequence[ArticleRecord], passages: Sequence[PassageRecord], vectors: np.ndarray) -> None:
        if len(passages) != len(vectors):
            raise ValueError(f"{len(passages)} passages but {len(vectors)} vectors")
        self.articles += articles
        self.passages += passages
        self.vectors.append(np.asarray(vectors, dtype=np.float32).reshape(len(passages), self.dim))

    def commit(self, manifest: dict) -> Path:
        vectors = np.vstack(self.vectors) if self.vectors else np.zeros((0, self.dim), np.float32)
        final = write_delta_version(self.index_dir, self.build_id, self.base, self.remove, self.articles,
                                    self.passages, vectors, manifest)
        self.committed = True
        return final

    def abort(self) -> None:
        self.articles, self.passages, self.vectors = [], [], []
        shutil.rmtree(self.index_dir / f"{TMP_PREFIX}{self.build_id}", ignore_errors=True)
