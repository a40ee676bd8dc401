"""Result cards: a passage as a short lead around its marked sentences plus the whole passage, lists as lists."""
from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Iterable, Sequence

from markupsafe import Markup

from kb.boilerplate import boilerplate_flags, unlabelled
from kb.sentences import split_sentences

LEAD_LINES = 3  # the lead fills at most this many lines of a card ...
LINE_CHARS = 95  # ... of about this many characters (a 56rem card in the agents' font, rounded down)
ITEM = re.compile(r"^( *)- ")
HEADING_WORDS = 8


@dataclass(frozen=True)
class Line:
    start: int  # where the line's text starts (after indentation and a list marker)
    end: int
    kind: str  # "item" (a list item), "more" (an item's indented continuation), "heading" or "text"
    depth: int  # nesting of a list item (0 = top level)
    block: int  # paragraphs are separated by blank lines; each gets a number
    item: int = -1  # for a continuation: the index of its list item's line


@dataclass(frozen=True)
class Card:
    lead: Markup  # two or three lines around the marked sentences (boilerplate skipped)
    full: Markup  # the whole passage with the same marks
    more: bool  # the whole passage shows something the lead does not


def is_heading(text: str) -> bool:
    """Whether the first line of a block, with more lines under it, reads as the heading of a merged sub-section
    (the indexer puts it on the line above its text): a few words, no sentence punctuation, no table row, no
    "Key: value"."""
    words = text.split()
    return 0 < len(words) <= HEADING_WORDS and len(text) <= 60 and text[-1] not in ".:;,!?)" and \
        " | " not in text and ": " not in text and any(c.isalpha() for c in text)


def parse_lines(text: str) -> list[Line]:
    """The non-blank lines of a passage (blocks separated by blank lines; list items as `- ` lines, continuations
    indented under them, as the indexer writes them)."""
    lines: list[Line] = []
    offset, block, blank, after_item, last_item = 0, 0, True, False, -1
    for raw in text.split("\n"):
        start, end = offset, offset + len(raw.rstrip())
        offset += len(raw) + 1
        if not raw.strip():
            block, blank, after_item = block + 1, True, False
            continue
        item = ITEM.match(raw)
        indent = len(raw) - len(raw.lstrip(" "))
        if item:
            last_item = len(lines)
            lines.append(Line(start + item.end(), end, "item", len(item.group(1)) // 2, block))
        elif indent and after_item:
            lines.append(Line(start + indent, end, "more", lines[last_item].depth, block, last_item))
        else:
            following = text[offset:].split("\n", 1)[0] if offset < len(text) else ""
            kind = "heading" if blank and following.strip() and is_heading(raw.strip()) else "text"
            lines.append(Line(start + indent, end, kind, 0, block))
        blank, after_item = False, bool(item) or (after_item and indent > 0)
    return lines


def marked(text: str, highlights: Sequence[Sequence[int]], start: int, end: int) -> str:
    """Escaped text[start:end] with <mark> around the parts inside highlights."""
    out, pos = [], start
    for h_start, h_end in highlights:
        s, e = max(h_start, pos), min(h_end, end)
        if s < e:
            out += [html.escape(text[pos:s]), "<mark>", html.escape(text[s:e]), "</mark>"]
            pos = e
    out.append(html.escape(text[pos:end]))
    return "".join(out)


def render(lines: list[Line], contents: dict[int, str], flat: bool = False) -> str:
    """HTML of the lines that have content: headings, paragraphs (lines of one block joined by <br>) and nested
    lists (<ul> and <li>; continuation lines stay inside their item); `flat`: every item at the top level (a lead
    shows a few items, often without their parent)."""
    out: list[str] = []
    depth = 0  # open <ul> elements, each with an open <li>
    paragraph = None  # block number of the open <p>

    def close_lists(to: int) -> None:
        nonlocal depth
        while depth > to:
            out.append("</li></ul>")
            depth -= 1

    for n, line in enumerate(lines):
        content = contents.get(n)
        if content is None:
            continue
        if line.kind in ("item", "more"):
            if paragraph is not None:
                out.append("</p>")
                paragraph = None
            if line.kind == "more" and depth and line.item in contents:  # under its item, shown above
                out.append("<br>" + content)
                continue
            level = 1 if flat else line.depth + 1
            close_lists(level)
            if depth == level:
                out.append("</li><li>")
            else:
                while depth < level:
                    out.append("<ul><li>")
                    depth += 1
            out.append(content)
            continue
        close_lists(0)
        if line.kind == "heading":
            if paragraph is not None:
                out.append("</p>")
                paragraph = None
            out.append(f'<p class="passage-heading">{content}</p>')
        elif paragraph == line.block:
            out.append("<br>" + content)
        else:
            if paragraph is not None:
                out.append("</p>")
            out.append("<p>" + content)
            paragraph = line.block
    if paragraph is not None:
        out.append("</p>")
    close_lists(0)
    return "".join(out)


def cost(lines: list[Line], units: list[tuple[int, int, int]], chosen: Iterable[int]) -> int:
    """Lines of a card the chosen units fill: each passage line starts a new one."""
    chars: dict[int, int] = {}
    for i in chosen:
        line, start, end = units[i]
        chars[line] = chars.get(line, 0) + end - start + 2
    return sum(math.ceil(c / (LINE_CHARS - (4 if lines[n].kind != "text" else 0))) for n, c in chars.items())


def preference(candidates: list[int], marked_units: list[int], section: dict[int, int],
               back_first: set[int] = frozenset()) -> list[int]:
    """Units in the order the lead takes them: the marked ones, then their neighbours within the same sub-section
    (next, then previous; for units in `back_first`, previous first) further and further out; without marks,
    from the top."""
    if not marked_units:
        return candidates
    order = list(marked_units)
    where = {u: k for k, u in enumerate(candidates)}
    for distance in range(1, len(candidates)):
        for unit in marked_units:
            steps = (-distance, distance) if unit in back_first else (distance, -distance)
            for k in (where[unit] + step for step in steps):
                if 0 <= k < len(candidates) and candidates[k] not in order and section[candidates[k]] == section[unit]:
                    order.append(candidates[k])
    return order


def introduced(text: str, lines: list[Line], units: list[tuple[int, int, int]], candidates: list[int],
               marked_units: list[int]) -> set[int]:
    """Marked units whose preceding text introduces them: a list item's continuation line (the item says what it
    is), or a unit after a sentence ending in a colon ("... follow these steps:")."""
    out = set()
    for unit in marked_units:
        k = candidates.index(unit)
        line, start, _ = units[unit]
        before = units[candidates[k - 1]] if k else None
        if before and start == lines[line].start and (
                lines[line].kind == "more" or text[before[1]:before[2]].rstrip().endswith(":")):
            out.add(unit)
    return out


def lead_contents(text: str, highlights: Sequence[Sequence[int]], lines: list[Line],
                  units: list[tuple[int, int, int]], chosen: list[int]) -> dict[int, str]:
    """Per line, the chosen units' HTML with an ellipsis where a piece of the line is left out."""
    by_line: dict[int, list[int]] = {}
    for i in sorted(chosen):
        by_line.setdefault(units[i][0], []).append(i)
    line_units: dict[int, list[int]] = {}
    for i, (line, _, _) in enumerate(units):
        line_units.setdefault(line, []).append(i)
    contents = {}
    budget = LEAD_LINES * LINE_CHARS
    for line, picked in by_line.items():
        pieces, previous = [], None
        everything = line_units[line]
        for i in picked:
            _, start, end = units[i]
            if end - start > budget:  # one sentence longer than the whole lead: cut at a word
                cut = text.rfind(" ", start, start + budget)
                piece = marked(text, highlights, start, cut if cut > start else start + budget) + " …"
            else:
                piece = marked(text, highlights, start, end)
            gap = (previous is None and i != everything[0]) or (previous is not None and i != previous + 1)
            pieces.append(("… " if gap else "") + piece)
            previous = i
        contents[line] = " ".join(pieces) + (" …" if picked[-1] != everything[-1] else "")
    return contents


def is_lead_in(sentence: str) -> bool:
    """A bare callout label or a few words ending in a colon: not a sentence of its own."""
    sentence = sentence.strip()
    return not unlabelled(sentence) or (sentence.endswith(":") and len(sentence.split()) <= 3)


def sentence_units(text: str, lines: list[Line]) -> tuple[list[tuple[int, int, int]], list[bool]]:
    """(line, start, end) of every sentence (list markers and indentation left out; a lead-in such as "Note:" or
    "Select Diag:" joined to the sentence after it on its line) and whether each is boilerplate."""
    line_at = {}
    for n, line in enumerate(lines):
        line_at.update(dict.fromkeys(range(line.start, line.end), n))
    sentences = split_sentences(text)
    units, flags = [], []
    label = None  # (start, end, boilerplate) of a lead-in waiting for the sentence after it
    for (start, end), boiler in zip(sentences, boilerplate_flags(text, sentences)):
        start = max(start, next((ln.start for ln in lines if ln.start <= end <= ln.end), start))
        if start >= end or start not in line_at:
            continue
        if label is not None and line_at[label[0]] == line_at[start]:
            start = label[0]
        elif label is not None:  # the last words of their line: a unit of their own
            units.append((line_at[label[0]], label[0], label[1]))
            flags.append(label[2])
        label = (start, end, boiler) if is_lead_in(text[start:end]) else None
        if label is None:
            units.append((line_at[start], start, end))
            flags.append(boiler)
    if label is not None:
        units.append((line_at[label[0]], label[0], label[1]))
        flags.append(label[2])
    return units, flags


def passage_card(text: str, highlights: Sequence[Sequence[int]] = ()) -> Card:
    """The card of a passage: a lead of at most LEAD_LINES lines (the marked sentences, then their neighbours;
    never boilerplate or a heading while other text exists) and the whole passage, both with lists as lists."""
    lines = parse_lines(text)
    if not lines:
        return Card(Markup(""), Markup(""), False)
    highlights = sorted((int(s), int(e)) for s, e in highlights)
    full = render(lines, {n: marked(text, highlights, line.start, line.end) for n, line in enumerate(lines)})
    units, flags = sentence_units(text, lines)
    hit = [any(s < h_end and h_start < e for h_start, h_end in highlights) for _, s, e in units]
    content = [i for i in range(len(units)) if not flags[i] and (hit[i] or lines[units[i][0]].kind != "heading")]
    candidates = content or [i for i in range(len(units)) if not flags[i]] or list(range(len(units)))
    marked_units = [i for i in candidates if hit[i]]
    headings = list(accumulate(line.kind == "heading" for line in lines))  # sub-section number of each line
    section = {i: headings[units[i][0]] for i in candidates}
    back_first = introduced(text, lines, units, candidates, marked_units)
    chosen: list[int] = []
    for unit in preference(candidates, marked_units, section, back_first):
        if not chosen or cost(lines, units, chosen + [unit]) <= LEAD_LINES:
            chosen.append(unit)
        elif unit not in marked_units:
            break  # a marked sentence that does not fit may leave room for the next; context stops here
    lead = render(lines, lead_contents(text, highlights, lines, units, chosen), flat=True)
    return Card(Markup(lead), Markup(full), len(chosen) < len(units))
