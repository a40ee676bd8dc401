"""Retrieval as named signals: each scores candidate passages of a query; a combiner turns their scores into one.

Signals that *find* candidates (dense, lexical, codes) each propose rows; every proposed row then gets every
signal's score (the dense cosine is computed exactly for all of them). Signals that only *score* (language, title)
add a column. The service, `kb eval` (its ablations drop a signal by name) and the study scripts all go through
`Candidates`, so a new signal or a reranker is one class here and one weight in the combiner.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from search.fusion import FINDERS, rank
from search.lexical import TermBudget, search_lexical, weigh_codes

if TYPE_CHECKING:
    from kb.index import Selection
    from search.fusion import LinearCombiner
    from search.searcher import Query, Searcher

Scores = dict[int, float]


class Ahead:
    """A thread that embeds a query and searches the dense index while the request's thread runs the other signals,
    lent only to a query collected while no other is: with other requests at work the cores are busy already, and a
    second thread per request only adds hand-offs (bench/http_ab.py --clients 4 measured them)."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked child has none of the parent's threads

    def _reset(self) -> None:
        self._pool = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kb-dense")  # one lender at a time
        self._lock = threading.Lock()
        self._collecting = 0

    @contextmanager
    def turn(self) -> Iterator[futures.ThreadPoolExecutor | None]:
        """The pool while this is the only query being collected in the process, else None."""
        with self._lock:
            self._collecting += 1
            alone = self._collecting == 1
        try:
            yield self._pool if alone else None
        finally:
            with self._lock:
                self._collecting -= 1


AHEAD = Ahead()


@dataclass
class Candidates:
    """Per-signal scores of a query's candidate passages (by key); a passage absent from a signal scores 0 there."""

    signals: dict[str, Scores] = field(default_factory=dict)

    @property
    def rows(self) -> set[int]:
        """The rows the finding signals proposed (the others only score them)."""
        return set().union(*(scores for name, scores in self.signals.items() if name in FINDERS))

    def get(self, name: str) -> Scores:
        return self.signals.get(name, {})

    def combined(self, combiner: LinearCombiner) -> Scores:
        return combiner.combine(self.signals)

    def without(self, *names: str) -> Candidates:
        """The same candidates with the named signals' scores dropped (an ablation)."""
        return Candidates({n: s for n, s in self.signals.items() if n not in names})


class Probe:
    """One query against one searcher: what every signal needs, its embeddings computed once."""

    def __init__(self, searcher: Searcher, query: Query, selection: Selection | None, limit: int,
                 vector: np.ndarray | None = None):
        self.searcher, self.query, self.selection, self.limit = searcher, query, selection, limit
        self._vectors = None if vector is None else vector.reshape(1, -1)

    @property
    def vectors(self) -> np.ndarray:
        if self._vectors is None:
            self._vectors = self.searcher.encoder.encode_queries([self.query.dense, *self.query.alternatives])
        return self._vectors


class Signal(Protocol):
    """One named source of evidence about a passage's relevance to a query (`embeds = True` on a signal that embeds
    the query: collect() lets it find in a worker thread while the others find in the caller's)."""

    name: str

    def find(self, probe: Probe) -> Scores:
        """Rows this signal proposes, with its score (empty for signals that only score)."""

    def score(self, probe: Probe, rows: list[int]) -> Scores:
        """Its score of each of `rows` (the union of every signal's proposals)."""


class DenseSignal:
    """Cosine of the query's embedding(s) and the passage's; with several query texts, the best of them."""

    name = "dense"
    embeds = True  # finds in collect's worker thread, beside the other signals

    def find(self, probe):
        found: Scores = {}
        for vector in probe.vectors:
            found.update(probe.searcher.version.dense_search(vector, probe.limit, probe.selection))
        return found

    def score(self, probe, rows):
        if not rows:
            return {}
        return dict(zip(rows, (probe.searcher.version.vectors(rows) @ probe.vectors.T).max(axis=1).tolist()))


class LexicalSignal:
    """BM25 of the query's words over title, headings and body (the index's lexical search)."""

    name = "lexical"

    def find(self, probe):
        searcher = probe.searcher
        budget = TermBudget(searcher.settings.lexical_budget, searcher.settings.lexical_budget_above)
        return search_lexical(searcher.version, probe.query.lexical, probe.limit, df=searcher.term_df,
                              total=len(searcher.row_article), selection=probe.selection, budget=budget)

    def score(self, probe, rows):
        return {}  # passages BM25 did not return among its best score 0 (min-max normalised, they would anyway)


class CodeSignal:
    """Exact error codes of the query found in the passage, each weighted by its rarity (search.lexical)."""

    name = "codes"

    def find(self, probe):
        if not probe.query.codes:
            return {}
        searcher = probe.searcher
        return weigh_codes(searcher.version, list(probe.query.codes), len(searcher.row_article),
                           selection=probe.selection)

    def score(self, probe, rows):
        return {}


class LanguageSignal:
    """1 when the passage's article is in the language the agent prefers (query.prefer), else 0; nothing on a
    knowledge base in one language."""

    name = "language"

    def find(self, probe):
        return {}

    def score(self, probe, rows):
        prefer, searcher = (probe.query.prefer or "").lower(), probe.searcher
        if not prefer or not searcher.mixed_languages:
            return {}
        return {r: 1.0 for r in rows if searcher.row_language[r] == prefer}


class TitleSignal:
    """Cosine of the query's embedding(s) and the title of the passage's article: an FAQ's titles are the questions
    users ask in other words (docs/quality.md, change 11). Scores only; nothing for a version whose titles were not
    embedded."""

    name = "title"

    def find(self, probe):
        return {}

    def score(self, probe, rows):
        searcher = probe.searcher
        if searcher.title_matrix is None or not rows:
            return {}
        keys = np.asarray(rows, dtype=np.int64)
        at = searcher.row_title[keys]
        kept = at >= 0
        cosines = (searcher.title_matrix[at[kept]] @ probe.vectors.T).max(axis=1)
        return dict(zip(keys[kept].tolist(), cosines.tolist()))


SIGNALS: tuple[Signal, ...] = (DenseSignal(), LexicalSignal(), CodeSignal(), LanguageSignal(), TitleSignal())


def collect(probe: Probe, signals: tuple[Signal, ...] = SIGNALS, lexical_only: bool = False) -> Candidates:
    """Every signal's proposals, then every signal's score of their union (lexical_only: proposals without the
    dense signal, nothing embedded). While no other query is collected, the signals that embed the query find theirs
    in a worker thread and the others theirs in the caller's: the encoder and FAISS release the interpreter, so BM25
    runs beside them on an idle core."""
    finders = [s for s in signals if not (lexical_only and s.name == "dense")]
    with AHEAD.turn() as pool:
        ahead = [s for s in finders if getattr(s, "embeds", False)] if pool and len(finders) > 1 else []
        pending = {s.name: pool.submit(s.find, probe) for s in ahead}
        try:
            here = {s.name: s.find(probe) for s in finders if s.name not in pending}
        finally:  # never leave a search running on a version the caller may release
            futures.wait(pending.values())
    found = {s.name: pending[s.name].result() if s.name in pending else here[s.name] for s in finders}
    if lexical_only:
        return Candidates(found)
    rows = sorted(set().union(*found.values()))
    return Candidates({s.name: {**found.get(s.name, {}), **s.score(probe, rows)} for s in signals})


def only(candidates: Candidates, name: str, limit: int) -> Scores:
    """One finding signal's own ranking, as the service's `mode=dense|lexical` returns it."""
    scores = candidates.get(name)
    return {r: scores[r] for r in rank(scores)[:limit]} if name == "dense" else dict(scores)
