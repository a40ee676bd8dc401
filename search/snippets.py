"""Answer snippets: split a passage into sentences and mark the ones that best match the query."""
from __future__ import annotations

import html
from dataclasses import dataclass
from functools import lru_cache

from kb.sentences import markable
from search.lexical import TOKEN, extract_terms


@dataclass(frozen=True)
class Snippet:
    text: str
    highlights: tuple[tuple[int, int], ...]  # character offsets [start, end) of marked sentences

    def to_html(self) -> str:
        """Escaped text with <mark> around highlighted sentences."""
        out, last = [], 0
        for start, end in self.highlights:
            out += [html.escape(self.text[last:start]), "<mark>", html.escape(self.text[start:end]), "</mark>"]
            last = end
        out.append(html.escape(self.text[last:]))
        return "".join(out)


@lru_cache(maxsize=65536)
def _stem(token: str) -> str:
    """Very light suffix folding so "syncing" meets "sync" when marking sentences (memoised: a passage's words
    repeat across requests)."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(token) > len(suffix) + 3 and token.endswith(suffix):
            return token[: -len(suffix)]
    return token


@lru_cache(maxsize=256)
def query_stems(query: str) -> frozenset[str]:
    """The folded content words of a query, as mark_sentences matches them (memoised: one request marks up to 30
    passages with the same query)."""
    return frozenset(_stem(t) for t in extract_terms(query, limit=200))


@lru_cache(maxsize=256)
def code_phrases(codes: tuple[str, ...]) -> tuple[str, ...]:
    """Each code as its lower-case tokens joined by single spaces ("550 5.1.1" -> "550 5 1 1")."""
    return tuple(" ".join(TOKEN.findall(c.lower())) for c in codes)


PASSAGES_KEPT = 4096  # passages whose sentences are kept split, cleared of boilerplate and folded (a few MB)


@lru_cache(maxsize=PASSAGES_KEPT)
def analysed(text: str, spans: tuple[tuple[int, int], ...] | None = None) -> tuple[tuple[int, int, str,
                                                                                         frozenset[str]], ...]:
    """The sentences of a passage that may be marked: (start, end, its lower-case tokens joined by spaces, its folded
    words), boilerplate left out. `spans`: the passage's markable sentences as the index stores them
    (kb.sentences.markable, computed at build time); None: found here, which costs ~0.3 ms a passage. The same for
    every query (memoised: the passages agents see recur, and a search marks up to 30 of them)."""
    if spans is None:
        spans = markable(text)
    out = []
    for start, end in spans:
        found = TOKEN.findall(text[start:end].lower())
        out.append((start, end, f" {' '.join(found)} ", frozenset(map(_stem, found))))
    return tuple(out)


def mark_sentences(text: str, query: str, codes: tuple[str, ...] = (), limit: int = 2,
                   spans: tuple[tuple[int, int], ...] | None = None) -> Snippet:
    """Mark up to `limit` sentences that best match the query.

    A query term scores 1 / (number of sentences of this passage containing it), so words that are
    everywhere in the passage (the product name) count less than the one that singles a sentence out;
    an exact code counts 3. Boilerplate (KB numbers, registry warnings, disclaimers: kb.boilerplate) is
    never marked, so a query about the registry marks the steps rather than the warning above them. `spans`: the
    markable sentences when the index stored them (`analysed`).
    """
    terms, code_tokens = query_stems(query), code_phrases(tuple(codes))
    sentences = analysed(text, spans)
    words = [folded & terms for _, _, _, folded in sentences]
    spread: dict[str, int] = {}  # sentences holding each matched term
    for matched in words:
        for t in matched:
            spread[t] = spread.get(t, 0) + 1
    scored = []
    for (start, end, flat, _), matched in zip(sentences, words):
        score = sum(1.0 / spread[t] for t in matched)
        if code_tokens:
            score += 3.0 * sum(1 for c in code_tokens if c and f" {c} " in flat)
        if score > 0:
            scored.append((score, start, end))
    best = sorted(scored, key=lambda s: (-s[0], s[1]))[:limit]
    return Snippet(text, tuple(sorted((s, e) for _, s, e in best)))
