"""Sentences of a passage, and which of them may be marked as an answer (boilerplate left out)."""
from __future__ import annotations

import re

from kb.boilerplate import boilerplate_flags

SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+(?=[\"'(\[A-Z0-9])|\n+")


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


def markable(text: str) -> tuple[tuple[int, int], ...]:
    """[start, end) of the sentences of `text` that may be marked: every sentence but boilerplate. Depends on the
    text only, so the indexer computes it once per passage (about 0.3 ms) and the service reads it back."""
    sentences = split_sentences(text)
    return tuple(span for span, boiler in zip(sentences, boilerplate_flags(text, sentences)) if not boiler)
