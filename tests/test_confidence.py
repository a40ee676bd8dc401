"""Confidence: features, calibrated probability, class-balanced fit, AUC."""
import math

from kb.embedder import MODEL_IDS
from search.confidence import Calibration, auc, calibration_for, features, fit_calibration


def test_features_top_and_gap():
    assert features({1: 0.8, 2: 0.7, 3: 0.6, 4: 0.5, 5: 0.4, 6: 0.3, 7: 0.2}) == (0.8, 0.8 - 0.3)
    assert features({1: 0.5}) == (0.5, 0.0)
    assert features({}) == (0.0, 0.0)


def test_probability_rises_with_the_top_score():
    c = Calibration()
    assert c.probability(0.3, 0.02) < 0.5 < c.probability(0.8, 0.1)
    assert 0.0 <= c.probability(-50, -50) <= c.probability(50, 50) <= 1.0


def test_fit_separates_and_balances_classes():
    rows = [(0.7 + 0.01 * i, 0.08, True) for i in range(30)] + [(0.4 + 0.01 * i, 0.03, False) for i in range(6)]
    fitted = fit_calibration(rows)
    assert all(fitted.probability(t, g) > 0.5 for t, g, label in rows if label)
    assert all(fitted.probability(t, g) < 0.5 for t, g, label in rows if not label)
    assert not math.isnan(fitted.bias)


def test_auc():
    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auc([0.5], [0.5]) == 0.5
    assert math.isnan(auc([], [0.1]))


def test_each_model_has_its_own_calibration():
    minilm, e5 = calibration_for(MODEL_IDS["all-MiniLM-L6-v2"]), calibration_for(MODEL_IDS["multilingual-e5-small"])
    assert minilm == Calibration() and calibration_for("test/tiny-bow") == minilm
    minilm_id = calibration_for(MODEL_IDS["all-MiniLM-L6-v2"], "id")  # the same slopes, a higher intercept
    assert (minilm_id.w_top, minilm_id.w_gap) == (minilm.w_top, minilm.w_gap) and minilm_id.bias > minilm.bias
    for top, gap in ((0.5, 0.05), (0.55, 0.1), (0.6, 0.02)):  # confident in Indonesian from the English fit's 0.35
        english = minilm.probability(top, gap)
        assert (minilm_id.probability(top, gap) >= 0.5) == (english >= 0.35), (top, gap, english)
    # A cosine of 0.85 with a small gap is a strong MiniLM match but an ordinary e5 one.
    assert minilm.probability(0.85, 0.03) > 0.9 and e5.probability(0.85, 0.03) < 0.5
    # e5 gives Indonesian queries lower cosines: the same match counts for more in Indonesian.
    e5_id = calibration_for(MODEL_IDS["multilingual-e5-small"], "id")
    assert e5_id.probability(0.87, 0.02) > 0.5 > e5.probability(0.87, 0.02)
