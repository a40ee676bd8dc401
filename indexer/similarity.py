"""Near-duplicate articles: mean passage vectors of an index version compared by blocked matrix products."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from kb.index import IndexReader

BLOCK_ROWS = 2048  # rows of the similarity matrix computed at once: 2048 x 10,000 floats = 80 MB


def article_vectors(version: IndexReader, article_ids: Iterable[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(article ids, L2-normalised mean of each article's passage vectors), ids sorted.

    Only articles in `article_ids` when it is given; articles without passages are left out.
    """
    wanted = None if article_ids is None else set(article_ids)
    pairs = [(key, aid) for key, aid in enumerate(version.passage_articles()) if wanted is None or aid in wanted]
    if not pairs:
        return [], np.zeros((0, version.dim), dtype=np.float32)
    vectors = version.vectors()
    ids = sorted({aid for _, aid in pairs})
    position = {aid: n for n, aid in enumerate(ids)}
    owner = np.fromiter((position[aid] for _, aid in pairs), dtype=np.int64, count=len(pairs))
    rows = np.fromiter((row for row, _ in pairs), dtype=np.int64, count=len(pairs))
    order = np.argsort(owner, kind="stable")  # group each article's passages, then sum each group
    starts = np.flatnonzero(np.r_[True, owner[order][1:] != owner[order][:-1]])
    sums = np.add.reduceat(vectors[rows[order]].astype(np.float64), starts, axis=0)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return ids, (sums / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def similar_pairs(ids: list[str], matrix: np.ndarray, threshold: float) -> list[tuple[str, str, float]]:
    """Pairs (a, b, cosine) with a < b and cosine >= threshold, most similar first."""
    found: list[tuple[str, str, float]] = []
    for start in range(0, len(ids), BLOCK_ROWS):
        block = matrix[start : start + BLOCK_ROWS] @ matrix.T
        rows, cols = np.nonzero(block >= threshold)
        for row, col in zip(rows.tolist(), cols.tolist()):
            if col > start + row:  # upper triangle: each pair once, never an article with itself
                found.append((ids[start + row], ids[col], float(block[row, col])))
    return sorted(found, key=lambda pair: (-pair[2], pair[0], pair[1]))


def near_duplicates(version: IndexReader, threshold: float,
                    article_ids: Iterable[str] | None = None) -> list[tuple[str, str, float]]:
    """Article pairs of `version` whose mean passage vectors have cosine >= threshold."""
    ids, matrix = article_vectors(version, article_ids)
    return similar_pairs(ids, matrix, threshold)
