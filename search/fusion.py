"""Fusion of the dense and lexical arms, tuned on data: min-max normalised scores, lexical down-weighted."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FusionWeights:
    """How much the lexical arm and exact identifier matches add to the dense cosine."""

    lexical: float = 0.07
    code: float = 0.5  # per exact identifier matched, times its rarity (search.lexical.code_weight); dev tickets:
    # 0.15 -> 0.5 took MRR@10 0.892 -> 0.907 (before the rarity weighting)


def normalise_minmax(scores: dict[int, float]) -> dict[int, float]:
    """Scale this query's scores into [0, 1] (BM25 has no fixed range; cosines cluster differently per query)."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    span = (high - low) or 1.0
    return {row: (s - low) / span for row, s in scores.items()}


def fuse_scores(dense: dict[int, float], lexical: dict[int, float], codes: dict[int, float],
                weights: FusionWeights) -> dict[int, float]:
    """Row -> fused score. `dense` must hold the exact cosine of every candidate of either arm.

    Measured on stackfaq (docs/quality.md): plain RRF and max-normalised BM25 at weight >= 0.1 fell below
    dense alone; min-max normalising both arms with a small lexical weight beat both arms on both query sets.
    """
    dense_n, lex_n = normalise_minmax(dense), normalise_minmax(lexical)
    return {row: dense_n.get(row, 0.0) + weights.lexical * lex_n.get(row, 0.0) + weights.code * codes.get(row, 0)
            for row in set(dense) | set(lexical)}


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
