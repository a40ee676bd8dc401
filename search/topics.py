"""Topics: queries grouped by embedding similarity (density-seeded threshold clustering), and purity to measure it."""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

# How queries become topics (`group_topics`):
# 1. Seeds. Each query's neighbourhood is the queries whose cosine to it is at least `threshold`; its density is how
#    many events its neighbourhood holds (a query asked 40 times weighs 40). The densest query becomes the seed of a
#    topic and its neighbourhood is taken out; the next densest among the rest follows (densities recomputed over
#    what is left), until no query has a neighbourhood of `min_weight` events. This is the community detection of
#    sentence-transformers' fast clustering, weighted by counts and with densities kept up to date. Above `sample`
#    distinct queries the seeds are found in a count-weighted random sample (topics worth reporting are in it).
# 2. Assignment. Every query joins its most similar seed when their cosine is at least `threshold` (so a query taken
#    early by a neighbouring seed still ends up with the seed it is nearest to); otherwise it stays unclustered.
# Unlike k-means it needs no number of topics and never forces an outlier into a topic; the threshold has a plain
# meaning ("as similar to the topic's seed query as paraphrases of one question are") and is set per model.

# Cosine to a topic's seed, per model, chosen on 10 support questions x 6 paraphrases and checked on 8 others x 5
# (both sets in tests/test_reports.py; int8 vectors as stored): all-MiniLM-L6-v2 at 0.5 kept every topic pure on
# both (held-out: 6 of 40 paraphrases unclustered; 0.45 mixed two of its topics). multilingual-e5-small puts
# unrelated questions at cosine 0.82 (median) and paraphrases at 0.89: 0.9 gave purity 1.00 / 0.96 on the two sets,
# at the cost of more queries left unclustered.
THRESHOLDS = {"all-MiniLM-L6-v2": 0.5, "multilingual-e5-small": 0.9}
DEFAULT_THRESHOLD = 0.5
SAMPLE = 4000
BLOCK = 1024


def threshold_for(model: str) -> float:
    return THRESHOLDS.get(model, DEFAULT_THRESHOLD)


@dataclass(frozen=True)
class Grouping:
    """Topics of n queries: `labels[i]` is the topic of query i (-1: unclustered); topics sorted by size."""

    labels: np.ndarray       # (n,) int64
    seeds: np.ndarray        # (topics,) index of each topic's seed query
    sizes: np.ndarray        # (topics,) events in each topic

    @property
    def count(self) -> int:
        return len(self.seeds)


def unit(vectors: np.ndarray, in_place: bool = False) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero), float32; `in_place` reuses a float32 array's memory."""
    vectors = np.asarray(vectors, dtype=np.float32) if in_place else np.array(vectors, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    norms[norms == 0] = 1
    vectors /= norms[:, None]
    return vectors


def find_seeds(vectors: np.ndarray, weights: np.ndarray, threshold: float, min_weight: float) -> list[int]:
    """Indices of seed queries, densest first (step 1 above)."""
    neighbours = []
    for lo in range(0, len(vectors), BLOCK):
        sims = vectors[lo:lo + BLOCK] @ vectors.T
        rows, columns = np.nonzero(sims >= threshold)  # row-major: each row's columns are contiguous
        bounds = np.searchsorted(rows, np.arange(len(sims) + 1))
        columns = columns.astype(np.int32)
        neighbours.extend(columns[bounds[i]:bounds[i + 1]] for i in range(len(sims)))
    free = np.ones(len(vectors), dtype=bool)
    heap = [(-float(weights[nb].sum()), i) for i, nb in enumerate(neighbours)]
    heapq.heapify(heap)
    seeds = []
    while heap:
        stale, i = heapq.heappop(heap)
        if not free[i]:
            continue
        members = neighbours[i][free[neighbours[i]]]
        density = float(weights[members].sum())
        if density < -stale - 1e-9:  # neighbours were taken since it was pushed: queue it again at its new density
            heapq.heappush(heap, (-density, i))
            continue
        if density < min_weight:  # the densest query left has too few events around it: no more topics
            break
        seeds.append(i)
        free[members] = False
    return seeds


def group_topics(vectors: np.ndarray, weights: np.ndarray | None = None, threshold: float = DEFAULT_THRESHOLD,
                 min_weight: float = 2, sample: int = SAMPLE, seed: int = 0) -> Grouping:
    """Group unit-length query vectors (one row per distinct query, `weights` its events) into topics."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) and not np.allclose(np.linalg.norm(vectors[:100], axis=1), 1, atol=1e-3):
        vectors = unit(vectors)
    n = len(vectors)
    weights = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if n == 0:
        return Grouping(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    pool = np.arange(n)
    if n > sample:
        pool = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False, p=weights / weights.sum()))
    seeds = pool[find_seeds(vectors[pool], weights[pool], threshold, min_weight)]
    labels = np.full(n, -1, dtype=np.int64)
    if len(seeds):
        for lo in range(0, n, BLOCK * 4):
            sims = vectors[lo:lo + BLOCK * 4] @ vectors[seeds].T
            best = sims.argmax(axis=1)
            labels[lo:lo + BLOCK * 4] = np.where(sims[np.arange(len(sims)), best] >= threshold, best, -1)
    sizes = np.bincount(labels[labels >= 0], weights=weights[labels >= 0], minlength=len(seeds))
    keep = [t for t in np.argsort(-sizes, kind="stable") if sizes[t] >= min_weight]
    remap = np.full(len(seeds) + 1, -1, dtype=np.int64)  # last slot maps -1 to -1
    remap[keep] = np.arange(len(keep))
    labels = remap[labels]
    return Grouping(labels, seeds[keep], sizes[keep])


def topic_centroids(grouping: Grouping, vectors: np.ndarray, weights: np.ndarray, count: int | None = None
                    ) -> np.ndarray:
    """(count, dim) count-weighted mean direction of the members of the first `count` topics, L2-normalised."""
    count = grouping.count if count is None else min(count, grouping.count)
    order = np.argsort(grouping.labels, kind="stable")
    bounds = np.searchsorted(grouping.labels[order], np.arange(count + 1))
    vectors, weights = np.asarray(vectors, dtype=np.float32), np.asarray(weights, dtype=np.float32)
    sums = np.zeros((count, vectors.shape[1]), dtype=np.float32)
    for t in range(count):
        members = order[bounds[t]:bounds[t + 1]]
        sums[t] = weights[members] @ vectors[members]
    return unit(sums, in_place=True)


def purity(predicted: np.ndarray, truth: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Share of clustered events whose topic's most common true label is their own (1.0: no topic mixes labels)."""
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    weights = np.ones(len(predicted)) if weights is None else np.asarray(weights, dtype=np.float64)
    clustered = predicted >= 0
    total = weights[clustered].sum()
    if not total:
        return 0.0
    majority = 0.0
    for topic in np.unique(predicted[clustered]):
        members = predicted == topic
        _, inverse = np.unique(truth[members], return_inverse=True)
        majority += np.bincount(inverse, weights=weights[members]).max()
    return float(majority / total)


def inverse_purity(predicted: np.ndarray, truth: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Share of events that sit in the topic holding most of their true label (1.0: no label split or left out);
    unclustered events count as topics of their own."""
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    weights = np.ones(len(predicted)) if weights is None else np.asarray(weights, dtype=np.float64)
    singles = np.where(predicted >= 0, predicted, -1 - np.arange(len(predicted)))  # each unclustered alone
    best = 0.0
    for label in np.unique(truth):
        members = truth == label
        _, inverse = np.unique(singles[members], return_inverse=True)
        best += np.bincount(inverse, weights=weights[members]).max()
    return float(best / weights.sum()) if weights.sum() else 0.0
