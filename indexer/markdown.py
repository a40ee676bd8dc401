"""Markdown plumbing for parsing and display: DocFX cleanup, one markdown-it setup, slugs, text, HTML."""
from __future__ import annotations

import html
import posixpath
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from markdown_it.tree import SyntaxTreeNode

CALLOUT_LABELS = {
    "note": "Note",
    "important": "Important",
    "warning": "Warning",
    "tip": "Tip",
    "caution": "Caution",
}
DROPPED_MARKERS = {"div", "video"}  # DocFX `> [!div ...]` / `> [!VIDEO url]`: marker dropped, rest kept
BAD_SCHEMES = ("javascript:", "vbscript:", "data:", "file:")
INLINE_TAGS = {"a", "b", "i", "u", "em", "strong", "kbd", "code", "span", "sup", "sub", "small", "mark", "s", "font"}
BLOCK_TAGS = {
    "br", "p", "div", "img", "table", "thead", "tbody", "tr", "td", "th", "ul", "ol", "li", "dl", "dt", "dd",
    "pre", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "center", "details", "summary", "section",
    "script", "style", "iframe", "video", "audio", "source", "object", "embed", "svg", "form", "input",
    "button", "select", "option", "textarea", "link", "meta", "caption", "col", "colgroup", "figure",
}
# Raw HTML that markdown-it (html disabled) leaves in text: known tags are stripped from the plain text,
# anything else in angle brackets (`<mailbox identity>` placeholders) is kept.
HTML_TAG_RE = re.compile(r"</?([A-Za-z][A-Za-z0-9-]*)(?:\s[^<>]*)?/?>")
# DocFX-only syntax that markdown-it does not know (removed from the text before parsing) and comments.
COMMENT_RE = re.compile(r"<!--.*?-->", re.DOTALL)
IMAGE_BLOCK_RE = re.compile(r':::image\s(?:"[^"]*"|[^"\n])*?:::(?:(?!:::image).)*?:::image-end:::', re.DOTALL)
IMAGE_RE = re.compile(r':::image\s(?:"[^"]*"|[^"\n])*?:::')
NO_LOC_RE = re.compile(r':::no-loc\s+text="([^"]*)"\s*:::')

SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def slugify(text: str) -> str:
    """GitHub/DocFX-style anchor: lowercase, letters/digits/-/_ kept, spaces to hyphens."""
    chars = []
    for ch in text.strip().lower():
        if ch in "-_" or unicodedata.category(ch)[0] in "LNM":
            chars.append(ch)
        elif ch.isspace():
            chars.append("-")
    return "".join(chars) or "section"


def unique_slug(slug: str, seen: set[str]) -> str:
    """Return slug, or slug-1, slug-2, ... whichever is not in seen yet; record it."""
    candidate, n = slug, 0
    while candidate in seen:
        n += 1
        candidate = f"{slug}-{n}"
    seen.add(candidate)
    return candidate


def strip_html_tags(text: str) -> str:
    """Drop raw HTML tags from plain text (inline tags vanish, block tags become a space)."""
    if "<" not in text:
        return text
    return HTML_TAG_RE.sub(replace_tag, text)


def replace_tag(match: re.Match) -> str:
    """Replacement for one tag: inline tags vanish, block tags become a space, unknown ones stay."""
    name = match.group(1).lower()
    if name in INLINE_TAGS:
        return ""
    return " " if name in BLOCK_TAGS else match.group(0)


def is_safe_link(url: str) -> bool:
    """Refuse javascript:, vbscript:, data: and file: links, however cased, encoded or spaced."""
    squeezed = "".join(ch for ch in unquote(html.unescape(url)) if ch.isprintable() and not ch.isspace())
    return not squeezed.lower().startswith(BAD_SCHEMES)


def marker_name(line: str) -> tuple[str, str]:
    """(name, rest of line) for a line starting with a known DocFX `[!NAME ...]` marker, else ("", line)."""
    stripped = line.lstrip()
    end = stripped.find("]")
    words = stripped[2:end].split() if stripped.startswith("[!") and end > 2 else []
    name = words[0].lower() if words else ""
    if name not in CALLOUT_LABELS and name not in DROPPED_MARKERS:
        return "", line
    return name, stripped[end + 1 :].strip()


def strip_markers(content: str, first_is_callout: bool) -> tuple[str, str]:
    """Remove DocFX markers from quoted paragraph content: (callout name of the first line, new content).

    The first line's callout marker becomes the quote's class (when first_is_callout); other callout
    markers turn into a "Note:" style label; `[!div ...]` / `[!VIDEO ...]` markers just vanish.
    """
    first_name, lines = "", []
    for index, line in enumerate(content.split("\n")):
        name, rest = marker_name(line)
        if name in CALLOUT_LABELS and not (index == 0 and first_is_callout):
            rest = f"{CALLOUT_LABELS[name]}: {rest}".strip()
        elif index == 0 and name:
            first_name = name
        if rest.strip():
            lines.append(rest)
    return first_name, "\n".join(lines)


def closing_index(tokens: list[Token], start: int) -> int:
    """Index of the token closing the one opened at start (same nesting level)."""
    opening = tokens[start]
    close_type = opening.type.replace("_open", "_close")
    for index in range(start + 1, len(tokens)):
        if tokens[index].type == close_type and tokens[index].level == opening.level:
            return index
    return len(tokens) - 1


def mark_callouts(state: StateCore) -> None:
    """Core rule: `> [!NOTE]` blockquotes become callout divs; DocFX markers in quotes are removed."""
    tokens = state.tokens
    depth, index = 0, 0
    while index < len(tokens):
        token = tokens[index]
        depth += {"blockquote_open": 1, "blockquote_close": -1}.get(token.type, 0)
        if token.type != "inline" or not depth or "[!" not in token.content:
            index += 1
            continue
        quote = tokens[index - 2] if tokens[index - 2].type == "blockquote_open" else None
        name, token.content = strip_markers(token.content, quote is not None)
        if quote is not None and name in CALLOUT_LABELS:
            quote.tag = tokens[closing_index(tokens, index - 2)].tag = "div"
            quote.attrSet("class", f"callout callout-{name}")
            quote.meta["callout"] = CALLOUT_LABELS[name]
        if not token.content and tokens[index - 1].type == "paragraph_open":
            del tokens[index - 1 : index + 2]  # the paragraph held only the marker
            index -= 1
        else:
            index += 1


def render_callout_open(self, tokens: list[Token], index: int, options, env) -> str:
    """Renderer rule: a callout opens as `<div class="callout callout-note">` with its label."""
    token = tokens[index]
    label = token.meta.get("callout")
    opening = self.renderToken(tokens, index, options, env)
    return f'{opening}<p class="callout-title">{label}</p>\n' if label else opening


def inline_text(token: Token) -> str:
    """Plain text of an inline token: link text kept, images and markup dropped."""
    parts = []
    for child in token.children or ():
        if child.type in ("text", "code_inline"):
            parts.append(child.content if child.type == "code_inline" else strip_html_tags(child.content))
        elif child.type == "softbreak":
            parts.append(" ")
        elif child.type == "hardbreak":
            parts.append("\n")
    return "\n".join(" ".join(line.split()) for line in "".join(parts).split("\n")).strip()


def assign_heading_ids(state: StateCore) -> None:
    """Core rule: give every heading an id = de-duplicated slug of its plain text."""
    seen: set[str] = set()
    for index, token in enumerate(state.tokens):
        if token.type == "heading_open":
            text = inline_text(state.tokens[index + 1])
            token.attrSet("id", unique_slug(slugify(text), seen))


@dataclass(frozen=True)
class Target:
    """Where a link points: kind is external, site, outside, page (this file) or file (content path)."""

    kind: str
    path: str = ""
    fragment: str = ""


def resolve(target: str, source: str) -> Target:
    """Where `target`, written in content file `source` (content-relative), points.

    external: has a scheme (http:, mailto:, xref:) or starts with //; site: starts with / (a URL on the
    published site, not a content path); outside: climbs above the content root; page: only #fragment or
    ?query; file: a content-relative path (`~/` is the content root, as in DocFX).
    """
    target = target.strip()
    if target.startswith("//") or SCHEME_RE.match(target):
        return Target("external")
    path, _, fragment = target.partition("#")
    path = path.split("?", 1)[0]
    if path.startswith("/"):
        return Target("site", path, fragment)
    if not path:
        return Target("page", "", fragment)
    joined = path[2:] if path.startswith("~/") else posixpath.join(posixpath.dirname(source), path)
    joined = posixpath.normpath(joined)
    if joined == ".." or joined.startswith("../"):
        return Target("outside", joined, fragment)
    return Target("file", "" if joined == "." else joined, fragment)


def article_link(href: str, article_id: str, base_url: str) -> str | None:
    """The page URL of a relative link to another article (`../x/y.md#a`, `~/x/y.md`), None for other links."""
    target = resolve(href, article_id)
    if target.kind != "file" or not target.path.lower().endswith(".md"):
        return None
    return f"{base_url}/{target.path[:-3]}" + (f"#{target.fragment}" if target.fragment else "")


def rewrite_article_links(state: StateCore) -> None:
    """Point links between articles at their pages (when rendering for an article, see `render_html`)."""
    article_id, base_url = state.env.get("article_id"), state.env.get("base_url")
    if article_id is None:
        return
    for block in state.tokens:
        for token in block.children or ():
            if token.type == "link_open":
                url = article_link(str(token.attrGet("href") or ""), article_id, base_url or "")
                if url is not None:
                    token.attrSet("href", url)


@lru_cache(maxsize=1)
def parser() -> MarkdownIt:
    """The one markdown-it setup: CommonMark + tables + strikethrough, raw HTML off, DocFX callouts."""
    md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table", "strikethrough"])
    md.core.ruler.after("block", "docfx_callouts", mark_callouts)
    md.core.ruler.push("heading_ids", assign_heading_ids)
    md.core.ruler.push("article_links", rewrite_article_links)
    md.validateLink = is_safe_link
    md.add_render_rule("blockquote_open", render_callout_open)
    return md


def parse_tree(markdown: str) -> SyntaxTreeNode:
    """Parse Markdown into a syntax tree (headings carry their `id`, callouts their label)."""
    return SyntaxTreeNode(parser().parse(markdown))


def render_html(body: str, article_id: str | None = None, base_url: str = "/articles") -> str:
    """HTML for display: no raw HTML, unsafe link schemes refused, heading ids = section anchors; with
    `article_id`, relative links to other articles' `.md` files point at their pages under `base_url`."""
    return parser().render(body, {"article_id": article_id, "base_url": base_url})


def block_text(node: SyntaxTreeNode) -> str:
    """Plain text of one block node (paragraph, list, table, code, quote, heading)."""
    kind = node.type
    if kind in ("paragraph", "heading"):
        return inline_text(node.children[0].token) if node.children else ""
    if kind in ("fence", "code_block"):
        return node.content.strip("\n")
    if kind in ("bullet_list", "ordered_list"):
        return list_text(node)
    if kind == "blockquote":
        return quote_text(node)
    if kind == "table":
        return table_text(node)
    if kind == "html_block":
        return strip_html_tags(node.content).strip()
    return ""


def list_text(node: SyntaxTreeNode) -> str:
    """List items as lines starting with "- "; nested blocks indented by two spaces."""
    lines = []
    for item in node.children:
        item_lines = [line for child in item.children for line in block_text(child).split("\n") if line.strip()]
        if item_lines:
            lines.append(f"- {item_lines[0]}")
            lines.extend(f"  {line}" for line in item_lines[1:])
    return "\n".join(lines)


def quote_text(node: SyntaxTreeNode) -> str:
    """Blockquote paragraphs; a callout's first paragraph is prefixed with its label ("Note: ...")."""
    blocks = [text for text in (block_text(child) for child in node.children) if text]
    label = node.nester_tokens.opening.meta.get("callout") if node.nester_tokens else None
    if label and blocks:
        separator = "\n" if blocks[0].startswith("- ") else " "
        blocks[0] = f"{label}:{separator}{blocks[0]}"
    return "\n\n".join(blocks)


def table_text(node: SyntaxTreeNode) -> str:
    """Table rows as lines, cells joined by " | "."""
    rows = []
    for part in node.children:
        for row in part.children:
            cells = [inline_text(cell.children[0].token) if cell.children else "" for cell in row.children]
            if any(cells):
                rows.append(" | ".join(cells))
    return "\n".join(rows)


def markdown_to_text(markdown: str) -> str:
    """Plain text of a Markdown snippet: blocks separated by blank lines."""
    blocks = (block_text(node) for node in parse_tree(markdown).children)
    return "\n\n".join(text for text in blocks if text)


@lru_cache(maxsize=1)
def block_parser() -> MarkdownIt:
    """`parser()`'s block rules without its inline pass: where blocks such as fenced code start and end (inline
    parsing, half of a whole parse, never moves a block)."""
    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table"]).disable("inline")


def code_line_indexes(texts: list[str]) -> set[int]:
    """Indexes of lines inside fenced code blocks (left untouched by DocFX cleanup)."""
    inside: set[int] = set()
    for token in block_parser().parse("\n".join(texts)):
        if token.type == "fence" and token.map:
            inside.update(range(token.map[0], token.map[1]))
    return inside


def blank_out(match: re.Match) -> str:
    """Replacement that removes a match but keeps its line breaks (so line numbers stay right)."""
    return "\n" * match.group(0).count("\n")


def remove_spans(text: str, pattern: re.Pattern, protected: set[int]) -> str:
    """Blank out matches of pattern that do not start inside a code block (line breaks kept)."""
    pieces, pos = [], 0
    match = pattern.search(text, pos)
    while match:
        if text.count("\n", 0, match.start()) in protected:
            match = pattern.search(text, match.start() + 1)
            continue
        pieces.extend((text[pos : match.start()], blank_out(match)))
        pos = match.end()
        match = pattern.search(text, pos)
    return "".join(pieces) + text[pos:]


def clean_line(line: str) -> str:
    """Drop inline `:::image` directives and `:::zone`-style fence lines; unwrap `:::no-loc`."""
    if ":::" not in line:
        return line
    line = NO_LOC_RE.sub(r"\1", IMAGE_RE.sub("", line))
    rest = line.lstrip(" \t>")
    return line[: len(line) - len(rest)].rstrip() if rest.startswith(":::") else line


def remove_docfx(texts: list[str]) -> list[str]:
    """Drop HTML comments and DocFX image/zone syntax outside fenced code; the line count never changes."""
    joined = "\n".join(texts)
    if "<!--" not in joined and ":::" not in joined:
        return texts
    protected = code_line_indexes(texts)
    for pattern in (COMMENT_RE, IMAGE_BLOCK_RE):
        joined = remove_spans(joined, pattern, protected)
    return [line if index in protected else clean_line(line) for index, line in enumerate(joined.split("\n"))]
