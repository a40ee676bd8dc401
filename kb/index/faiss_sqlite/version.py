"""IndexVersion: one opened FAISS + SQLite index version read through the index interface, and its open files."""
from __future__ import annotations

import json
import sqlite3
import struct
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np

from kb import integrity
from kb.errors import IndexNotFound
from kb.index.faiss_sqlite.ann import Approximate
from kb.index.faiss_sqlite.postings import Postings
from kb.index.faiss_sqlite.fts import match_expression, phrase_expression
from kb.index.records import ArticleRecord, PassageRecord, PhraseHits, PhraseQuery, Selection, TermQuery

META = "meta.sqlite"
ARTICLE_FIELDS = "id, path, title, summary, product, tags, language, audience, status, owner, reviewed, includes, " \
                 "extra, source_hash"
SELECTIONS_KEPT = 32  # filters whose passage keys are kept (the public-only filter of most keys, a few products)
CHUNK = 500  # ids per IN (...) query
_searching = threading.local()  # threads that search: one query at a time each, OpenMP threads only contend


def _one_thread() -> None:
    """OpenMP's thread count is the calling thread's own setting: every thread that searches sets it to one."""
    if not getattr(_searching, "one", False):
        faiss.omp_set_num_threads(1)
        _searching.one = True


def article_record(row: sqlite3.Row, body: str | None = None) -> ArticleRecord:
    return ArticleRecord(id=row["id"], path=row["path"], title=row["title"], summary=row["summary"],
                         product=row["product"], tags=tuple(json.loads(row["tags"])), language=row["language"],
                         audience=row["audience"], status=row["status"], owner=row["owner"], reviewed=row["reviewed"],
                         body=body, includes=tuple(json.loads(row["includes"])), extra=json.loads(row["extra"]),
                         source_hash=row["source_hash"])


def spans_blob(spans: Sequence[tuple[int, int]]) -> bytes:
    """A passage's markable sentence spans as stored in `passages.sentences`: little-endian uint32 start, end pairs."""
    return np.asarray(spans, dtype="<u4").reshape(-1, 2).tobytes()


_SPAN = struct.Struct("<II")  # one (start, end) pair of spans_blob


def spans_of(blob: bytes | None) -> tuple[tuple[int, int], ...] | None:
    """`spans_blob` read back; None for a passage written without them."""
    return None if blob is None else tuple(_SPAN.iter_unpack(blob))


@dataclass(frozen=True)
class _Selected:
    keys: np.ndarray  # int64, ascending
    members: frozenset[int]
    selector: object  # faiss.IDSelectorBatch over `keys`


@dataclass
class IndexVersion:
    """One opened, read-only index version: manifest, FAISS vectors (row k = passage key k) and SQLite metadata
    (articles, passages, an FTS5 table whose rowid is the key, term counts). Implements kb.index.IndexReader.

    Its open files (a SQLite connection per thread that asked, the lease on the manifest) are released by
    `close()`; a service counts the users of a version (`acquire` / `release`) and `retire`s it when another
    version replaces it, so that it closes when its last request finishes, not when the garbage collector runs.
    FAISS holds no file: the vectors are read into memory on open. A large version also carries an approximate
    index (`ann`): dense searches take its candidates, scored again exactly from the vectors.
    """

    path: Path
    manifest: dict
    index: faiss.Index
    sealed: bool = False  # the manifest carries checksums (versions written before them do not)
    ann: Approximate | None = None  # the approximate index of a large version (ann.py); searches use it when given
    postings: Postings | None = None  # a large version's BM25 postings as arrays (postings.py); BM25 reads them
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _lease: object = field(default=None, repr=False)  # shared flock on the manifest until closed
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _conns: list = field(default_factory=list, repr=False)  # every thread's connection, to close them all
    _users: int = field(default=0, repr=False)
    _retired: bool = field(default=False, repr=False)
    _closed: bool = field(default=False, repr=False)
    _owners: list | None = field(default=None, repr=False)  # article id per key, read once
    _passage_fields: str | None = field(default=None, repr=False)  # the passages columns read (older: no sentences)
    _listing: list | None = field(default=None, repr=False)  # articles without bodies, read once
    _selected: dict = field(default_factory=dict, repr=False)  # Selection -> _Selected

    def __post_init__(self) -> None:
        if self._lease is not None:
            weakref.finalize(self, self._lease.close)  # a version never closed still lets go when it is garbage
        n, dim = self.index.ntotal, self.index.d
        flat = faiss.downcast_index(self.index)
        if n and hasattr(flat, "get_xb"):  # IndexFlat: a view of the stored floats, no copy
            self._matrix = faiss.rev_swig_ptr(flat.get_xb(), n * dim).reshape(n, dim)
        else:
            self._matrix = self.index.reconstruct_n(0, n) if n else np.zeros((0, dim), np.float32)
        self._matrix.flags.writeable = False  # callers read the vectors; none may change the index under them

    def __enter__(self) -> IndexVersion:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def build_id(self) -> str:
        return self.manifest["build_id"]

    @property
    def size(self) -> int:
        return self.index.ntotal

    @property
    def dim(self) -> int:
        return self.index.d

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- files and users --------------------------------------------------------------------
    def db(self) -> sqlite3.Connection:
        """A read-only connection for the calling thread (SQLite connections are not shared across threads)."""
        if self._closed:
            raise IndexNotFound(f"index version {self.build_id} was replaced and closed; ask again")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            uri = f"file:{self.path / META}?mode=ro&immutable=1"
            with self._guard:
                if self._closed:
                    raise IndexNotFound(f"index version {self.build_id} was replaced and closed; ask again")
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
                conn.row_factory = sqlite3.Row
                self._conns.append(conn)
            self._local.conn = conn
        return conn

    def verify(self) -> bool:
        """Read the files again against their checksums; False for a version without them, IndexDamaged."""
        if not self.sealed:
            return False
        integrity.verify_files(self.path, self.manifest[integrity.FILES])
        return True

    def acquire(self) -> bool:
        """Count one more user (a request); False when the version is already closed (take the new one)."""
        with self._guard:
            if self._closed:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        """One user finished; the last one to leave a retired version closes it."""
        with self._guard:
            self._users -= 1
            handles = self._shut() if self._retired and self._users <= 0 else None
        self._let_go(handles)

    def retire(self) -> None:
        """No longer in service: close now if nobody uses it, else when the last user releases it."""
        with self._guard:
            self._retired = True
            handles = self._shut() if self._users <= 0 else None
        self._let_go(handles)

    def close(self) -> None:
        """Close every SQLite connection and give up the lease (prune may then delete the folder). Idempotent."""
        with self._guard:
            handles = self._shut()
        self._let_go(handles)

    def _shut(self) -> list | None:
        if self._closed:
            return None
        self._closed = True
        handles, self._conns = self._conns, []
        return handles + ([self._lease] if self._lease is not None else [])

    @staticmethod
    def _let_go(handles: list | None) -> None:
        for handle in handles or ():
            handle.close()

    # ---- records ----------------------------------------------------------------------------
    def articles(self, ids: Sequence[str] | None = None, body: bool = False) -> list[ArticleRecord]:
        fields = ARTICLE_FIELDS + (", body" if body else "")
        if ids is None:
            rows = self.db().execute(f"SELECT {fields} FROM articles").fetchall()
        else:
            wanted, rows = list(dict.fromkeys(ids)), []
            for start in range(0, len(wanted), CHUNK):
                part = wanted[start:start + CHUNK]
                rows += self.db().execute(f"SELECT {fields} FROM articles WHERE id IN ({','.join('?' * len(part))})",
                                          part).fetchall()
        return [article_record(row, row["body"] if body else None) for row in rows]

    def article(self, article_id: str) -> ArticleRecord | None:
        row = self.db().execute(f"SELECT {ARTICLE_FIELDS}, body FROM articles WHERE id = ?", (article_id,)).fetchone()
        return None if row is None else article_record(row, row["body"])

    def passages(self, keys: Sequence[int]) -> dict[int, PassageRecord]:
        keys = [int(k) for k in keys]
        if not keys:
            return {}
        if self._passage_fields is None:
            stored = {row["name"] for row in self.db().execute("PRAGMA table_info(passages)")}
            self._passage_fields = "row, passage_id, article_id, heading_path, anchor, text, text_hash, " + \
                ("sentences" if "sentences" in stored else "NULL")
        found = {}
        for start in range(0, len(keys), CHUNK):
            part = keys[start:start + CHUNK]
            for r in self.db().execute(f"SELECT {self._passage_fields} "
                                       f"FROM passages WHERE row IN ({','.join('?' * len(part))})", part):
                found[r[0]] = PassageRecord(r[1], r[2], tuple(json.loads(r[3])), r[4], r[5], r[6], spans_of(r[7]))
        return found

    def passage_articles(self) -> list[str]:
        if self._owners is None:
            self._owners = [row[0] for row in self.db().execute("SELECT article_id FROM passages ORDER BY row")]
        return self._owners

    def vectors(self, keys=None) -> np.ndarray:
        return self._matrix if keys is None else self._matrix[keys]

    def term_df(self) -> dict[str, int]:
        return dict(self.db().execute("SELECT term, df FROM term_df"))

    def title_vectors(self) -> tuple[list[str], np.ndarray] | None:
        db = self.db()
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'article_vectors'").fetchone():
            return None  # a version written before titles were embedded
        rows = db.execute("SELECT id, vector FROM article_vectors ORDER BY id").fetchall()
        if not rows:
            return None  # none of its articles has one
        matrix = np.frombuffer(b"".join(v for _, v in rows), dtype="<f4").reshape(len(rows), self.dim)
        return [i for i, _ in rows], matrix.astype(np.float32)

    # ---- search -----------------------------------------------------------------------------
    def _select(self, selection: Selection | None) -> _Selected | None:
        """The keys a selection admits (computed once per selection), or None when it admits everything."""
        if selection is None or selection.empty:
            return None
        found = self._selected.get(selection)
        if found is None:
            if self._listing is None:
                self._listing = self.articles()
            ok = {a.id for a in self._listing if selection.admits(a)}
            keys = np.array([i for i, aid in enumerate(self.passage_articles()) if aid in ok], dtype=np.int64)
            found = _Selected(keys, frozenset(keys.tolist()), faiss.IDSelectorBatch(keys) if len(keys) else None)
            with self._guard:
                if len(self._selected) >= SELECTIONS_KEPT:
                    self._selected.pop(next(iter(self._selected)))
                self._selected[selection] = found
        return found

    def dense_search(self, vector: np.ndarray, limit: int, selection: Selection | None = None) -> dict[int, float]:
        selected = self._select(selection)
        if self.index.ntotal == 0 or (selected is not None and len(selected.keys) == 0):
            return {}
        _one_thread()
        admitted = self.index.ntotal if selected is None else len(selected.keys)
        if self.ann is not None and self.ann.serves(admitted, self.index.ntotal):
            return self.ann.search(vector, limit, self._matrix, None if selected is None else selected.selector,
                                   admitted / self.index.ntotal)
        params = faiss.SearchParameters(sel=selected.selector) if selected is not None else None
        scores, rows = self.index.search(np.asarray(vector, dtype=np.float32).reshape(1, -1), limit, params=params)
        return {int(r): float(s) for r, s in zip(rows[0], scores[0]) if r >= 0}

    def lexical_search(self, query: TermQuery, limit: int, selection: Selection | None = None) -> dict[int, float]:
        if not query.terms:
            return {}
        selected = self._select(selection)
        w = query.weights
        sql = (f"SELECT rowid, -bm25(passages_fts, {w[0]}, {w[1]}, {w[2]}) AS score "
               "FROM passages_fts WHERE passages_fts MATCH ? ORDER BY score DESC LIMIT ?")
        split = self.postings.terms_of(query.terms) if self.postings is not None else None
        if split is not None:  # the same scores as FTS5's bm25() below, from arrays; phrases ("a_b") from FTS5
            terms, phrases = split
            admitted = None
            if selected is not None:
                admitted = np.zeros(self.size, dtype=bool)
                admitted[selected.keys] = True
            phrased = dict(self.db().execute(sql, (match_expression(phrases), self.size))) if phrases else None
            return self.postings.search(terms, query.weights, limit, admitted, phrased)
        # FTS5 cannot filter by article: ask for more and keep the admitted ones.
        fetch = limit if selected is None else limit * 20
        found = {row: score for row, score in self.db().execute(sql, (match_expression(query.terms), fetch))}
        if selected is not None:
            found = {r: s for r, s in found.items() if r in selected.members}
        return dict(list(found.items())[:limit])

    def phrase_search(self, query: PhraseQuery, limit: int, selection: Selection | None = None) -> PhraseHits:
        keys = [row for (row,) in self.db().execute("SELECT rowid FROM passages_fts WHERE passages_fts MATCH ? "
                                                    "LIMIT ?", (phrase_expression(query), limit))]
        found = len(keys)
        selected = self._select(selection)
        if selected is not None:
            keys = [k for k in keys if k in selected.members]
        return PhraseHits(keys, found)
