"""Related articles: the nearest articles to one article by embedding, from the searcher's in-memory vectors."""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from kb.articles import validate_article_id
from kb.errors import ArticleNotFound
from search.searcher import Searcher


@dataclass(frozen=True)
class ArticleVectors:
    """Per-article view of one index version's passage matrix, computed once per Searcher."""

    ids: list[str]               # article ids that own at least one passage, in first-row order
    position: dict[str, int]     # article id -> index into `ids`
    owner: np.ndarray            # passage key -> index into `ids`
    centroids: np.ndarray        # (len(ids), dim) float32, mean of an article's passages, L2-normalised


_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Searcher -> ArticleVectors; dies with it


def article_vectors(searcher: Searcher) -> ArticleVectors:
    """The per-article vectors of `searcher`'s index version (cached; a reloaded index is a new Searcher)."""
    cached = _cache.get(searcher)
    if cached is None:
        position: dict[str, int] = {}
        owner = np.fromiter((position.setdefault(a, len(position)) for a in searcher.row_article),
                            dtype=np.int64, count=len(searcher.row_article))
        ids = list(position)
        matrix = np.asarray(searcher.version.vectors(), dtype=np.float32)
        sums = np.zeros((len(ids), matrix.shape[1]), dtype=np.float32)
        np.add.at(sums, owner, matrix)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = sums / np.where(norms > 0, norms, 1.0)  # mean direction = normalised sum
        cached = ArticleVectors(ids, position, owner, centroids.astype(np.float32))
        _cache[searcher] = cached
    return cached


def related_articles(searcher: Searcher, article_id: str, k: int = 5) -> list[dict]:
    """Up to `k` other articles nearest to `article_id`, best first.

    The article is represented by the normalised mean of its passage vectors (its overall topic); another
    article scores as the best cosine of any of its passages to that vector. The best passage, not the
    other article's mean, so that a long article covering several problems still ranks when one of its
    sections is about this article's topic (its mean would be diluted by the unrelated sections).
    """
    validate_article_id(article_id)
    if article_id not in searcher.articles:
        raise ArticleNotFound(f"no article with id {article_id!r}")
    vectors = article_vectors(searcher)
    me = vectors.position.get(article_id)
    if me is None or k <= 0:  # an article without passages has no vector to compare
        return []
    sims = searcher.version.vectors() @ vectors.centroids[me]
    best = np.full(len(vectors.ids), -np.inf, dtype=np.float32)
    np.maximum.at(best, vectors.owner, sims)
    best[me] = -np.inf
    take = min(k, len(vectors.ids) - 1)
    if take <= 0:
        return []
    top = np.argpartition(-best, take - 1)[:take]
    top = top[np.argsort(-best[top], kind="stable")]
    out = []
    for i in top:
        other = vectors.ids[int(i)]
        meta = searcher.articles.get(other, {})
        out.append({"id": other, "title": meta.get("title", other), "summary": meta.get("summary", ""),
                    "url": searcher.url(other), "score": round(float(best[i]), 4)})
    return out
