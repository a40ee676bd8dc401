"""Searcher: query or ticket -> dense + lexical candidates -> fused passages -> articles. No HTTP here."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from indexer.parse import render_html
from kb.articles import validate_article_id
from kb.embedder import TextEncoder
from kb.errors import ArticleNotFound, BadRequest
from kb.index import IndexReader, PassageRecord, Selection
from kb.settings import Settings
from search.confidence import calibration_for, features
from search.coverage import Coverage
from search.fusion import FusionWeights, LinearCombiner, rank
from search.glossary import Glossary, load_glossary
from search.lexical import search_codes
from search.signals import Candidates, Probe, collect, only
from search.snippets import mark_sentences
from search.tickets import TicketQuery, build_query, detect_language, extract_codes, normalise_language

MODES = ("fused", "dense", "lexical")
WORD = re.compile(r"\w+", re.UNICODE)
CODE_MATCH_CONFIDENCE = 0.9  # a query of only error codes, all found in one passage (dev set: 3 of 3 right)
OUTSIDE_CONFIDENCE = 0.1  # at most, for a query about another vendor's product the knowledge base never mentions


@dataclass(frozen=True)
class Filters:
    product: str | None = None
    language: str | None = None
    audience: str | None = None
    public_only: bool = False  # callers who may not see `audience: internal` articles (search/auth.py)

    def selection(self) -> Selection | None:
        """The index's typed filter of these filters; None when nothing is filtered."""
        if not (self.product or self.language or self.audience or self.public_only):
            return None
        return Selection(product=self.product or None, language=self.language or None,
                         audience=self.audience or None, exclude_audience="internal" if self.public_only else None)


@dataclass(frozen=True)
class Query:
    """What retrieval needs: text to embed, text for BM25 (and for marking sentences), exact codes."""

    dense: str
    lexical: str
    codes: tuple[str, ...] = ()
    alternatives: tuple[str, ...] = ()  # further texts to embed; a passage scores its best cosine over all
    language: str = "en"
    prefer: str | None = None  # the agent's language: its articles rank first on a mixed knowledge base
    head: str = ""  # the ticket's subject or the search's words (search/coverage.py)


def make_query(ticket: TicketQuery, fallback: str, glossary: Glossary | None, embed: str = "both",
               prefer: str | None = None) -> Query:
    """Retrieval query of a cleaned ticket; Indonesian text gets its English glossary rendering as well.

    Lexical: both texts. Dense, by `embed`: "rendering" (an English-only model such as MiniLM and English
    articles), "both" (an English-only model, and Indonesian articles in the index, which match the original
    best), "original" (a multilingual model reads the Indonesian itself; the rendering only blurs it).
    `prefer`: the agent's language (default: the ticket's), whose articles rank first on a mixed knowledge base.
    """
    dense, lexical = ticket.text or fallback, ticket.lexical or fallback
    prefer = prefer or ticket.language
    if ticket.language == "id" and glossary is not None and glossary.entries:
        english = glossary.translate(dense)
        if english and english != dense:
            lexical = f"{lexical} {glossary.translate(lexical)}"
            if embed == "original":
                return Query(dense=dense, lexical=lexical, codes=ticket.codes, language="id", prefer=prefer,
                             head=ticket.head)
            return Query(dense=english, lexical=lexical, codes=ticket.codes,
                         alternatives=(dense,) if embed == "both" else (), language="id", prefer=prefer,
                         head=ticket.head)
    return Query(dense=dense, lexical=lexical, codes=ticket.codes, language=ticket.language, prefer=prefer,
                 head=ticket.head)


def is_code_only(query: Query) -> bool:
    """Every word of the query belongs to one of its exact codes ("0x800CCC0E", "550 5.1.10")."""
    words = set(WORD.findall(query.dense.lower()))
    return bool(words) and words <= set(WORD.findall(" ".join(query.codes).lower()))


def validate_text(text: str, max_chars: int, what: str = "q") -> str:
    if text is None or not text.strip():
        raise BadRequest(f"{what} is empty: give the words to search for")
    if len(text) > max_chars:
        raise BadRequest(f"{what} is {len(text)} characters long; the limit is {max_chars}")
    return text.strip()


def validate_k(k: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 100:
        raise BadRequest(f"k must be an integer from 1 to 100, got {k!r}")
    return k


def title_rows(version: IndexReader, row_article: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(the version's title embeddings, the row of that matrix for each passage key or -1), or (None, None) for a
    version without them (search/signals.py TitleSignal)."""
    found = version.title_vectors()
    if found is None:
        return None, None
    ids, matrix = found
    position = {article_id: i for i, article_id in enumerate(ids)}
    return matrix, np.fromiter((position.get(a, -1) for a in row_article), dtype=np.int64, count=len(row_article))


class Searcher:
    """Answers queries from one opened index version; cheap to replace when a new version is built."""

    def __init__(self, version: IndexReader, encoder: TextEncoder, settings: Settings,
                 weights: FusionWeights | None = None):
        self.version, self.encoder, self.settings = version, encoder, settings
        self.weights = weights or FusionWeights(lexical=settings.lexical_weight)
        self.weights_id = FusionWeights(lexical=settings.lexical_weight_id, code=self.weights.code)
        self.glossary = None  # set below, once the knowledge base's vocabulary is read
        self.calibrations = {lang: calibration_for(encoder.model_id, lang) for lang in ("en", "id")}
        self.articles = {a.id: {"id": a.id, "title": a.title, "summary": a.summary, "product": a.product,
                                "language": a.language, "audience": a.audience, "owner": a.owner,
                                "reviewed": a.reviewed, "tags": list(a.tags)} for a in version.articles()}
        self.row_article = version.passage_articles()  # article id per passage key
        self.has_indonesian = any(a["language"] == "id" for a in self.articles.values())
        self.row_language = [str(self.articles[a]["language"] or "").lower() for a in self.row_article]
        self.mixed_languages = len(set(self.row_language)) > 1
        self.embed = "original" if getattr(encoder, "multilingual", False) else \
            "both" if self.has_indonesian else "rendering"
        self.title_matrix, self.row_title = title_rows(version, self.row_article)
        self.term_df = version.term_df()
        self.coverage = Coverage.of_articles(self.articles, self.term_df)
        if settings.translate_indonesian:  # the dictionary's senses resolved by what this knowledge base's text says
            self.glossary = load_glossary().for_vocabulary(self.term_df)

    def warm(self) -> Searcher:
        """This searcher, once it has answered a search for one of its articles' titles: what a version reads on first
        use (a Milvus reader's vectors and lexicon, its collections' first searches: 1.5 s on the office KB) is read
        by whoever swaps the version in, not by the first request after the swap."""
        title = next((t for a in self.articles.values() if (t := str(a["title"] or "").strip())), "")
        if title:
            self.search(title[:self.settings.max_query_chars], k=1)
        return self

    # ---- retrieval -------------------------------------------------------------------------
    def collect(self, query: Query, filters: Filters = Filters(), vector: np.ndarray | None = None,
                limit: int | None = None, lexical_only: bool = False) -> Candidates:
        """Every retrieval signal's scores of the query's candidate passages (search/signals.py)."""
        probe = Probe(self, query, filters.selection(), limit or self.settings.candidates, vector)
        return collect(probe, lexical_only=lexical_only)

    def candidates(self, query: Query, filters: Filters = Filters(), vector: np.ndarray | None = None,
                   limit: int | None = None, lexical_only: bool = False
                   ) -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
        """(dense cosine, BM25, exact codes found weighted by their rarity) per passage key; every lexical or code
        candidate gets its exact cosine."""
        found = self.collect(query, filters, vector, limit, lexical_only)
        return found.get("dense"), found.get("lexical"), found.get("codes")

    def retrieve(self, query: Query, filters: Filters = Filters(), mode: str = "fused"
                 ) -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
        """(row -> score of the candidates of `mode`, row -> dense cosine, row -> exact codes found by rarity) for
        fused, dense or lexical."""
        found = self.collect(query, filters, lexical_only=(mode == "lexical"))
        dense, codes = found.get("dense"), found.get("codes")
        if mode in ("lexical", "dense"):
            return only(found, mode, self.settings.candidates), dense, codes
        return found.combined(self.combiner_for(query)), dense, codes

    def combiner_for(self, query: Query) -> LinearCombiner:
        """The service's weights of each signal for this query."""
        weights = self.weights_for(query)
        language = self.settings.language_weight_id if query.prefer == "id" else self.settings.language_weight
        return LinearCombiner({"dense": 1.0, "lexical": weights.lexical, "codes": weights.code, "language": language,
                               "title": self.settings.title_weight})

    def weights_for(self, query: Query) -> FusionWeights:
        """Indonesian queries lean more on BM25: MiniLM's cosines say less about them (docs/quality.md)."""
        return self.weights_id if query.language == "id" else self.weights

    def assess(self, dense: dict[int, float], query: Query, code_hits: dict[int, float]) -> dict:
        """Whether the knowledge base has a good answer, from calibrated dense-score features.

        A query made of nothing but error codes is judged by exact matching instead, because cosines of hex
        strings say nothing (0x800CCC0E lands near 0x8007007A): confident (at least CODE_MATCH_CONFIDENCE)
        when one passage contains every code, never when none contains any. A query whose head names another
        vendor's product that the knowledge base never mentions, and none it covers, is never confident (at most
        OUTSIDE_CONFIDENCE; search/coverage.py), and `not_covered` names that product.
        """
        top, gap = features(dense)
        probability = self.calibrations.get(query.language, self.calibrations["en"]).probability(top, gap)
        outside = self.coverage.outside(query.head)
        if outside:
            probability = min(probability, OUTSIDE_CONFIDENCE)
        if query.codes and is_code_only(query):
            found = {r: n for r, n in search_codes(self.version, list(query.codes)).items() if r in code_hits}
            if not found:
                probability = 0.0
            elif max(found.values()) >= len(set(query.codes)):
                probability = max(probability, CODE_MATCH_CONFIDENCE)
        return {"confident": probability >= self.settings.confidence_threshold,
                "confidence": round(probability, 3), "not_covered": outside}

    # ---- results ---------------------------------------------------------------------------
    def url(self, article_id: str, anchor: str = "") -> str:
        return f"{self.settings.base_url}/{article_id}" + (f"#{anchor}" if anchor else "")

    def fetch(self, rows: list[int]) -> dict[int, PassageRecord]:
        """Passages by key."""
        return self.version.passages(rows)

    def pick(self, scores: dict[int, float], limit: int, per_article: int) -> list[int]:
        """The best rows, at most `per_article` from one article."""
        chosen, counts = [], {}
        for row in rank(scores):
            article_id = self.row_article[row]
            if counts.get(article_id, 0) < per_article:
                counts[article_id] = counts.get(article_id, 0) + 1
                chosen.append(row)
                if len(chosen) >= limit:
                    break
        return chosen

    def passages(self, scores: dict[int, float], query: Query, limit: int, per_article: int = 2,
                 found: dict[int, PassageRecord] | None = None) -> list[dict]:
        """The best passages, at most `per_article` from one article, with marked sentences (`found`: passages
        already fetched, by key)."""
        chosen = self.pick(scores, limit, per_article)
        found = found if found is not None and all(r in found for r in chosen) else self.fetch(chosen)
        out = []
        for row in chosen:
            p = found[row]
            snippet = mark_sentences(p.text, query.lexical, query.codes, spans=p.sentences)
            out.append({"article_id": p.article_id, "passage_id": p.passage_id,
                        "title": self.articles[p.article_id]["title"],
                        "heading_path": list(p.heading_path), "anchor": p.anchor,
                        "url": self.url(p.article_id, p.anchor), "snippet": snippet.text,
                        "highlights": [list(h) for h in snippet.highlights], "snippet_html": snippet.to_html(),
                        "score": round(scores[row], 4)})
        return out

    def sections(self, scores: dict[int, float], rows: list[int],
                 found: dict[int, PassageRecord] | None = None) -> list[dict]:
        """The matched sections of one article (no snippets: clients link to them; `found` as in passages)."""
        found = found if found is not None and all(r in found for r in rows) else self.fetch(rows)
        return [{"heading_path": list(found[r].heading_path), "anchor": found[r].anchor,
                 "url": self.url(found[r].article_id, found[r].anchor), "score": round(scores[r], 4)}
                for r in rows]

    def group_articles(self, scores: dict[int, float], limit: int) -> list[tuple[str, float, list[int]]]:
        """(article id, score, rows best first): an article scores as its best passage."""
        grouped: dict[str, list[int]] = {}
        for row in rank(scores):
            grouped.setdefault(self.row_article[row], []).append(row)
        ordered = sorted(grouped.items(), key=lambda item: -scores[item[1][0]])
        return [(aid, scores[rows[0]], rows) for aid, rows in ordered[:limit]]

    # ---- public API ------------------------------------------------------------------------
    def search(self, q: str, k: int = 10, filters: Filters = Filters(), mode: str = "fused",
               prefer: str | None = None) -> dict:
        """Articles for an agent's search words; `prefer`: the agent's language (default: the query's)."""
        q = validate_text(q, self.settings.max_query_chars)
        k = validate_k(k)
        if mode not in MODES:
            raise BadRequest(f"mode must be one of {', '.join(MODES)}")
        ticket = TicketQuery(text=q, lexical=q, codes=tuple(extract_codes(q)), language=detect_language(q), head=q)
        query = make_query(ticket, q, self.glossary, self.embed, normalise_language(prefer) if prefer else None)
        scores, dense, code_hits = self.retrieve(query, filters, mode)
        results, grouped = [], self.group_articles(scores, k)
        found = self.fetch([r for _, _, rows in grouped for r in rows[:3]])  # one read for every article's passages
        for article_id, score, rows in grouped:
            article = self.articles[article_id]
            passages = self.passages({r: scores[r] for r in rows[:3]}, query, 3, per_article=3, found=found)
            results.append({"id": article_id, "title": article["title"], "summary": article["summary"],
                            "product": article["product"], "language": article["language"],
                            "url": self.url(article_id), "score": round(score, 4), "passages": passages})
        confidence = self.assess(dense, query, code_hits) if mode != "lexical" else \
            {"confident": None, "confidence": None, "not_covered": None}
        return {"query": q, "searched_as": query.dense if query.dense != q else None, "total": len(results),
                **confidence, "results": results}

    def suggest(self, subject: str = "", body: str = "", tags: Sequence[str] = (), language: str | None = None,
                k: int = 5, filters: Filters = Filters(), prefer: str | None = None) -> dict:
        """Answers and articles for a ticket; `prefer`: the agent's language (default: the ticket's)."""
        text = validate_text(f"{subject or ''}\n{body or ''}", self.settings.max_query_chars, "subject and body")
        k = validate_k(k)
        ticket = build_query(subject or "", body or "", tags=tags, language=language,
                             max_words=self.settings.query_max_words)
        query = make_query(ticket, text, self.glossary, self.embed, normalise_language(prefer) if prefer else None)
        scores, dense, code_hits = self.retrieve(query, filters)
        articles, grouped = [], self.group_articles(scores, k)
        sections = [r for _, _, rows in grouped for r in rows[:3]]
        found = self.fetch(list(dict.fromkeys([*self.pick(scores, k, 2), *sections])))  # answers and sections: one read
        for article_id, score, rows in grouped:
            article = self.articles[article_id]
            articles.append({"id": article_id, "title": article["title"], "summary": article["summary"],
                             "url": self.url(article_id), "score": round(score, 4),
                             "sections": self.sections(scores, rows[:3], found)})
        return {"query": {"text": query.dense, "codes": list(ticket.codes), "language": ticket.language},
                **self.assess(dense, query, code_hits),
                "answers": self.passages(scores, query, k, found=found), "articles": articles}

    def article(self, article_id: str, public_only: bool = False) -> dict:
        """One article; an internal one is not found for callers who may see public articles only."""
        validate_article_id(article_id)
        a = self.version.article(article_id)
        if a is None or (public_only and a.audience.lower() == "internal"):
            raise ArticleNotFound(f"no article with id {article_id!r}")
        return {"id": a.id, "title": a.title, "summary": a.summary, "product": a.product, "tags": list(a.tags),
                "language": a.language, "audience": a.audience, "owner": a.owner, "reviewed": a.reviewed,
                "url": self.url(a.id), "html": render_html(a.body or "", a.id, self.settings.base_url)}

    def health(self) -> dict:
        m = self.version.manifest
        return {"status": "ok", "index_version": m["build_id"], "created": m["created"], "model": m["model"],
                "query_engine": getattr(self.encoder, "active_query_engine", "torch"), "counts": m["counts"]}
