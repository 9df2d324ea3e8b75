"""Performance estimated without labels: confidence-based performance estimation (CBPE) for classifiers.

A window's predictions and scores are enough: the scores, calibrated on the labelled reference
(``engine.calibration``), give each row's probability of each true class, and summing them by predicted class
gives the expected confusion matrix. Accuracy, precision, recall, F1 and specificity are read off it (positive
class for a binary model, macro averages over the profile's classes for a multiclass one); ROC-AUC is the area
under the expected ROC curve: rows ranked by their raw score, each counting as ``p`` of a positive and ``1 - p``
of a negative (NannyML's estimator, with tied scores grouped as scikit-learn's ``roc_curve`` does). Rows are
``kind=estimated_performance`` results, on the target column's name, for every window with predictions and
scores, labelled or not.

Two uncertainties, both analytic (delta method), both for any window size:

- ``<metric>_sampling_error``: how far the realized metric of this window's rows may lie from the estimate if the
  calibration holds. Given the scores, each row's true class is a draw from its calibrated probabilities; the
  variance of the metric is the sum of the rows' variances along the metric's gradient. The realized value lies
  within the estimate ± 3 sampling errors (tested on seeded data, also by simulation).
- Thresholds: the estimate over ``n`` rows drawn like the reference varies around the reference's estimate by
  ``spread / sqrt(n)`` (``spread``: the per-row standard deviation of the estimate's influence function on the
  reference, stored in the profile), widened by the reference windows' own excess spread when there are at least
  three of them. The lower threshold is the reference estimate minus 3 of those, clipped to [0, 1]: a window
  alerts when its estimated performance drops below it (a rise is not an alert; there is no upper threshold).

Where CBPE is blind: it assumes that P(y | score) is the same as in the reference, which holds under covariate
shift (the inputs move, the relation between inputs and labels does not). Under concept drift — the same inputs
now have other labels — the scores and the estimate do not move while realized performance falls: only labels
(realized ``performance`` rows, sequential detection) show it. It also needs calibration-worthy reference scores:
a model whose scores barely vary (a constant score) gives an estimate equal to the reference's whatever happens.

References:
    Hasan, Dmitriev et al. (NannyML), *Confidence-based Performance Estimation*, NannyML documentation,
    https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html
    Zadrozny & Elkan (2002), *Transforming classifier scores into accurate multiclass probability estimates*, KDD.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from otel_mlmon.engine.calibration import Calibration, fit_from_rows
from otel_mlmon.engine.profile import ReferenceProfile

ESTIMATED_PERFORMANCE = "estimated_performance"
METRICS = ("accuracy", "precision", "recall", "f1", "specificity", "roc_auc")
SAMPLING_ERROR = "_sampling_error"  # suffix of the metric name of a sampling-error row
MIN_CALIBRATION_ROWS = 100  # labelled reference rows with scores needed to calibrate
SIGMAS = 3.0
BAND_WINDOWS = 3  # reference windows needed to add their excess spread to the thresholds


@dataclass
class ScoredRows:
    """A window's rows as the estimator reads them: predicted labels (class keys) and class scores, per row in
    the order of the profile's classes (binary: ``[1 - score, score]``), whether or not the rows have labels."""

    y_pred: list[Any] = field(default_factory=list)
    scores: list[list[float]] | np.ndarray = field(default_factory=list)  # or an array of shape (rows, classes)

    def __len__(self) -> int:
        return len(self.y_pred)

    def extend(self, other: ScoredRows) -> None:
        self.y_pred += other.y_pred
        if isinstance(self.scores, np.ndarray) or isinstance(other.scores, np.ndarray):
            parts = [np.asarray(s, dtype=np.float64).reshape(len(s), -1) for s in (self.scores, other.scores)
                     if len(s)]
            self.scores = np.concatenate(parts) if parts else []
        else:
            self.scores += other.scores


@dataclass(frozen=True)
class Estimate:
    """One estimated metric of a set of rows."""

    value: float
    sampling_error: float  # standard deviation of the realized value around ``value`` if the calibration holds
    rows: int
    influence: np.ndarray  # per row: the estimate's influence function (its std is the profile's spread)


def estimate(calibration: Calibration, y_pred: Sequence[Any], scores: Sequence[Sequence[float]] | np.ndarray,
             ) -> dict[str, Estimate]:
    """Every estimated metric of rows with predicted labels ``y_pred`` and raw class scores ``scores``.

    Rows without a score for every class, with a non-finite score or with a prediction outside the classes are
    left out (``Estimate.rows`` counts the rest). No rows: no estimates.
    """
    classes = calibration.classes
    index = {c: j for j, c in enumerate(classes)}
    try:  # each distinct prediction looked up once (a window has a few classes and 10^5 rows)
        lookup = {v: index.get(str(v), -1) for v in set(y_pred)}
        predicted = np.fromiter(map(lookup.__getitem__, y_pred), dtype=np.int64, count=len(y_pred))
    except TypeError:  # unhashable predictions
        predicted = np.asarray([index.get(str(v), -1) for v in y_pred], dtype=np.int64)
    raw = np.asarray(scores, dtype=np.float64)
    if predicted.size == 0 or raw.ndim != 2 or raw.shape != (predicted.size, len(classes)):
        return {}
    keep = (predicted >= 0) & np.isfinite(raw).all(axis=1)
    # One canonical row order, so that the sums (and the results, to the last bit) do not depend on the order the
    # rows came in: a file sorted or not, the processor's store.
    order = np.lexsort((*raw[keep].T[::-1], predicted[keep]))
    predicted, raw = predicted[keep][order], raw[keep][order]
    n = predicted.size
    if n == 0:
        return {}
    probabilities = calibration.probabilities(raw)
    confusion = np.zeros((len(classes), len(classes)))  # [true class, predicted class], expected counts
    np.add.at(confusion.T, predicted, probabilities)
    out: dict[str, Estimate] = {}
    for metric in METRICS[:-1]:
        value, gradient = _confusion_metric(metric, confusion, calibration.binary)
        per_row = gradient[:, predicted].T  # d metric / d (row i is of class t), shape (rows, classes)
        out[metric] = Estimate(value, _standard_error(probabilities, per_row), n,
                               n * np.sum(probabilities * per_row, axis=1))
    out["roc_auc"] = _roc_auc(probabilities, raw, calibration.binary)
    return out


def _standard_error(probabilities: np.ndarray, gradient: np.ndarray) -> float:
    """sqrt of sum over rows of Var(gradient[i, true class of i]) when the class is drawn from the row's
    probabilities: the delta-method standard error of a function of the rows' one-hot true classes."""
    mean = np.sum(probabilities * gradient, axis=1)
    variance = float(np.sum(probabilities * gradient**2) - np.sum(mean**2))
    return math.sqrt(max(variance, 0.0))


def _confusion_metric(metric: str, confusion: np.ndarray, binary: bool) -> tuple[float, np.ndarray]:
    """A metric of a confusion matrix of counts and its gradient with respect to each cell (the total fixed).

    A ratio with a zero denominator is 0 with a zero gradient (scikit-learn's ``zero_division`` default)."""
    size = confusion.shape[0]
    total = float(confusion.sum())
    if metric == "accuracy":
        return float(np.trace(confusion)) / total, np.eye(size) / total
    values, gradients = [], []
    for k in ([1] if binary else range(size)):
        true_is = np.zeros((size, size))
        true_is[k, :] = 1.0  # cells whose true class is k
        predicted_is = true_is.T.copy()  # cells whose predicted class is k
        cell = np.zeros((size, size))
        cell[k, k] = 1.0
        tp = float(confusion[k, k])
        actual, predicted = float(confusion[k].sum()), float(confusion[:, k].sum())
        if metric == "precision":
            numerator, d_numerator, denominator, d_denominator = tp, cell, predicted, predicted_is
        elif metric == "recall":
            numerator, d_numerator, denominator, d_denominator = tp, cell, actual, true_is
        elif metric == "specificity":
            negatives = total - actual
            numerator = negatives - predicted + tp
            d_numerator = -true_is - predicted_is + cell
            denominator, d_denominator = negatives, -true_is
        elif metric == "f1":
            numerator, d_numerator = 2 * tp, 2 * cell
            denominator, d_denominator = actual + predicted, true_is + predicted_is
        else:
            raise ValueError(f"no confusion-matrix metric {metric!r}")
        if denominator > 0:
            values.append(numerator / denominator)
            gradients.append((d_numerator * denominator - numerator * d_denominator) / denominator**2)
        else:
            values.append(0.0)
            gradients.append(np.zeros((size, size)))
    return float(np.mean(values)), np.mean(gradients, axis=0)


def _roc_auc(probabilities: np.ndarray, raw: np.ndarray, binary: bool) -> Estimate:
    """Estimated ROC-AUC: one against the rest for each class (the positive class of a binary model), macro."""
    n, size = probabilities.shape
    columns = [1] if binary else list(range(size))
    values, influences = [], []
    gradient = np.zeros((n, size))
    for k in columns:
        value, row_gradient, influence = _class_roc_auc(probabilities[:, k], raw[:, k])
        values.append(value)
        influences.append(influence)
        gradient[:, k] = row_gradient / len(columns)
    if any(math.isnan(v) for v in values):
        return Estimate(math.nan, math.nan, n, np.full(n, math.nan))
    return Estimate(float(np.mean(values)), _standard_error(probabilities, gradient), n,
                    np.mean(influences, axis=0))


def _class_roc_auc(p: np.ndarray, score: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(estimate, d realized AUC / d row i is positive, influence) of one class's rows: calibrated probability
    ``p`` of being positive, raw ``score``.

    Estimate: sum over pairs of p_i (1 - p_j) [s_i > s_j, 1/2 for ties] / (sum p · sum (1 - p)) — the
    trapezoidal area under the expected ROC curve with tied scores grouped, NannyML's estimator (each row pairs
    with itself as a tie, as there)."""
    n = p.size
    q = 1.0 - p
    positives, negatives = float(p.sum()), float(q.sum())
    if positives <= 0 or negatives <= 0:
        nan = np.full(n, math.nan)
        return math.nan, nan, nan
    _, group = np.unique(score, return_inverse=True)
    p_group, q_group = np.bincount(group, weights=p), np.bincount(group, weights=q)
    q_below = (np.cumsum(q_group) - q_group)[group] + 0.5 * q_group[group]  # sum_j q_j [s_i > s_j] (+ ties / 2)
    p_above = (positives - np.cumsum(p_group))[group] + 0.5 * p_group[group]  # sum_j p_j [s_j > s_i] (+ ties / 2)
    pairs = float(np.sum(p * q_below))
    value = pairs / (positives * negatives)
    # Realized AUC = U / (n1 n0), U over pairs of distinct rows; its gradient at the expected labels.
    u = pairs - 0.5 * float(np.sum(p * q))
    d_u = (q_below - 0.5 * q) - (p_above - 0.5 * p)
    denominator = positives * negatives
    d_denominator = negatives - positives
    row_gradient = (d_u * denominator - u * d_denominator) / denominator**2
    # Influence of a row on the estimate (a ratio of V-statistics): numerator pairs/n², denominator p̄ q̄.
    mean_p, mean_q = positives / n, negatives / n
    d_pairs = (p * q_below + q * p_above) / n - 2 * pairs / n**2
    d_product = mean_q * (p - mean_p) + mean_p * (q - mean_q)
    influence = (d_pairs - value * d_product) / (mean_p * mean_q)
    return value, row_gradient, influence


def calibrate(profile: ReferenceProfile, y_true: Sequence[Any], y_pred: Sequence[Any],
              scores: Sequence[Sequence[float]]) -> Calibration | None:
    """The calibration of a classification profile from its labelled reference rows, with the reference
    estimates and spreads the thresholds need; None when the reference cannot be calibrated (a regression
    model, no scores, fewer than ``MIN_CALIBRATION_ROWS`` rows, a single class)."""
    if profile.task != "classification":
        return None
    calibration = fit_from_rows(profile.classes, y_true, scores, MIN_CALIBRATION_ROWS)
    if calibration is None:
        return None
    for metric, found in estimate(calibration, y_pred, scores).items():
        calibration.reference[metric] = found.value
        calibration.spread[metric] = float(np.std(found.influence))
    return calibration


def lower_threshold(calibration: Calibration, metric: str, rows: int,
                    reference_series: Sequence[Sequence[float | None]] = ()) -> float | None:
    """The lower threshold of an estimated metric over ``rows`` rows (None: no threshold for it).

    The reference estimate minus 3 standard deviations: ``spread² / rows`` plus, with at least three reference
    windows, the part of their estimates' variance that their sampling error does not explain."""
    center, spread = calibration.reference.get(metric), calibration.spread.get(metric)
    if center is None or spread is None or rows <= 0 or not math.isfinite(center):
        return None
    variance = spread**2 / rows
    found = [(float(v), int(n)) for v, _, n in reference_series if v is not None and n and math.isfinite(v)]
    if len(found) >= BAND_WINDOWS:
        values = np.asarray([v for v, _ in found])
        expected = float(np.mean([spread**2 / n for _, n in found]))
        variance += max(float(np.var(values, ddof=1)) - expected, 0.0)
    return min(max(center - SIGMAS * math.sqrt(variance), 0.0), 1.0)
