"""Calibrated probabilities for proposed facts, and the measures that say how good they are.

Why: a summed log-probability ranks the objects of one query, but it is not a probability that a
proposed fact is true (long names score low, a weak model is over- or under-confident). A KB
engineer filters by "how likely is this right", so the score is mapped to the observed share of
true facts on held-out data: scikit-learn's isotonic regression (monotone, non-parametric) or
Platt scaling (a logistic curve). Both are monotone non-decreasing in the log-probability, so
calibration never reorders a query's objects.

A degenerate fit (every held-out proposal true, or every one false) is a constant: the observed
share, said so in ``Calibrator.degenerate``.

Measures over proposals with a probability and a true/false label: precision and recall at a
threshold, precision@k (proposals sorted by probability), the expected calibration error (ECE,
equal-width bins weighted by their counts) and the reliability curve behind it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Method = Literal["isotonic", "platt"]


@dataclass(frozen=True)
class Calibrator:
    """A fitted map log-probability -> probability; JSON-serialisable (``to_dict``/``from_dict``).

    isotonic: piecewise-linear through ``(xs, ys)``, clipped outside; platt: ``sigmoid(a x + b)``
    with ``(a, b) = params``; a degenerate fit: the constant ``ys[0]``.
    """

    method: Method
    xs: tuple[float, ...] = ()
    ys: tuple[float, ...] = ()
    params: tuple[float, float] = (0.0, 0.0)
    examples: int = 0
    positives: int = 0
    degenerate: bool = False

    def __call__(self, logprob: Sequence[float] | np.ndarray) -> np.ndarray:
        x = np.asarray(logprob, dtype=np.float64)
        if self.degenerate:
            return np.full(x.shape, self.ys[0] if self.ys else 0.0)
        if self.method == "isotonic":
            return np.interp(x, self.xs, self.ys)
        a, b = self.params
        return 1.0 / (1.0 + np.exp(-(a * x + b)))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "xs": list(self.xs), "ys": list(self.ys), "params": list(self.params),
                "examples": self.examples, "positives": self.positives, "degenerate": self.degenerate}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        return cls(data["method"], tuple(data["xs"]), tuple(data["ys"]), tuple(data["params"]),
                   data["examples"], data["positives"], data["degenerate"])


def fit_calibrator(logprob: Sequence[float], correct: Sequence[bool], method: Method = "isotonic") -> Calibrator:
    """Fit ``P(correct | logprob)`` on held-out proposals. ``logprob``, ``correct``: (N,)."""
    x = np.asarray(logprob, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    positives = int(y.sum())
    if len(y) == 0 or positives in (0, len(y)):
        share = float(y.mean()) if len(y) else 0.0
        return Calibrator(method, ys=(share,), examples=len(y), positives=positives, degenerate=True)
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(x, y)
        return Calibrator(method, tuple(model.X_thresholds_.tolist()), tuple(model.y_thresholds_.tolist()),
                          examples=len(y), positives=positives)
    from sklearn.linear_model import LogisticRegression

    # No regularisation to speak of: Platt's fit is a plain two-parameter maximum likelihood.
    model = LogisticRegression(C=1e6).fit(x[:, None], y)
    return Calibrator(method, params=(float(model.coef_[0, 0]), float(model.intercept_[0])), examples=len(y), positives=positives)


def precision_recall_at(probability: np.ndarray, correct: np.ndarray, threshold: float, relevant: int) -> dict[str, float | int]:
    """Precision of the proposals at or above ``threshold``, and recall against ``relevant`` true facts.

    ``probability``, ``correct``: (N,). Precision of an empty selection is reported as 0.
    """
    chosen = probability >= threshold
    found = int(correct[chosen].sum())
    return {"proposed": int(chosen.sum()), "correct": found,
            "precision": found / int(chosen.sum()) if chosen.any() else 0.0,
            "recall": found / relevant if relevant else 0.0}


def precision_at_k(probability: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Precision of the k most probable proposals, for k = 1..N: (N,). Ties keep input order."""
    order = np.argsort(-probability, kind="stable")
    hits = np.cumsum(correct[order].astype(np.float64))
    return hits / np.arange(1, len(order) + 1)


def reliability(probability: np.ndarray, correct: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Per equal-width probability bin: mean predicted probability, observed share true, count.

    Empty bins are left out. ``ece`` is the count-weighted mean of |observed - predicted|.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(probability, edges[1:-1], right=False), 0, bins - 1)
    predicted, observed, counts = [], [], []
    for b in range(bins):
        members = index == b
        if members.any():
            predicted.append(float(probability[members].mean()))
            observed.append(float(correct[members].mean()))
            counts.append(int(members.sum()))
    return {"predicted": predicted, "observed": observed, "count": counts}


def expected_calibration_error(probability: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    curve = reliability(probability, correct, bins)
    total = sum(curve["count"])
    if not total:
        return 0.0
    return float(sum(n * abs(o - p) for p, o, n in zip(curve["predicted"], curve["observed"], curve["count"])) / total)
