"""Text analysis of the Milvus backend, done by the client with FTS5's own tokenizer (kb/index/faiss_sqlite/postings.py:
an in-memory FTS5 table of the FAISS backend's tokenizer), so that both backends split and stem alike."""
from __future__ import annotations

import contextlib
import re

from kb.index.faiss_sqlite.postings import Tokenizer, tokenizer

WORD = re.compile(r"\w+", re.UNICODE)  # words as search.lexical splits them (term_df counts these)
COLUMNS_APART = " | "  # between the columns of the phrase field: no phrase spans two columns


def tokens(word: str) -> list[str]:
    """A query word's FTS5 tokens (lower-case Porter stems without diacritics), in order; remembered."""
    return list(tokenizer().tokens([word])[0])


def phrase_fields(rows: list[tuple[str, ...]]) -> list[str]:
    """' tok tok | tok ... ' of each row of columns: every column's FTS5 tokens, columns apart, padded so that
    LIKE '% a b %' is a phrase. A tokenizer of its own: a build in the service's process never holds the lock of the
    one that splits queries."""
    width = len(rows[0]) if rows else 0
    with contextlib.closing(Tokenizer()) as own:
        split = own.split([text for row in rows for text in row])
    return [" " + COLUMNS_APART.join(" ".join(t) for t in split[n * width:(n + 1) * width]) + " "
            for n in range(len(rows))]


def columns_of(field: str) -> list[list[str]]:
    """The phrase field's columns as token lists."""
    return [column.split() for column in field.split(COLUMNS_APART)]


def count_terms(texts: list[str]) -> dict[str, int]:
    """Passages containing each lower-case word, for pruning common terms (as the FAISS + SQLite backend counts)."""
    counts: dict[str, int] = {}
    for text in texts:
        for word in set(WORD.findall(text.lower())):
            counts[word] = counts.get(word, 0) + 1
    return counts


def occurrences(column: list[str], phrase: list[str]) -> int:
    """Where `phrase` starts in `column` (FTS5 counts each start of a phrase instance)."""
    n = len(phrase)
    return sum(1 for i in range(len(column) - n + 1) if column[i:i + n] == phrase)


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
