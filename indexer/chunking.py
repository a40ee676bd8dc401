"""Article -> passages: one per section, long sections split, tiny ones merged, never over max_words."""
from __future__ import annotations

import re

from indexer.markdown import unique_slug
from kb.articles import Article, Passage, Section

SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+")


def count_words(text: str) -> int:
    """Number of whitespace-separated words."""
    return len(text.split())


def is_child_or_sibling(section: Section, following: Section) -> bool:
    """True when following sits directly under section or next to it (same parent)."""
    parent = following.heading_path[:-1]
    return parent == section.heading_path or (
        len(following.heading_path) == len(section.heading_path) and parent == section.heading_path[:-1]
    )


def merge_small_sections(sections: tuple[Section, ...], max_words: int, min_words: int) -> list[tuple[Section, str]]:
    """(first section, text) groups: a section under min_words absorbs its next child or sibling."""
    groups: list[tuple[Section, str]] = []
    last: Section | None = None
    for section in (s for s in sections if s.text.strip()):
        if groups and last is not None:
            first, text = groups[-1]
            heading = section.heading_path[-1] if section.heading_path else ""
            merged = f"{text}\n\n{heading}\n{section.text}" if heading else f"{text}\n\n{section.text}"
            if (
                count_words(text) < min_words
                and is_child_or_sibling(last, section)
                and count_words(merged) <= max_words
            ):
                groups[-1] = (first, merged)
                last = section
                continue
        groups.append((section, section.text))
        last = section
    return groups


def split_words(text: str, max_words: int) -> list[str]:
    """Cut text into runs of at most max_words words."""
    words = text.split()
    return [" ".join(words[start : start + max_words]) for start in range(0, len(words), max_words)]


def sentence_units(paragraph: str, max_words: int) -> list[tuple[str, str]]:
    """(joiner, piece) units of a paragraph: lines, then sentences, then word runs, each <= max_words."""
    units = []
    for line in paragraph.split("\n"):
        joiner = "\n"
        for sentence in SENTENCE_END_RE.split(line.strip()):
            for piece in split_words(sentence, max_words):
                units.append((joiner, piece))
                joiner = " "
    return units


def pack(units: list[tuple[str, str]], max_words: int) -> list[str]:
    """Greedily join (joiner, text) units into pieces of at most max_words words."""
    pieces: list[str] = []
    current, size = "", 0
    for joiner, unit in units:
        words = count_words(unit)
        if current and size + words > max_words:
            pieces.append(current)
            current, size = "", 0
        current = f"{current}{joiner}{unit}" if current else unit
        size += words
    if current:
        pieces.append(current)
    return pieces


def split_text(text: str, max_words: int) -> list[str]:
    """Split text on paragraphs (then sentences, then words) into pieces of at most max_words words."""
    if count_words(text) <= max_words:
        return [text.strip()] if text.strip() else []
    units: list[tuple[str, str]] = []
    for paragraph in (part.strip() for part in text.split("\n\n")):
        if not paragraph:
            continue
        if count_words(paragraph) <= max_words:
            units.append(("\n\n", paragraph))
        else:
            pieces = pack(sentence_units(paragraph, max_words), max_words)
            units.extend(("\n\n", piece) for piece in pieces)
    return pack(units, max_words)


def split_article(article: Article, max_words: int = 180, min_words: int = 40) -> list[Passage]:
    """Passages of an article, in order; ids are `article_id#anchor` plus `~n` for later pieces."""
    passages: list[Passage] = []
    used: set[str] = set()
    for section, text in merge_small_sections(article.sections, max_words, min_words):
        pieces = split_text(text, max_words)
        if not pieces:
            continue
        base = unique_slug(f"{article.article_id}#{section.anchor}", used)
        for n, piece in enumerate(pieces):
            passage_id = base if n == 0 else unique_slug(f"{base}~{n}", used)
            passages.append(
                Passage(
                    passage_id=passage_id,
                    article_id=article.article_id,
                    title=article.title,
                    heading_path=section.heading_path,
                    anchor=section.anchor,
                    text=piece,
                )
            )
    return passages
