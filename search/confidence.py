"""Confidence that the knowledge base has a good answer: a logistic model over dense-score features."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kb.embedder import MODEL_IDS


@dataclass(frozen=True)
class Calibration:
    """P(answerable) = sigmoid(bias + w_top * top cosine + w_gap * (top cosine - 6th best cosine)).

    Defaults were fitted with `kb eval eval/tickets-dev --fit-confidence` on the dev tickets (100 answerable,
    20 unanswerable) over md-office-support-kb; see docs/quality.md for how well they separate.
    """

    bias: float = -14.6
    w_top: float = 23.382
    w_gap: float = 18.464

    def probability(self, top: float, gap: float) -> float:
        z = self.bias + self.w_top * top + self.w_gap * gap
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


# Cosines of different models live on different scales: each model has its own fit, per query language
# where that separates better (docs/quality.md). multilingual-e5-small's cosines sit higher and closer
# together (0.85-0.92 for most tickets) and lower for Indonesian queries than for English ones. MiniLM's
# Indonesian queries share its English slopes with a higher intercept: confident from the English fit's 0.35, where
# the tuning set's Indonesian items between 0.35 and 0.5 are all answerable once the questions about other vendors'
# products are decided by search/coverage.py (docs/quality.md, "Change 10").
INDONESIAN_SHIFT = 0.619  # ln(0.65 / 0.35): the English fit's 0.35 becomes 0.5
CALIBRATIONS = {
    MODEL_IDS["all-MiniLM-L6-v2"]: {"en": Calibration(),
                                    "id": Calibration(bias=Calibration().bias + INDONESIAN_SHIFT)},
    MODEL_IDS["multilingual-e5-small"]: {"en": Calibration(bias=-32.544, w_top=36.489, w_gap=14.33),
                                         "id": Calibration(bias=-20.709, w_top=23.996, w_gap=2.848)},
}


def calibration_for(model_id: str, language: str = "en") -> Calibration:
    """The calibration fitted for this model and query language (the model's English one when the language
    has none; MiniLM's for models not fitted, such as test encoders)."""
    fitted = CALIBRATIONS.get(model_id, CALIBRATIONS[MODEL_IDS["all-MiniLM-L6-v2"]])
    return fitted.get(language, fitted["en"])


def features(dense: dict[int, float]) -> tuple[float, float]:
    """(best cosine, best minus sixth-best cosine) of a query's dense candidates."""
    if not dense:
        return 0.0, 0.0
    ordered = sorted(dense.values(), reverse=True)
    return ordered[0], ordered[0] - ordered[min(5, len(ordered) - 1)]


def fit_calibration(rows: list[tuple[float, float, bool]], l2: float = 1e-2, steps: int = 50) -> Calibration:
    """Class-balanced logistic regression (Newton steps, small L2) of answerable ~ top + gap.

    Balanced, because unanswerable tickets are the minority of a dev set but "confident" on one of them
    is the costly mistake (an agent pastes a wrong answer).
    """
    x = np.array([[1.0, top, gap] for top, gap, _ in rows])
    y = np.array([1.0 if label else 0.0 for _, _, label in rows])
    positives = max(y.sum(), 1.0)
    negatives = max(len(y) - y.sum(), 1.0)
    weight = np.where(y == 1.0, len(y) / (2 * positives), len(y) / (2 * negatives))
    w = np.zeros(3)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        gradient = x.T @ (weight * (p - y)) + l2 * np.r_[0.0, w[1:]]
        hessian = (x * (weight * p * (1 - p))[:, None]).T @ x + l2 * np.diag([0.0, 1.0, 1.0])
        w -= np.linalg.solve(hessian, gradient)
    return Calibration(*(round(float(v), 3) for v in w))


def auc(positives: list[float], negatives: list[float]) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    if not positives or not negatives:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))
