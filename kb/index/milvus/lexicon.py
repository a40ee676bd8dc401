"""BM25 on Milvus as SQLite FTS5 scores it: every passage's BM25 term weights as a sparse vector of our own.

A Milvus BM25 `Function` reads one text field with its own statistics, so three of them (title, headings, body)
summed by weight rank differently from FTS5, which scores one BM25 per passage with the column weights applied to the
term frequencies and one length over all columns (docs/quality.md: 0.065 MRR@10 lower on tickets-dev for the lexical
arm alone). Here the build splits and stems the text with FTS5's own tokenizer (kb/index/faiss_sqlite/postings.py,
an in-memory FTS5 table), and writes for each passage and term the BM25 factor FTS5 computes,
f (K1 + 1) / (f + K1 (1 - B + B * length / average length)), f the column-weighted count (TermQuery's default
weights); a query is the sparse vector of its terms' IDF, log((N - n + 0.5) / (n + 0.5)) floored at 1e-6, one per
occurrence. Their inner product is FTS5's bm25() to float32 precision, on milvus-lite and on a Milvus server alike
(no engine statistics involved). The average length is known only when every passage is in, so the build spills
each batch's weighted counts to a temporary file and writes the sparse vectors at commit. A word FTS5 reads as a
phrase ("a_b": tokens a, b next to each other) is scored as FTS5 scores a phrase, from the passages' phrase field
(`phrase_scores`), and added.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from kb.index.faiss_sqlite.postings import B, K1, MIN_IDF, tokenized, tokenizer
from kb.index.milvus.analysis import occurrences
from kb.index.records import TermQuery

WEIGHTS = TermQuery(()).weights  # title, headings, body: the weights the sparse vectors are written with
KIND = "lexicon"  # blob kind in the version's data collection: {"size", "tokens", "weights", "terms", "df"}


class Spill:
    """The weighted term counts of a version's passages, batch by batch, kept in a temporary file in `folder` until
    every passage is in: per passage its term ids and counts (in the file), its length in tokens (in memory)."""

    def __init__(self, folder: Path):
        self._file = tempfile.TemporaryFile(dir=folder, prefix=".lexicon-")
        self.ids: dict[str, int] = {}  # FTS5 term -> id (the sparse vectors' dimension)
        self._df: list[int] = []  # per id: passages holding the term
        self._pairs: list[np.ndarray] = []  # per batch: terms of each passage
        self._lengths: list[np.ndarray] = []  # per batch: tokens of each passage, all columns

    @property
    def size(self) -> int:
        return sum(len(n) for n in self._lengths)

    def add(self, columns: Sequence[tuple[str, str, str]]) -> None:
        """The next passages (in key order) as (title, headings, body)."""
        if not columns:
            return
        arrays = tokenized([(k, *c) for k, c in enumerate(columns)], len(columns))
        terms = arrays["terms"].tobytes().decode("utf-8").split("\n") if len(arrays["terms"]) else []
        per_term = np.diff(arrays["starts"])
        ids = np.empty(len(terms), dtype=np.int64)
        for n, (term, count) in enumerate(zip(terms, per_term)):
            found = self.ids.get(term)
            if found is None:
                found = self.ids[term] = len(self._df)
                self._df.append(0)
            self._df[found] += int(count)
            ids[n] = found
        term_of = np.repeat(ids, per_term)
        order = np.argsort(arrays["keys"], kind="stable")  # passage by passage
        freq = arrays["tf"].astype(np.float64) @ np.asarray(WEIGHTS, dtype=np.float64)
        self._file.write(term_of[order].astype(np.uint32).tobytes())
        self._file.write(freq[order].astype(np.float32).tobytes())
        self._pairs.append(np.bincount(arrays["keys"], minlength=len(columns)).astype(np.int64))
        self._lengths.append(arrays["lengths"].astype(np.int64))

    def vectors(self) -> Iterator[tuple[int, dict[int, float]]]:
        """(key, sparse vector) of every passage holding a term, in key order: FTS5's BM25 factor per term."""
        size = self.size
        average = (sum(int(n.sum()) for n in self._lengths) / size) if size else 0.0
        self._file.seek(0)
        key = 0
        for pairs, lengths in zip(self._pairs, self._lengths):
            total = int(pairs.sum())
            term_of = np.frombuffer(self._file.read(4 * total), dtype=np.uint32)
            freq = np.frombuffer(self._file.read(4 * total), dtype=np.float32).astype(np.float64)
            norm = K1 * (1.0 - B + B * np.repeat(lengths, pairs) / average) if total else np.zeros(0)
            value = (freq * (K1 + 1.0) / (freq + norm)).astype(np.float32)
            at = 0
            for n in pairs:
                if n:
                    yield key, dict(zip(term_of[at:at + n].tolist(), value[at:at + n].tolist()))
                key += 1
                at += n

    def lexicon(self) -> str:
        """The version's lexicon as stored (JSON): what a query needs to become a sparse vector."""
        return json.dumps({"size": self.size, "tokens": sum(int(n.sum()) for n in self._lengths),
                           "weights": list(WEIGHTS), "terms": list(self.ids), "df": self._df}, ensure_ascii=False)

    def close(self) -> None:
        self._file.close()


def idf(holding: int, size: int) -> float:
    """FTS5's IDF of a term or phrase that `holding` of `size` passages hold."""
    return max(math.log((size - holding + 0.5) / (holding + 0.5)), 0.0) or MIN_IDF


class Lexicon:
    """A version's terms (id and IDF of each) and lengths, as its lexicon blob stores them."""

    def __init__(self, text: str):
        data = json.loads(text)
        self.size = int(data["size"])
        self.average = int(data["tokens"]) / self.size if self.size else 0.0
        self.weights = tuple(float(w) for w in data["weights"])
        self.ids = {term: n for n, term in enumerate(data["terms"])}
        self.idf = [idf(df, self.size) for df in data["df"]]

    def query(self, query: TermQuery) -> tuple[dict[int, float], list[list[str]]]:
        """The sparse vector of a query's single-token words: each FTS5 token's IDF, once per occurrence (as FTS5 sums
        a term given twice twice), tokens no passage holds left out; and the words FTS5 reads as phrases, as token
        lists (once per occurrence). ValueError for weights the version was not written with."""
        if tuple(float(w) for w in query.weights) != self.weights:
            raise ValueError(f"this Milvus index version scores title, headings and body at {self.weights}, not "
                             f"{tuple(query.weights)}: its BM25 weights are written with it")
        vector: dict[int, float] = {}
        phrases = []
        for tokens in tokenizer().tokens(list(query.terms)):
            if len(tokens) > 1:
                phrases.append(list(tokens))
            elif tokens and (n := self.ids.get(tokens[0])) is not None:
                vector[n] = vector.get(n, 0.0) + self.idf[n]
        return vector, phrases

    def phrase_scores(self, phrase: list[str], holding: dict[int, list[list[str]]]) -> dict[int, float]:
        """FTS5's BM25 of one phrase for the passages holding it (key -> its columns' tokens, title, headings, body):
        the phrase's count weighted by column, the passage's length over all columns, IDF over how many hold it."""
        weight = idf(len(holding), self.size)
        scores = {}
        for key, columns in holding.items():
            f = sum(w * occurrences(column, phrase) for w, column in zip(self.weights, columns))
            norm = K1 * (1.0 - B + B * sum(len(c) for c in columns) / self.average)
            scores[key] = weight * f * (K1 + 1.0) / (f + norm)
        return scores
