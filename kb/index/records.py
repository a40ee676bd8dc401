"""Typed records of the index interface: articles and passages as written and read, filters, lexical queries."""
from __future__ import annotations

from dataclasses import dataclass, field

from kb.articles import Article, Passage


@dataclass(frozen=True)
class ArticleRecord:
    """One article as an index version stores it. `body` is None when it was not asked for (listings)."""

    id: str
    path: str
    title: str
    summary: str = ""
    product: str = ""
    tags: tuple[str, ...] = ()
    language: str = "en"
    audience: str = "public"
    status: str = "published"
    owner: str = ""
    reviewed: str = ""
    body: str | None = None
    includes: tuple[str, ...] = ()  # content-relative include files it was built from (incremental builds)
    extra: dict = field(default_factory=dict, compare=False)  # front matter keys the model does not name
    source_hash: str = ""  # hash of its file and includes when it was built
    # The embedding of its title (float32 bytes, unit length) as a build writes it; None for versions written
    # without them, and a reader may leave it None in listings (IndexReader.title_vectors reads them all).
    title_vector: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, article: Article, source_hash: str) -> ArticleRecord:
        return cls(id=article.article_id, path=article.path, title=article.title, summary=article.summary,
                   product=article.product, tags=tuple(article.tags), language=article.language,
                   audience=article.audience, status=article.status, owner=article.owner,
                   reviewed=article.reviewed, body=article.body, includes=tuple(article.includes),
                   extra=dict(article.extra), source_hash=source_hash)


def title_vector_of(article: ArticleRecord, dim: int) -> bytes | None:
    """The article's title embedding as a writer stores it (float32 bytes), None when it has none; ValueError when it
    does not hold `dim` values."""
    vector = article.title_vector
    if vector is not None and len(vector) != 4 * dim:
        raise ValueError(f"the title vector of {article.id} has {len(vector)} bytes, not {4 * dim} (dim {dim})")
    return vector


@dataclass(frozen=True)
class PassageRecord:
    """One passage. Within an opened version a passage is addressed by its key: an int from 0 to size - 1, given
    by the backend when the version is written (the dense vector of key k is the k-th of the version)."""

    passage_id: str
    article_id: str
    heading_path: tuple[str, ...]
    anchor: str
    text: str
    text_hash: str = ""  # hash of the text that was embedded (the embedding cache's key)
    # [start, end) of the sentences of `text` that may be marked as an answer (kb.sentences.markable): the FAISS +
    # SQLite writer stores them with the passage; None when not stored (Milvus, older versions): the reader finds them.
    sentences: tuple[tuple[int, int], ...] | None = field(default=None, compare=False)

    @classmethod
    def of(cls, passage: Passage, text_hash: str,
           sentences: tuple[tuple[int, int], ...] | None = None) -> PassageRecord:
        return cls(passage.passage_id, passage.article_id, tuple(passage.heading_path), passage.anchor,
                   passage.text, text_hash, sentences)


@dataclass(frozen=True)
class Selection:
    """Which passages a search may return, by their article: each set field must match (case-insensitive);
    empty fields select everything. Typed so that every backend can turn it into its own filter."""

    product: str | None = None
    language: str | None = None
    audience: str | None = None
    exclude_audience: str | None = None  # "internal" for callers who may see public articles only
    article_ids: frozenset[str] | None = None

    @property
    def empty(self) -> bool:
        return not (self.product or self.language or self.audience or self.exclude_audience) \
            and self.article_ids is None

    def admits(self, article: ArticleRecord) -> bool:
        return ((not self.product or article.product.lower() == self.product.lower())
                and (not self.language or article.language.lower() == self.language.lower())
                and (not self.audience or article.audience.lower() == self.audience.lower())
                and (not self.exclude_audience or article.audience.lower() != self.exclude_audience.lower())
                and (self.article_ids is None or article.id in self.article_ids))


@dataclass(frozen=True)
class TermQuery:
    """BM25 over title, headings and body of the passages containing any of `terms` (lower-case words), each
    field weighted by `weights` (title, headings, body)."""

    terms: tuple[str, ...]
    weights: tuple[float, float, float] = (2.0, 1.5, 1.0)


@dataclass(frozen=True)
class PhraseQuery:
    """Passages containing each of `phrases` (token sequences) exactly; with `near`, the phrases within that many
    tokens of one another (in any order), e.g. (("error",), ("30088",)) near 2 for "error code 30088"."""

    phrases: tuple[tuple[str, ...], ...]
    near: int | None = None


@dataclass(frozen=True)
class PhraseHits:
    """What a phrase search found: the keys that pass the selection, and how many passages matched in all (at most
    the limit asked for), which says how specific the phrase is."""

    keys: list[int]
    found: int
