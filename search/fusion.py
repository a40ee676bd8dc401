"""Fusion of the dense and lexical arms, tuned on data: dense cosine plus a weighted, max-normalised BM25."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FusionWeights:
    """How much the lexical arm and exact identifier matches add to the dense cosine."""

    lexical: float = 0.3
    code: float = 0.15


def normalise_max(scores: dict[int, float]) -> dict[int, float]:
    """Scale scores into [0, 1] by the best score of this query (BM25 has no fixed range)."""
    if not scores:
        return {}
    top = max(scores.values())
    return {row: (s / top if top > 0 else 0.0) for row, s in scores.items()}


def fuse_scores(dense: dict[int, float], lexical: dict[int, float], codes: dict[int, int],
                weights: FusionWeights) -> dict[int, float]:
    """Row -> fused score. `dense` must hold the exact cosine of every candidate of either arm."""
    lex = normalise_max(lexical)
    rows = set(dense) | set(lex)
    return {row: dense.get(row, 0.0) + weights.lexical * lex.get(row, 0.0) + weights.code * codes.get(row, 0)
            for row in rows}


def reciprocal_rank_fusion(rankings: list[list[int]], weights: list[float], k: int = 60) -> dict[int, float]:
    """Weighted RRF, kept as a baseline for `kb eval`."""
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, row in enumerate(ranking):
            fused[row] = fused.get(row, 0.0) + weight / (k + rank + 1)
    return fused


def rank(scores: dict[int, float]) -> list[int]:
    """Rows best first; ties broken by row for determinism."""
    return sorted(scores, key=lambda row: (-scores[row], row))
