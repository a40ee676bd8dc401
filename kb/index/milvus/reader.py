"""MilvusReader: one opened index version on Milvus (its passage and data collections) read through kb.index."""
from __future__ import annotations

import base64
import json
import threading
import weakref
from typing import Sequence

import numpy as np

from kb.errors import IndexNotFound, IndexUnavailable
from kb.index.milvus import analysis, contents, lexicon
from kb.index.milvus.collections import (DATA_SUFFIX, LEXICAL_SUFFIX, PAGE, TOPK_MAX, literal, read_blobs,
                                         rows_in_order, selection_filter)
from kb.index.records import ArticleRecord, PassageRecord, PhraseHits, PhraseQuery, Selection, TermQuery

SELECTIONS_KEPT = 32


def article_record(data: dict, body: str | None) -> ArticleRecord:
    vector = data.get("title_vector")  # base64 of float32 bytes; absent in versions written before
    return ArticleRecord(**{**data, "tags": tuple(data["tags"]), "includes": tuple(data["includes"]), "body": body,
                            "title_vector": base64.b64decode(vector) if vector else None})


class MilvusReader:
    """One version (kb.index.IndexReader): passages and vectors in collection kb_<name>, BM25 term weights in
    kb_<name>__lexical, articles, word counts and the lexicon as JSON in kb_<name>__data. A version is never changed
    once written, so what is read whole (the article listing, the article of each key, the vectors, the lexicon) is
    read once and kept."""

    def __init__(self, client, name: str, collection: str, manifest: dict, lease, *, sealed: bool = False,
                 articles: dict[str, dict] | None = None):
        self.client, self.name, self.collection, self.manifest = client, name, collection, manifest
        self.sealed = sealed  # its manifest carries a digest of what was written (contents.py) that `verify` reads
        self.data = collection + DATA_SUFFIX
        self.lexical = collection + LEXICAL_SUFFIX
        self._lexicon: lexicon.Lexicon | None = None
        self._lease = lease
        self._guard = threading.Lock()
        self._users, self._retired, self._closed = 0, False, False
        self._owners: list[str] | None = None
        self._listing: dict[str, ArticleRecord] | None = None  # the article records, once read (by the open's check)
        if articles is not None:
            self._listing = {aid: article_record(data, None) for aid, data in articles.items()}
        self._matrix: np.ndarray | None = None
        self._df: dict[str, int] | None = None
        self._selected: dict[Selection, frozenset[int]] = {}
        if lease is not None:
            weakref.finalize(self, lease.close)

    def __enter__(self) -> MilvusReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def build_id(self) -> str:
        return self.name

    @property
    def size(self) -> int:
        return int(self.manifest["counts"]["passages"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- users --------------------------------------------------------------------------------
    def verify(self) -> bool:
        """Read the collections back against the manifest's digest; False for a version written before it, and
        when Milvus does not answer (nothing was checked: the service's next look at the engine reports it as
        `unavailable`; the periodic check is no place for a traceback); IndexDamaged when they differ."""
        if not self.sealed:
            return False
        self._check()
        try:
            contents.verify(self.client, self.name, self.collection, self.data, self.manifest)
        except IndexUnavailable:
            return False
        return True

    def acquire(self) -> bool:
        with self._guard:
            if self._closed:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        with self._guard:
            self._users -= 1
            shut = self._retired and self._users <= 0
        if shut:
            self.close()

    def retire(self) -> None:
        with self._guard:
            self._retired = True
            shut = self._users <= 0
        if shut:
            self.close()

    def close(self) -> None:
        """Give up the lease (prune may then drop the collections). Idempotent; the shared client stays open."""
        with self._guard:
            if self._closed:
                return
            self._closed = True
        if self._lease is not None:
            self._lease.close()

    def _check(self) -> None:
        if self._closed:
            raise IndexNotFound(f"index version {self.name} was replaced and closed; ask again")

    # ---- records ------------------------------------------------------------------------------
    def _articles(self) -> dict[str, ArticleRecord]:
        if self._listing is None:
            self._check()
            found = read_blobs(self.client, self.data, 'kind == "article"')
            self._listing = {aid: article_record(json.loads(text), None) for aid, text in found.items()}
        return self._listing

    def _bodies(self, ids: list[str]) -> dict[str, str]:
        bodies = {}
        for start in range(0, len(ids), 200):
            part = ids[start:start + 200]
            bodies.update(read_blobs(self.client, self.data,
                                     f'kind == "body" and owner in [{", ".join(literal(a) for a in part)}]'))
        return bodies

    def articles(self, ids: Sequence[str] | None = None, body: bool = False) -> list[ArticleRecord]:
        listing = self._articles()
        chosen = list(listing) if ids is None else [a for a in dict.fromkeys(ids) if a in listing]
        if not body:
            return [listing[a] for a in chosen]
        bodies = self._bodies(chosen)
        return [article_record_with_body(listing[a], bodies.get(a, "")) for a in chosen]

    def article(self, article_id: str) -> ArticleRecord | None:
        found = self.articles([article_id], body=True)
        return found[0] if found else None

    def passages(self, keys: Sequence[int]) -> dict[int, PassageRecord]:
        self._check()
        keys = sorted({int(k) for k in keys if 0 <= int(k) < self.size})
        found = {}
        for start in range(0, len(keys), PAGE):
            part = keys[start:start + PAGE]
            for row in self.client.query(self.collection, filter=f"key in [{', '.join(map(str, part))}]",
                                         output_fields=["key", "passage_id", "article_id", "record"], limit=len(part)):
                rec = json.loads(row["record"])
                found[int(row["key"])] = PassageRecord(row["passage_id"], row["article_id"],
                                                       tuple(rec["heading_path"]), rec["anchor"], rec["text"],
                                                       rec["text_hash"])
        return found

    def passage_articles(self) -> list[str]:
        if self._owners is None:
            self._check()
            self._owners = [r["article_id"] for r in rows_in_order(self.client, self.collection, "key", "",
                                                                   ["article_id"])]
        return self._owners

    def vectors(self, keys=None) -> np.ndarray:
        if self._matrix is None:
            self._check()
            matrix = np.zeros((self.size, self.dim), dtype=np.float32)
            for row in rows_in_order(self.client, self.collection, "key", "", ["vec"]):
                matrix[int(row["key"])] = row["vec"]
            matrix.setflags(write=False)
            self._matrix = matrix
        return self._matrix if keys is None else self._matrix[keys]

    def title_vectors(self) -> tuple[list[str], np.ndarray] | None:
        found = sorted((aid, a.title_vector) for aid, a in self._articles().items() if a.title_vector is not None)
        if not found:
            return None  # a version written before titles were embedded
        matrix = np.frombuffer(b"".join(v for _, v in found), dtype="<f4").reshape(len(found), self.dim)
        return [aid for aid, _ in found], matrix.astype(np.float32)

    def term_df(self) -> dict[str, int]:
        if self._df is None:
            self._check()
            self._df = json.loads(read_blobs(self.client, self.data, 'kind == "terms"').get("", "{}"))
        return dict(self._df)

    # ---- search -------------------------------------------------------------------------------
    def _members(self, selection: Selection | None) -> frozenset[int] | None:
        """The keys a selection admits, or None when it admits everything."""
        if selection is None or selection.empty:
            return None
        found = self._selected.get(selection)
        if found is None:
            ok = {a.id for a in self._articles().values() if selection.admits(a)}
            found = frozenset(k for k, aid in enumerate(self.passage_articles()) if aid in ok)
            with self._guard:
                if len(self._selected) >= SELECTIONS_KEPT:
                    self._selected.pop(next(iter(self._selected)))
                self._selected[selection] = found
        return found

    def dense_search(self, vector: np.ndarray, limit: int, selection: Selection | None = None) -> dict[int, float]:
        self._check()
        expr = selection_filter(selection)
        limit = min(int(limit), self.size, TOPK_MAX)
        if expr is None or limit <= 0:
            return {}
        hits = self.client.search(self.collection, data=[np.asarray(vector, dtype=np.float32).ravel().tolist()],
                                  anns_field="vec", limit=limit, filter=expr, output_fields=["key"],
                                  search_params={"metric_type": "IP"})[0]
        return {int(h["entity"]["key"]): float(h["distance"]) for h in hits}

    def _terms(self) -> lexicon.Lexicon:
        if self._lexicon is None:
            self._check()
            self._lexicon = lexicon.Lexicon(read_blobs(self.client, self.data, f'kind == "{lexicon.KIND}"')[""])
        return self._lexicon

    def lexical_search(self, query: TermQuery, limit: int, selection: Selection | None = None) -> dict[int, float]:
        """FTS5's BM25 (lexicon.py): the inner product of the query's IDF vector with the passages' term weights, plus
        the BM25 of the words FTS5 reads as phrases. Scores are positive; milvus-lite and a Milvus server differ in the
        sign of `distance` for some metrics (milvus-io/milvus-lite#343), so abs() is taken."""
        self._check()
        terms = self._terms()
        vector, phrases = terms.query(query)
        expr = selection_filter(selection)
        limit = min(int(limit), self.size, TOPK_MAX)
        if not (vector or phrases) or expr is None or limit <= 0:
            return {}
        phrased: dict[int, float] = {}
        for phrase in phrases:
            for key, score in terms.phrase_scores(phrase, self._holding(phrase)).items():
                phrased[key] = phrased.get(key, 0.0) + score
        members = self._members(selection)
        if members is not None:
            phrased = {k: s for k, s in phrased.items() if k in members}
        scores = self._sparse(vector, limit, expr)
        missing = sorted(set(phrased) - set(scores))[:TOPK_MAX]
        if vector and missing:  # outside the terms' best `limit`: their terms' share, to add to their phrases'
            scores.update(self._sparse(vector, len(missing), f"key in [{', '.join(map(str, missing))}]"))
        for key, score in phrased.items():
            scores[key] = scores.get(key, 0.0) + score
        best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:limit]
        return {k: s for k, s in best if s > 0}

    def _sparse(self, vector: dict[int, float], limit: int, expr: str) -> dict[int, float]:
        """Key -> inner product of the best `limit` passages `expr` admits."""
        if not vector:
            return {}
        hits = self.client.search(self.lexical, data=[vector], anns_field="terms", limit=limit, filter=expr,
                                  output_fields=["key"], search_params={"metric_type": "IP"})[0]
        return {int(h["entity"]["key"]): abs(float(h["distance"])) for h in hits}

    def _holding(self, phrase: list[str]) -> dict[int, list[list[str]]]:
        """Key -> the columns' tokens of every passage holding `phrase` (at most TOPK_MAX of them)."""
        rows = self.client.query(self.collection, filter=f'phrases like "% {" ".join(phrase)} %"',
                                 output_fields=["key", "phrases"], limit=min(self.size, TOPK_MAX))
        return {int(r["key"]): analysis.columns_of(r["phrases"]) for r in rows}

    def phrase_search(self, query: PhraseQuery, limit: int, selection: Selection | None = None) -> PhraseHits:
        """Exact phrases from the phrase field: LIKE '% a b %' finds them (tokens never hold LIKE's wildcards);
        NEAR is checked on the candidates' tokens."""
        self._check()
        phrases = [[t for word in phrase for t in analysis.tokens(word)] for phrase in query.phrases]
        limit = min(int(limit), self.size)
        if not phrases or any(not p for p in phrases) or limit <= 0:
            return PhraseHits([], 0)
        expr = " and ".join(f'phrases like "% {" ".join(p)} %"' for p in phrases)
        if query.near is None:
            rows = self.client.query(self.collection, filter=expr, output_fields=["key"], limit=limit)
            keys = sorted(int(r["key"]) for r in rows)[:limit]
        else:
            rows = self.client.query(self.collection, filter=expr, output_fields=["key", "phrases"],
                                     limit=min(self.size, TOPK_MAX))
            keys = sorted(int(r["key"]) for r in rows
                          if analysis.near(analysis.columns_of(r["phrases"]), phrases, query.near))[:limit]
        found = len(keys)
        members = self._members(selection)
        if members is not None:
            keys = [k for k in keys if k in members]
        return PhraseHits(keys, found)


def article_record_with_body(article: ArticleRecord, body: str) -> ArticleRecord:
    from dataclasses import replace

    return replace(article, body=body)
