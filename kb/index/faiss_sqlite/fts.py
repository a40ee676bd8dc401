"""SQLite FTS5 side of the FAISS + SQLite backend: typed lexical queries rendered as MATCH expressions, word counts."""
from __future__ import annotations

import re

from kb.index.records import PhraseQuery

WORD = re.compile(r"\w+", re.UNICODE)  # words as search.lexical splits them (term_df counts these)


def quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def match_expression(terms: tuple[str, ...] | list[str]) -> str:
    """OR of quoted terms: any matching term scores, BM25 ranks by how many and how rare."""
    return " OR ".join(quote(t) for t in terms)


def phrase_expression(query: PhraseQuery) -> str:
    """Each phrase quoted ("5 7 124"); with `near`, NEAR(phrase phrase, n)."""
    quoted = " ".join(quote(" ".join(tokens)) for tokens in query.phrases)
    return f"NEAR({quoted}, {query.near})" if query.near is not None else quoted


def count_terms(fts_rows: list[tuple]) -> dict[str, int]:
    """Passages containing each lower-case word (as the lexical arm splits words), for pruning common terms."""
    counts: dict[str, int] = {}
    for _, title, headings, body in fts_rows:
        for word in set(WORD.findall(f"{title} {headings} {body}".lower())):
            counts[word] = counts.get(word, 0) + 1
    return counts
