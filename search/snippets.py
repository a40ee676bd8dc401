"""Answer snippets: split a passage into sentences and mark the ones that best match the query."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from functools import lru_cache

from search.boilerplate import boilerplate_flags
from search.lexical import TOKEN, extract_terms

SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+(?=[\"'(\[A-Z0-9])|\n+")


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


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Offsets of sentences (and list lines) in `text`."""
    spans, start = [], 0
    for match in SENTENCE_END.finditer(text):
        if text[start:match.start()].strip():
            spans.append((start, match.start()))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


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
def analysed(text: str) -> tuple[tuple[int, int, str, frozenset[str]], ...]:
    """The sentences of a passage that may be marked: (start, end, its lower-case tokens joined by spaces, its folded
    words), boilerplate left out. The same for every query (memoised: the passages agents see recur, and a search
    marks up to 30 of them; splitting and the boilerplate patterns cost ~0.15 ms a passage, docs/benchmarks.md)."""
    sentences = split_sentences(text)
    spans = [span for span, boiler in zip(sentences, boilerplate_flags(text, sentences)) if not boiler]
    out = []
    for start, end in spans:
        found = TOKEN.findall(text[start:end].lower())
        out.append((start, end, f" {' '.join(found)} ", frozenset(map(_stem, found))))
    return tuple(out)


def mark_sentences(text: str, query: str, codes: tuple[str, ...] = (), limit: int = 2) -> Snippet:
    """Mark up to `limit` sentences that best match the query.

    A query term scores 1 / (number of sentences of this passage containing it), so words that are
    everywhere in the passage (the product name) count less than the one that singles a sentence out;
    an exact code counts 3. Boilerplate (KB numbers, registry warnings, disclaimers: search.boilerplate) is
    never marked, so a query about the registry marks the steps rather than the warning above them.
    """
    terms, code_tokens = query_stems(query), code_phrases(tuple(codes))
    sentences = analysed(text)
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
