"""Markdown article files -> Article: front matter, DocFX includes and quirks, sections with anchors."""
from __future__ import annotations

import datetime as dt
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from indexer.markdown import block_text, parse_tree, remove_docfx, render_html, slugify
from kb.articles import Article, Problem, Section

__all__ = ["discover", "parse_article", "render_html", "slugify"]

log = logging.getLogger("kb.parse")

MAX_INCLUDE_DEPTH = 3
ROOT_FRAGMENTS = {"source.md", "readme.md"}
MODELED_KEYS = {"title", "summary", "product", "tags", "language", "audience", "status", "owner", "reviewed"}
AUDIENCES = ("public", "internal")
# DocFX audience values of the Microsoft corpora: readers outside the support team, so "public".
DOCFX_AUDIENCES = {"itpro", "admin", "developer", "end-user", "enduser", "it pro"}
STATUSES = ("published", "draft")
DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%Y/%m/%d", "%d.%m.%Y")
LANGUAGE_RE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8})*")
# DocFX include directive (markdown-it does not know it); Markdown structure itself is left to markdown-it.
INCLUDE_RE = re.compile(r"\[!include\s*\[[^\]]*\]\(\s*<?([^)>\s]+)>?[^)]*\)\]", re.IGNORECASE)

SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Lines = list[tuple[str, int]]  # (line text, 1-based line in the file it came from)


@dataclass
class Context:
    """State of one parse_article call: where content lives, what was found."""

    content_root: Path
    problems: list[Problem] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)

    def warn(self, path: str, line: int, message: str) -> None:
        """Record a warning."""
        self.problems.append(Problem(path, line, message, "warning"))


def discover(content_root: Path) -> list[Path]:
    """All article files under content_root, sorted, without includes, TOCs and root README/SOURCE.

    os.walk rather than Path.rglob: hidden and includes folders are pruned before they are read, and a
    4,500-article tree is listed in a fraction of the time (this runs on every watch-triggered build).
    A symbolic link to a file outside the content folder is refused with a warning naming it, as includes are
    (folders that are links are never entered: os.walk does not follow them).
    """
    found = []
    real_root = Path(os.path.realpath(content_root))
    for folder, dirs, files in os.walk(content_root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d.lower() != "includes"]
        at_root = folder == str(content_root)  # os.walk yields the top folder exactly as given
        for name in files:
            if not name.endswith(".md") or name.startswith(".") or name.lower() == "toc.md":
                continue
            if at_root and name.lower() in ROOT_FRAGMENTS:
                continue
            path = os.path.join(folder, name)
            if links_outside(path, real_root):
                log.warning("%s is a symbolic link to %s, outside the content folder %s: not indexed", path,
                            os.path.realpath(path), real_root)
                continue
            if os.path.isfile(path):
                found.append(path)
    return [Path(path) for path in sorted(found)]


def links_outside(path: str | Path, real_root: Path) -> bool:
    """Is `path` a symbolic link whose target (all links followed) lies outside `real_root` (a realpath)?"""
    return os.path.islink(path) and not Path(os.path.realpath(path)).is_relative_to(real_root)


def relative_path(path: Path, content_root: Path) -> str:
    """Content-relative POSIX path of a file."""
    try:
        return path.relative_to(content_root).as_posix()
    except ValueError:
        return path.resolve().relative_to(content_root.resolve()).as_posix()


def decode(data: bytes) -> tuple[str | None, int, str]:
    """(UTF-8 text, 0, "") or (None, line of the first bad byte, message)."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff"), 0, ""
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return None, line, f"not valid UTF-8 (byte 0x{data[exc.start]:02X} on line {line})"


def split_front_matter(text: str) -> tuple[str | None, list[str], int]:
    """(front matter text or None, body lines, line number of the first body line)."""
    lines = text.splitlines()
    if not lines or lines[0].rstrip() != "---":
        return None, lines, 1
    for index in range(1, len(lines)):
        if lines[index].rstrip() in ("---", "..."):
            return "\n".join(lines[1:index]), lines[index + 1 :], index + 2
    raise ValueError("front matter has no closing '---' line")


def load_front_matter(raw: str) -> dict:
    """YAML front matter as a dict; raises yaml.YAMLError or TypeError."""
    data = yaml.load(raw, Loader=SAFE_LOADER) if raw.strip() else {}  # yaml.safe_load, C speed when built
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TypeError(f"front matter is a {type(data).__name__}, not a mapping")
    return {str(key): value for key, value in data.items()}


def yaml_error_line(exc: yaml.YAMLError) -> int:
    """1-based file line of a YAML error (front matter starts on line 2)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return mark.line + 2 if mark is not None else 1


def key_line(raw: str, key: str) -> int:
    """File line where a top-level front matter key is set (1 when not found)."""
    for index, line in enumerate(raw.splitlines()):
        if line.startswith(f"{key}:"):
            return index + 2
    return 1


def read_include(path: Path) -> Lines | None:
    """Numbered lines of an include file without front matter and outer blank lines; None if unreadable."""
    try:
        text, _, _ = decode(path.read_bytes())
    except OSError:
        return None
    if text is None:
        return None
    try:
        _, lines, first = split_front_matter(text)
    except ValueError:
        lines, first = text.splitlines(), 1
    numbered = [(line, first + index) for index, line in enumerate(lines)]
    while numbered and not numbered[-1][0].strip():
        numbered.pop()
    while numbered and not numbered[0][0].strip():
        numbered.pop(0)
    return numbered


def continuation_prefix(line: str) -> str:
    """What a line continuing this one inside the same quote / list item starts with."""
    end = 0
    while end < len(line) and line[end] in " \t>":
        end += 1
    prefix, rest = line[:end], line[end:]
    marker = rest.split(" ", 1)[0]
    if marker in ("-", "*", "+") or (marker[:-1].isdigit() and marker[-1:] in (".", ")")):
        prefix += " " * (len(marker) + 1)
    return prefix


def resolve_include(target: str, base_dir: Path, ctx: Context) -> tuple[Path | None, str]:
    """Path of an include target, or (None, reason)."""
    root = ctx.content_root.resolve()
    candidate = root / target[2:] if target.startswith("~/") else base_dir / target
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root):
        return None, f"include outside the content root: {target}"
    if not resolved.is_file():
        return None, f"include not found: {target}"
    return resolved, ""


def expand_includes(lines: Lines, base_dir: Path, rel: str, ctx: Context, depth: int = 1) -> Lines:
    """Inline `[!INCLUDE[..](path)]` files (recursively, up to MAX_INCLUDE_DEPTH); bad ones are dropped."""
    out: Lines = []
    for text, line_no in lines:
        if "[!include" not in text.lower():
            out.append((text, line_no))
            continue

        def substitute(match: re.Match, text: str = text, line_no: int = line_no) -> str:
            return include_text(match.group(1), base_dir, rel, line_no, continuation_prefix(text), ctx, depth)

        out.extend((piece, line_no) for piece in INCLUDE_RE.sub(substitute, text).split("\n"))
    return out


def include_text(target: str, base_dir: Path, rel: str, line_no: int, prefix: str, ctx: Context, depth: int) -> str:
    """The Markdown an include directive stands for ("" when it cannot be resolved)."""
    if depth > MAX_INCLUDE_DEPTH:
        ctx.warn(rel, line_no, f"includes nested deeper than {MAX_INCLUDE_DEPTH}: {target}")
        return ""
    path, reason = resolve_include(target, base_dir, ctx)
    included = read_include(path) if path else None
    if path and included is None:
        reason = f"include is unreadable or not valid UTF-8: {target}"
    if included is None:
        ctx.warn(rel, line_no, reason)
        return ""
    include_rel = relative_path(path, ctx.content_root.resolve())
    if include_rel not in ctx.includes:
        ctx.includes.append(include_rel)
    expanded = expand_includes(included, path.parent, include_rel, ctx, depth + 1)
    return f"\n{prefix}".join(line for line, _ in expanded)


def build_sections(body: str, line_map: list[int]) -> tuple[list[Section], str, int]:
    """Sections from the body, plus the text and line of the first H1 (the title heading)."""
    sections: list[Section] = []
    h1_text, h1_line = "", 0
    stack: list[tuple[int, str]] = []  # (level, heading text)
    current: tuple[tuple[str, ...], str, int] | None = None  # (heading_path, anchor, line)
    blocks: list[str] = []

    def flush() -> None:
        text = "\n\n".join(blocks).strip()
        if text:
            path, anchor, line = current or ((), "", first_line)
            sections.append(Section(path, anchor, text, line))
        blocks.clear()

    first_line = 0
    for node in parse_tree(body).children:
        line = line_map[node.map[0]] if node.map and node.map[0] < len(line_map) else 0
        if node.type != "heading":
            text = block_text(node)
            if text:
                first_line = first_line or line
                blocks.append(text)
            continue
        heading = block_text(node)
        level = int(node.tag[1])
        if level == 1 and not h1_text and current is None:
            h1_text, h1_line = heading, line  # the title heading: not a section of its own
            continue
        flush()
        level = max(level, 2)
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
        current = (tuple(text for _, text in stack), node.attrs.get("id", slugify(heading)), line)
    flush()
    return sections, h1_text, h1_line


def text_value(value: object) -> str:
    """A front matter scalar as stripped text ("" for None)."""
    return "" if value is None else str(value).strip()


def tags_value(value: object) -> tuple[str, ...]:
    """Tags from a YAML list or a comma-separated string, de-duplicated, order kept."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    return tuple(dict.fromkeys(tag for tag in (text_value(item) for item in items) if tag))


def date_value(value: object) -> str | None:
    """ISO date from a YAML date/datetime or a date string; None when it cannot be read."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    for fmt in DATE_FORMATS:
        try:
            return dt.datetime.strptime(text_value(value), fmt).date().isoformat()
        except ValueError:
            continue
    return None


def json_safe(value: object) -> object:
    """Front matter value with dates as ISO strings and everything else JSON-serialisable."""
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def first_present(meta: dict, *keys: str) -> tuple[str, object]:
    """(key, value) of the first key set in meta, or ("", None)."""
    for key in keys:
        if meta.get(key) not in (None, "", []):
            return key, meta[key]
    return "", None


def choice(meta: dict, key: str, allowed: tuple[str, ...], rel: str, raw: str, ctx: Context) -> str:
    """A front matter value restricted to allowed values (first is the default); warns when invalid."""
    value = text_value(meta.get(key)).lower()
    if value and value not in allowed:
        ctx.warn(rel, key_line(raw, key), f"invalid {key} {value!r} (expected {' or '.join(allowed)})")
    return value if value in allowed else allowed[0]


def metadata(meta: dict, rel: str, raw: str, ctx: Context) -> dict:
    """Article fields from front matter, with corpus fallbacks and warnings for bad values."""
    used = set()
    fields = {}
    for name, keys in (("summary", ("summary", "description")), ("owner", ("owner", "author"))):
        key, value = first_present(meta, *keys)
        used.add(key)
        fields[name] = text_value(value)
    key, value = first_present(meta, "tags", "ms.search.keywords")
    used.add(key)
    fields["tags"] = tags_value(value)
    parts = rel.split("/")
    fields["product"] = text_value(meta.get("product")) or (parts[0] if len(parts) > 1 else "")
    language = text_value(meta.get("language")).lower() or "en"
    if not LANGUAGE_RE.fullmatch(language):
        ctx.warn(rel, key_line(raw, "language"), f"invalid language {language!r}, using 'en'")
        language = "en"
    fields["language"] = language
    if set(text_value(meta.get("audience")).lower().split("|")) <= DOCFX_AUDIENCES:
        fields["audience"] = "public"
    else:
        fields["audience"] = choice(meta, "audience", AUDIENCES, rel, raw, ctx)
    fields["status"] = choice(meta, "status", STATUSES, rel, raw, ctx)
    key, value = first_present(meta, "reviewed", "ms.date")
    used.add(key)
    fields["reviewed"] = date_value(value) if key else ""
    if fields["reviewed"] is None:
        ctx.warn(rel, key_line(raw, key), f"unreadable date in {key}: {value!r}")
        fields["reviewed"] = ""
    fields["extra"] = {k: json_safe(v) for k, v in meta.items() if k not in MODELED_KEYS and k not in used}
    return fields


def parse_article(path: Path, content_root: Path) -> tuple[Article | None, list[Problem]]:
    """Parse one article file; never raises for bad content (returns None plus an error Problem)."""
    rel = relative_path(path, content_root)
    ctx = Context(content_root)

    def fail(line: int, message: str) -> tuple[None, list[Problem]]:
        return None, [*ctx.problems, Problem(rel, line, message)]

    try:
        data = path.read_bytes()
    except OSError as exc:
        return fail(0, f"cannot read file: {exc.strerror or exc}")
    text, bad_line, message = decode(data)
    if text is None:
        return fail(bad_line, message)
    if not text.strip():
        return fail(1, "empty file")
    try:
        raw, body_lines, first = split_front_matter(text)
        meta = load_front_matter(raw) if raw is not None else {}
    except ValueError as exc:
        return fail(1, str(exc))
    except yaml.YAMLError as exc:
        return fail(yaml_error_line(exc), f"invalid YAML front matter: {getattr(exc, 'problem', None) or exc}")
    except TypeError as exc:
        return fail(1, str(exc))
    raw = raw or ""

    numbered = [(line, first + index) for index, line in enumerate(body_lines)]
    expanded = expand_includes(numbered, path.parent, rel, ctx)
    cleaned = "\n".join(remove_docfx([line for line, _ in expanded]))
    sections, h1_text, h1_line = build_sections(cleaned, [line_no for _, line_no in expanded])
    body = cleaned.strip("\n") + "\n"

    title = text_value(meta.get("title"))
    if not title and h1_text:
        ctx.warn(rel, h1_line, "no title in front matter; using the first H1")
        title = h1_text
    if not title:
        return fail(1, "no title (neither front matter 'title' nor an H1)")
    fields = metadata(meta, rel, raw, ctx)
    article = Article(
        article_id=rel.removesuffix(".md"),
        path=rel,
        title=title,
        body=body,
        sections=tuple(sections),
        includes=tuple(ctx.includes),
        **fields,
    )
    return article, ctx.problems
