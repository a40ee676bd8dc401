"""Fusion: score normalisation, weights, exact-code boost, RRF baseline and ranking."""
from search.fusion import FusionWeights, fuse_scores, normalise_max, rank, reciprocal_rank_fusion


def test_normalise_max_scales_best_to_one():
    assert normalise_max({1: 10.0, 2: 5.0}) == {1: 1.0, 2: 0.5}
    assert normalise_max({}) == {}


def test_lexical_weight_can_reorder_close_dense_scores():
    dense = {1: 0.60, 2: 0.58}
    lexical = {2: 12.0, 1: 1.0}
    assert rank(fuse_scores(dense, lexical, {}, FusionWeights(lexical=0.0))) == [1, 2]
    assert rank(fuse_scores(dense, lexical, {}, FusionWeights(lexical=0.3))) == [2, 1]


def test_exact_code_match_counts_strongly():
    fused = fuse_scores({1: 0.7, 2: 0.6}, {}, {2: 1}, FusionWeights(lexical=0.3, code=0.15))
    assert rank(fused) == [2, 1]


def test_rows_only_in_lexical_keep_their_dense_score_if_given():
    fused = fuse_scores({1: 0.5, 3: 0.2}, {3: 4.0}, {}, FusionWeights(lexical=0.3))
    assert abs(fused[3] - 0.5) < 1e-9 and fused[1] == 0.5


def test_weighted_rrf():
    rankings = [[1, 2], [2, 3]]
    assert rank(reciprocal_rank_fusion(rankings, [1.0, 1.0], k=60))[0] == 2
    down_weighted = reciprocal_rank_fusion(rankings, [1.0, 0.01], k=60)
    assert rank(down_weighted)[0] == 1 and set(down_weighted) == {1, 2, 3}


def test_rank_breaks_ties_by_row():
    assert rank({5: 1.0, 2: 1.0, 9: 2.0}) == [9, 2, 5]
