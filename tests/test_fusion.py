"""Fusion: score normalisation, weights, exact-code boost, RRF baseline and ranking."""
from search.fusion import FusionWeights, fuse_scores, normalise_minmax, rank, reciprocal_rank_fusion


def test_normalise_minmax_spans_zero_to_one():
    assert normalise_minmax({1: 10.0, 2: 5.0, 3: 7.5}) == {1: 1.0, 2: 0.0, 3: 0.5}
    assert normalise_minmax({4: 0.3}) == {4: 0.0}
    assert normalise_minmax({}) == {}


def test_lexical_weight_can_reorder_close_dense_scores():
    dense = {1: 0.60, 2: 0.58, 3: 0.20}
    lexical = {2: 12.0, 1: 1.0, 3: 1.0}
    assert rank(fuse_scores(dense, lexical, {}, FusionWeights(lexical=0.0)))[:2] == [1, 2]
    assert rank(fuse_scores(dense, lexical, {}, FusionWeights(lexical=0.3)))[:2] == [2, 1]


def test_exact_code_match_counts_strongly():
    dense = {1: 0.70, 2: 0.66, 3: 0.30}
    assert rank(fuse_scores(dense, {}, {}, FusionWeights(code=0.15)))[0] == 1
    assert rank(fuse_scores(dense, {}, {2: 1}, FusionWeights(code=0.15)))[0] == 2


def test_every_candidate_of_either_arm_is_scored():
    fused = fuse_scores({1: 0.5, 3: 0.2}, {3: 4.0, 7: 1.0}, {}, FusionWeights(lexical=0.3))
    assert set(fused) == {1, 3, 7}
    assert fused[1] == 1.0 and abs(fused[3] - 0.3) < 1e-9 and fused[7] == 0.0


def test_weighted_rrf():
    rankings = [[1, 2], [2, 3]]
    assert rank(reciprocal_rank_fusion(rankings, [1.0, 1.0], k=60))[0] == 2
    down_weighted = reciprocal_rank_fusion(rankings, [1.0, 0.01], k=60)
    assert rank(down_weighted)[0] == 1 and set(down_weighted) == {1, 2, 3}


def test_rank_breaks_ties_by_row():
    assert rank({5: 1.0, 2: 1.0, 9: 2.0}) == [9, 2, 5]
    assert rank({7: -0.0, 3: 0.0, 4: -1.5, 8: 1e-300}) == [8, 3, 7, 4] and rank({}) == []


def test_rank_is_the_same_on_either_side_of_its_numpy_threshold():
    import random

    from search.fusion import RANK_BY_NUMPY

    rng = random.Random(7)
    for size in (RANK_BY_NUMPY - 1, RANK_BY_NUMPY, 200):
        scores = {row: rng.choice([0.5, -0.0, 0.0, rng.random()]) for row in rng.sample(range(10_000), size)}
        assert rank(scores) == sorted(scores, key=lambda row: (-scores[row], row))
