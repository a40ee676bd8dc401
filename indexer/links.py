"""Outline of one Markdown file for content checks: its links (with file lines), anchors and empty sections."""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from indexer.markdown import COMMENT_RE, IMAGE_RE, blank_out, inline_text, parser
from indexer.parse import INCLUDE_RE

IMAGE_ATTR_RE = re.compile(r'\b(?:source|lightbox)\s*=\s*"([^"]*)"')
# Explicit anchors writers put in raw HTML: <a name="x"></a>, <span id="x">.
HTML_ANCHOR_RE = re.compile(r"""<[A-Za-z][^<>]*?\s(?:name|id)\s*=\s*(?:"([^"<>]*)"|'([^'<>]*)'|([^\s"'<>=`]+))""")
HEADING_LINE_RE = re.compile(r"^ {0,3}#{1,6}(?:[ \t]|$)", re.MULTILINE)
HEADING_TEXT_RE = re.compile(r"^ {0,3}#{1,6}[ \t].*$", re.MULTILINE)
INCLUDE_MARKER_RE = re.compile(r"\(include [^()\s]*\)")
MEDIA_EXTENSIONS = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp", ".bmp", ".ico", ".tif", ".tiff",
                    ".mp4", ".webm", ".mov", ".avi", ".wmv", ".mp3", ".wav"}


@dataclass(frozen=True)
class Link:
    """A link or image reference as written in a file, percent-decoded, with the file line it is on."""

    target: str
    line: int
    image: bool = False


@dataclass(frozen=True)
class Heading:
    """A top-level heading: level, plain text, anchor (id) and file line."""

    level: int
    text: str
    anchor: str
    line: int


@dataclass
class Outline:
    """What the content checks need from one file."""

    links: list[Link] = field(default_factory=list)
    anchors: set[str] = field(default_factory=set)
    empty: list[Heading] = field(default_factory=list)  # headings with nothing under them


def include_marker(match: re.Match) -> str:
    """Stand-in text for an include directive: "(include <path>)" plus the line breaks it spanned."""
    return f"(include {match.group(1)})" + "\n" * match.group(0).count("\n")


def html_anchors(text: str) -> set[str]:
    """Ids and names of raw HTML elements (<a name="x">) in Markdown text."""
    if "<" not in text:
        return set()
    return {"".join(groups) for groups in HTML_ANCHOR_RE.findall(text)} - {""}


def heading_anchors(markdown: str) -> set[str]:
    """Heading ids markdown-it gives this text (as the article page does), plus explicit HTML anchors."""
    ids = {t.attrGet("id") for t in parser().parse(markdown) if t.type == "heading_open"}
    return {str(i) for i in ids if i} | html_anchors(markdown)


def has_headings(markdown: str) -> bool:
    """Quick test: could this text add headings or anchors to an article that includes it?"""
    return bool(HEADING_LINE_RE.search(markdown)) or bool(html_anchors(markdown))


def has_included_heading(markdown: str) -> bool:
    """Quick test: is there a heading with an include directive in it (its id depends on the included text)?"""
    return any("[!include" in line.lower() for line in HEADING_TEXT_RE.findall(markdown))


def is_content_heading(inline) -> bool:
    """A heading that is content rather than a section title: a DocFX tab title (`## [Windows](#tab/windows)`)
    or a heading made only of an include (`## [!INCLUDE[trial](includes/free-trial.md)]`, a banner)."""
    if INCLUDE_MARKER_RE.fullmatch(inline.content.strip()):
        return True
    return any(child.type == "link_open" and str(child.attrGet("href") or "").startswith("#tab/")
               for child in inline.children or ())


def locate(candidates: list[str], lines: list[str], start: int, end: int) -> int | None:
    """0-based index of the first line in [start, end) containing one of the candidate strings."""
    for index in range(start, min(end, len(lines))):
        if any(c and c in lines[index] for c in candidates):
            return index
    return None


def outline(body: str, first_line: int) -> Outline:
    """Links, anchors and empty sections of a Markdown body whose first line is file line `first_line`.

    Comments are ignored; DocFX `[!INCLUDE]` directives are not links (includes are checked by the parser)
    but count as content under a heading; `:::image source="..."` counts as an image reference.
    """
    text = COMMENT_RE.sub(blank_out, body) if "<!--" in body else body
    result = Outline()
    for match in IMAGE_RE.finditer(text) if ":::image" in text else ():
        for attr in IMAGE_ATTR_RE.finditer(match.group(0)):
            line = first_line + text.count("\n", 0, match.start() + attr.start())
            result.links.append(Link(unquote(attr.group(1).strip()), line, image=True))
    if "[!" in text:
        text = INCLUDE_RE.sub(include_marker, text)
    lines = text.split("\n")
    tokens = parser().parse(text)
    blocks: list[Heading | None] = []  # top-level headings, None for any other top-level block
    for index, token in enumerate(tokens):
        if token.level == 0 and token.type == "heading_open":
            inline, anchor = tokens[index + 1], str(token.attrGet("id") or "")
            result.anchors.add(anchor)
            if is_content_heading(inline) or not token.map:
                blocks.append(None)
            else:
                blocks.append(Heading(int(token.tag[1]), inline_text(inline), anchor, first_line + token.map[0]))
        elif token.level == 0 and not token.type.endswith("_close") and token.type != "inline":
            blocks.append(None)
        if token.type == "inline" and token.children and token.map:
            add_links(token, lines, first_line, result.links)
    result.anchors |= html_anchors(text)
    result.empty = empty_headings(blocks)
    return result


def add_links(token, lines: list[str], first_line: int, links: list[Link]) -> None:
    """Append the links and images of one inline token, each with the file line it is written on."""
    start, end = token.map
    cursor = start
    for child in token.children:
        if child.type == "link_open":
            href, image = str(child.attrGet("href") or ""), False
        elif child.type == "image":
            href, image = str(child.attrGet("src") or ""), True
        else:
            continue
        if child.markup == "autolink" or child.markup == "linkify":
            continue  # <https://...>: always external
        target = unquote(href)
        candidates = [f"({target}", f"({href}", f"<{target}>", target, href]
        found = locate(candidates, lines, cursor, end)
        if found is None:  # reference-style link: the URL is on its definition line
            found = locate([f"]: {target}", f"]: <{target}>", f"]:{target}"], lines, 0, len(lines))
        else:
            cursor = found
        links.append(Link(target, first_line + (found if found is not None else start), image))


def empty_headings(blocks: list[Heading | None]) -> list[Heading]:
    """Headings with no block under them before the next heading of the same or a higher level."""
    empty: list[Heading] = []
    open_: list[list] = []  # [heading, has_content] for headings still open, outermost first
    for block in blocks:
        if block is None:
            for entry in open_:
                entry[1] = True
            continue
        while open_ and open_[-1][0].level >= block.level:
            heading, has_content = open_.pop()
            if not has_content:
                empty.append(heading)
        open_.append([block, False])
    empty.extend(heading for heading, has_content in open_ if not has_content)
    return sorted(empty, key=lambda h: h.line)


def is_media(path: str) -> bool:
    """A picture, video or sound file by its extension."""
    return posixpath.splitext(path)[1].lower() in MEDIA_EXTENSIONS
