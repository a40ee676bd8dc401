"""Text analysis of the Milvus backend, done by the client: words as FTS5's porter unicode61 tokenizer makes them."""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import snowballstemmer

TOKEN = re.compile(r"[^\W_]+", re.UNICODE)  # unicode61: letters and digits; punctuation and "_" separate tokens
WORD = re.compile(r"\w+", re.UNICODE)  # words as search.lexical splits them (term_df counts these)
_stemmer = snowballstemmer.stemmer("porter")


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    return _stemmer.stemWord(word)


def tokens(text: str) -> list[str]:
    """Lower-case Porter stems without diacritics, in order (remove_diacritics 2 + porter, as FTS5 indexes)."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))
    return [stem(t) for t in TOKEN.findall(plain)]


def analyse(text: str) -> str:
    """The text as the BM25 field stores it: its tokens joined by spaces (Milvus' standard analyzer splits them)."""
    return " ".join(tokens(text))


def phrase_field(columns: tuple[str, ...]) -> str:
    """' tok tok | tok ... ': every column's tokens, columns apart, padded so that LIKE '% a b %' is a phrase."""
    return " " + " | ".join(analyse(c) for c in columns) + " "


def count_terms(texts: list[str]) -> dict[str, int]:
    """Passages containing each lower-case word, for pruning common terms (as the FAISS + SQLite backend counts)."""
    counts: dict[str, int] = {}
    for text in texts:
        for word in set(WORD.findall(text.lower())):
            counts[word] = counts.get(word, 0) + 1
    return counts


def near(columns: list[list[str]], phrases: list[list[str]], distance: int) -> bool:
    """Whether every phrase occurs in one column with at most `distance` other tokens between them (FTS5 NEAR)."""
    for column in columns:
        starts = []
        for phrase in phrases:
            found = [i for i in range(len(column) - len(phrase) + 1) if column[i:i + len(phrase)] == phrase]
            if not found:
                break
            starts.append(found)
        else:
            if _fits(starts, [len(p) for p in phrases], distance):
                return True
    return False


def _fits(starts: list[list[int]], lengths: list[int], distance: int) -> bool:
    import itertools

    for choice in itertools.product(*starts):
        spans = sorted(zip(choice, lengths))
        if any(spans[i][0] + spans[i][1] > spans[i + 1][0] for i in range(len(spans) - 1)):
            continue  # overlapping occurrences
        gap = spans[-1][0] + spans[-1][1] - spans[0][0] - sum(lengths)
        if gap <= distance:
            return True
    return False
