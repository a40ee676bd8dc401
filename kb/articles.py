"""Article, Section, Passage and Problem: the data that flows from Markdown to the index."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from kb.errors import BadRequest


@dataclass(frozen=True)
class Problem:
    """Something wrong in a content file, reported with file and line."""

    path: str  # path relative to the content root, e.g. "Outlook/foo.md"
    line: int  # 1-based line in that file (0 when it concerns the whole file)
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.severity}: {self.message}"


@dataclass(frozen=True)
class Section:
    """A run of text under one heading (or before the first heading)."""

    heading_path: tuple[str, ...]  # headings from H2 down, e.g. ("Resolution", "Method 1")
    anchor: str  # slug of the last heading, "" for the text before the first heading
    text: str  # plain text: paragraphs separated by blank lines, list items as lines
    line: int  # 1-based source line of the heading (or of the first text)


@dataclass(frozen=True)
class Article:
    """One published Markdown article."""

    article_id: str  # path relative to the content root without ".md"
    path: str  # path relative to the content root
    title: str
    body: str  # Markdown without front matter, includes resolved
    sections: tuple[Section, ...]
    summary: str = ""
    product: str = ""
    tags: tuple[str, ...] = ()
    language: str = "en"
    audience: str = "public"
    status: str = "published"
    owner: str = ""
    reviewed: str = ""  # ISO date or ""
    includes: tuple[str, ...] = ()  # content-relative paths of resolved include files
    extra: dict = field(default_factory=dict, compare=False)  # front matter keys we do not model


@dataclass(frozen=True)
class Passage:
    """A bounded piece of an article: what gets embedded and returned as an answer."""

    passage_id: str  # f"{article_id}#{anchor}" plus "~n" when a section was split
    article_id: str
    title: str
    heading_path: tuple[str, ...]
    anchor: str
    text: str

    def embed_text(self) -> str:
        """Text given to the embedding model: title and headings for context, then the text."""
        context = " > ".join((self.title, *self.heading_path))
        return f"{context}\n{self.text}"


def validate_article_id(article_id: str) -> str:
    """An id that is a path relative to the content root: not empty, no '..', no leading '/', no backslash."""
    if not article_id or article_id.startswith(("/", "\\")) or ".." in PurePosixPath(article_id).parts \
            or "\\" in article_id or "\x00" in article_id:
        raise BadRequest(f"invalid article id {article_id!r}: use the path relative to the content root, "
                         "without '..' or a leading '/'")
    return article_id
