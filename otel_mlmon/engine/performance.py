"""Realized performance from joined labels, equal to scikit-learn's definitions, and its verdicts (numpy/scipy).

Classification: accuracy, precision, recall, F1, specificity, ROC-AUC, log-loss; binary metrics are for the
positive class, multiclass ones are macro averages over the classes present in the labels and predictions (as
scikit-learn does; a class with an undefined ratio counts 0, scikit-learn's ``zero_division`` default).
Regression: MAE, MSE, RMSE, MAPE (a fraction, as scikit-learn), R² (1 for a perfect fit of constant labels, 0 for
an imperfect one, as scikit-learn's ``force_finite``).

Verdicts (``judge``): a metric alerts when it is worse than the reference by more than its sampling error and the
reference windows' own spread allow, on the side that is worse (a drop of accuracy, a rise of an error). The
threshold is the one-sided 3-sigma quantile (0.135 %) of what the window's value would be if nothing had changed:

- Rates of a binary model (accuracy of any model, precision, recall, specificity) are binomial at the window's
  own denominators (rows; predicted positives; positives; negatives): the threshold is the exact quantile of the
  beta-binomial predictive distribution, whose rate is the reference's (Jeffreys' posterior, so a reference
  recall of 1.0 does not make one miss an alert) widened by the between-window variance of the reference.
- F1, macro averages, ROC-AUC (DeLong), log-loss and the regression errors have an analytic standard error from
  the window's own rows (a mean's, or by linearization); the variance of the reference's value (the same
  per-row variance over the reference's rows) and the between-window variance are added. Errors and log-loss
  are judged on a log scale (they are positive and skewed).
- The between-window variance is the variance of the reference windows' values less what their sampling error
  explains (0 with one reference window, which is a valid reference: the sampling error alone decides).

Thresholds stay inside each metric's range (``RANGES``); the side that cannot alert has no threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from scipy.stats import rankdata

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "specificity", "roc_auc", "log_loss")
REGRESSION_METRICS = ("mae", "mse", "rmse", "mape", "r2")
_EPS = np.finfo(np.float64).eps
HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall", "f1", "specificity", "roc_auc", "r2"})
RANGES: dict[str, tuple[float, float]] = {
    **{name: (0.0, 1.0) for name in ("accuracy", "precision", "recall", "f1", "specificity", "roc_auc")},
    **{name: (0.0, math.inf) for name in ("log_loss", "mae", "mse", "rmse", "mape")},
    "r2": (-math.inf, 1.0)}
_LOG_SCALE = frozenset({"log_loss", "mae", "mse", "rmse", "mape"})
SIGMAS = 3.0
ALPHA = float(stats.norm.sf(SIGMAS))  # one-sided tail of the threshold: 0.135 %
_TIE = 1e-6  # relative: sums of the pmf this close to a quantile's level are settled by scipy (``_quantile``)


@dataclass(frozen=True)
class Evidence:
    """A metric's value in one window and what its sampling error rests on: binomial rates carry their count
    and denominator, other metrics a standard error (None: unknown)."""

    value: float
    standard_error: float | None = None
    successes: int | None = None
    trials: int | None = None


@dataclass(frozen=True)
class Reference:
    """What the reference says of one metric: its value over the whole reference (``center``), its values and
    labeled rows in the reference windows a spread is drawn from, and the labeled rows of the whole reference."""

    center: float
    values: tuple[float, ...] = ()
    sizes: tuple[int, ...] = ()
    rows: int = 0

    @classmethod
    def from_series(cls, center: float | None, series: Sequence[Sequence[float | None]], rows: int,
                    min_rows: int) -> Reference | None:
        """From a profile's ``[value, p-value, n]`` per reference window: the windows of at least ``min_rows``
        labeled rows and half the median (a partial window is noisier). ``center`` None: their mean; ``rows`` 0:
        the windows' labeled rows."""
        known = [(float(v), int(n)) for v, _, n in series if v is not None and n and math.isfinite(float(v))]
        least = max(min_rows, 0.5 * float(np.median([n for _, n in known]))) if known else 0
        kept = [(v, n) for v, n in known if n >= least]
        if center is None or not math.isfinite(center):
            if not kept:
                return None
            center = float(np.mean([v for v, _ in kept]))
        return cls(float(center), tuple(v for v, _ in kept), tuple(n for _, n in kept),
                   rows or sum(n for _, n in known))


@dataclass(frozen=True)
class Verdict:
    lower: float | None
    upper: float | None
    alert: bool | None
    p_value: float | None


NO_VERDICT = Verdict(None, None, None, None)


def _between_windows(reference: Reference, unit_variance: float) -> float:
    """The reference windows' variance beyond their sampling error (``unit_variance`` per labeled row)."""
    if len(reference.values) < 2:
        return 0.0
    spread = float(np.var(reference.values, ddof=1))
    sampling = float(np.mean([unit_variance / n for n in reference.sizes]))
    return max(0.0, spread - sampling)


def _quantile(distribution: Any, trials: int, q: float) -> int:
    """``distribution.ppf(q)`` of a frozen scipy distribution on 0..``trials``: the smallest k with
    ``cdf(k) >= q``, the same integer as scipy's. scipy's generic discrete ``ppf`` bisects with a ``cdf`` that sums
    the pmf from 0 at every step (~20 sums: 0.37 s at 250k trials, a third of a 250k-row window's evaluation in the
    processor). Here one vectorized pmf over the support, summed in order, finds k (~5 times cheaper). Its sums
    differ from scipy's (pairwise) by less than trials x 2^-53 relative, far below ``_TIE``: only a candidate whose
    sums lie within ``_TIE`` of ``q`` is settled with scipy's own ``cdf``."""
    cumulative = np.cumsum(distribution.pmf(np.arange(trials + 1)))
    k = min(int(np.searchsorted(cumulative, q)), trials)
    if cumulative[k] < q * (1 + _TIE) or (k > 0 and cumulative[k - 1] >= q * (1 - _TIE)):
        while k < trials and distribution.cdf(k) < q:
            k += 1
        while k > 0 and distribution.cdf(k - 1) >= q:
            k -= 1
    return k


def judge(metric: str, evidence: Evidence, labeled_rows: int, reference: Reference) -> Verdict:
    """The threshold, p-value (one-sided, towards worse) and alert of an analysis window's metric."""
    value = evidence.value
    low, high = RANGES.get(metric, (-math.inf, math.inf))
    if not math.isfinite(value) or not math.isfinite(reference.center):
        return NO_VERDICT
    center = min(max(reference.center, low), high)
    higher = metric in HIGHER_IS_BETTER
    n = max(labeled_rows, 1)
    if evidence.trials is not None and evidence.successes is not None and higher:
        trials = evidence.trials
        if trials == 0:
            return NO_VERDICT  # a ratio with no denominator (scikit-learn's 0): nothing to judge
        between = _between_windows(reference, center * (1 - center) * n / trials)
        # Jeffreys' posterior of the reference rate over its denominators (estimated at this window's share).
        reference_trials = reference.rows * trials / n
        mean = (center * reference_trials + 0.5) / (reference_trials + 1)
        variance = mean * (1 - mean) / (reference_trials + 2) + between
        size = max(mean * (1 - mean) / variance - 1, 1e-9)
        predictive = stats.betabinom(trials, mean * size, (1 - mean) * size)
        lower = _quantile(predictive, trials, ALPHA) / trials
        p_value = float(predictive.cdf(evidence.successes))
        return Verdict(lower, None, value < lower, min(p_value, 1.0))
    if evidence.standard_error is None or not math.isfinite(evidence.standard_error):
        return NO_VERDICT
    unit = evidence.standard_error**2 * n
    # The reference value's own sampling error is per labelled row over the reference's labelled rows, however
    # many the window has (it was divided by the larger of the two: a 300-row reference judged 2,000-row windows as
    # if it had 2,000 rows, and a lucky reference made every window alert).
    variance = evidence.standard_error**2 + unit / max(reference.rows, 1) + _between_windows(reference, unit)
    sigma = math.sqrt(variance)
    if metric in _LOG_SCALE and center > 0:
        relative = sigma / center
        upper = center * math.exp(min(SIGMAS * relative, 700.0))  # exp(700) ~ 1e304: past it, no finite bound
        # (a regression target near 0 in a window: MAPE of 411 against 0.15 overflowed and stopped the whole run)
        if relative > 0:
            p_value = float(stats.norm.sf(math.log(value / center) / relative)) if value > 0 else 1.0
        else:
            p_value = 0.0 if value > center else 1.0
        return Verdict(None, upper, value > upper, p_value)
    if sigma > 0:
        z = (value - center) / sigma
        p_value = float(stats.norm.cdf(z) if higher else stats.norm.sf(z))
    else:
        p_value = 0.0 if (value < center if higher else value > center) else 1.0
    if higher:
        lower = max(low, center - SIGMAS * sigma)
        return Verdict(lower, None, value < lower, p_value)
    upper = min(high, center + SIGMAS * sigma)
    return Verdict(None, upper, value > upper, p_value)


def judge_reference(metric: str, value: float, reference: Reference) -> Verdict:
    """A reference window's verdict, from what a profile keeps of it (its value): against the spread of the
    reference windows (a prediction interval); with one reference window, the window is the reference."""
    low, high = RANGES.get(metric, (-math.inf, math.inf))
    if not math.isfinite(value) or not math.isfinite(reference.center):
        return NO_VERDICT
    center = min(max(reference.center, low), high)
    k = len(reference.values)
    sigma = math.sqrt(float(np.var(reference.values, ddof=1)) * (1 + 1 / k)) if k >= 2 else 0.0
    if metric in HIGHER_IS_BETTER:
        lower = max(low, center - SIGMAS * sigma)
        return Verdict(lower, None, value < lower, None)
    upper = min(high, center + SIGMAS * sigma)
    return Verdict(None, upper, value > upper, None)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=np.float64),
                     where=denominator > 0)


def binary_roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count 1/2), NaN when only one class is present."""
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def classification_metrics(y_true: Sequence[Any], y_pred: Sequence[Any], scores: np.ndarray | None,
                           classes: Sequence[str]) -> dict[str, float]:
    """Metrics of one window. Labels are compared as strings; ``scores`` is (rows, len(classes)) or None.

    Args:
        y_true: true labels.
        y_pred: predicted labels.
        scores: class probabilities in the order of ``classes`` (binary: both columns).
        classes: all classes of the model, sorted; the last is the positive class of a binary model.
    """
    return {name: e.value for name, e in classification_evidence(y_true, y_pred, scores, classes).items()}


def classification_evidence(y_true: Sequence[Any], y_pred: Sequence[Any], scores: np.ndarray | None,
                            classes: Sequence[str]) -> dict[str, Evidence]:
    """``classification_metrics`` with each value's sampling error (see ``Evidence``)."""
    truth = np.asarray([str(v) for v in y_true], dtype=object)
    predicted = np.asarray([str(v) for v in y_pred], dtype=object)
    if truth.size == 0:
        return {}
    correct = int(np.sum(truth == predicted))
    out: dict[str, Evidence] = {"accuracy": Evidence(float(np.mean(truth == predicted)), successes=correct,
                                                     trials=int(truth.size))}
    binary = len(classes) == 2
    present = sorted(set(truth.tolist()) | set(predicted.tolist()))
    labels = [classes[1]] if binary else present
    tp = np.array([np.sum((truth == c) & (predicted == c)) for c in labels], dtype=np.float64)
    fp = np.array([np.sum((truth != c) & (predicted == c)) for c in labels], dtype=np.float64)
    fn = np.array([np.sum((truth == c) & (predicted != c)) for c in labels], dtype=np.float64)
    tn = truth.size - tp - fp - fn
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    values = {"precision": float(precision.mean()), "recall": float(recall.mean()),
              "f1": float(_ratio(2 * tp, 2 * tp + fp + fn).mean()),
              "specificity": float(_ratio(tn, tn + fp).mean())}
    # Rows of each confusion cell (true, predicted) over ``present``: the per-row terms of the linearized errors.
    index = {c: i for i, c in enumerate(present)}
    cells = np.zeros((len(present), len(present)), dtype=np.float64)
    np.add.at(cells, ([index[v] for v in truth.tolist()], [index[v] for v in predicted.tolist()]), 1.0)
    for name, value in values.items():
        if binary and name != "f1":
            successes, trials = {"precision": (tp[0], tp[0] + fp[0]), "recall": (tp[0], tp[0] + fn[0]),
                                 "specificity": (tn[0], tn[0] + fp[0])}[name]
            out[name] = Evidence(value, successes=int(successes), trials=int(trials))
        else:
            out[name] = Evidence(value, standard_error=_macro_ratio_error(name, cells, present, labels))
    if scores is not None and scores.shape[0] == truth.size and scores.shape[1] == len(classes):
        if binary:
            auc, variance = _roc_auc_and_variance(truth == classes[1], scores[:, 1])
        else:
            per_class = [_roc_auc_and_variance(truth == c, scores[:, j]) for j, c in enumerate(classes)]
            auc = float(np.mean([a for a, _ in per_class])) if not any(math.isnan(a) for a, _ in per_class) \
                else math.nan
            variance = sum(v for _, v in per_class) / len(classes) ** 2
        out["roc_auc"] = Evidence(auc, standard_error=math.sqrt(variance) if math.isfinite(variance) else None)
        onehot = np.stack([truth == c for c in classes], axis=1).astype(np.float64)
        if onehot.sum(axis=1).min() == 1:  # every true label is a known class
            clipped = np.clip(scores, _EPS, 1 - _EPS)
            losses = _sorted(-np.sum(onehot * np.log(clipped), axis=1))
            out["log_loss"] = Evidence(float(np.mean(losses)), standard_error=_mean_error(losses))
    return out


def _sorted(values: np.ndarray) -> np.ndarray:
    """``values`` in order: sums of them are then the same whatever the rows' order (a shuffled file and a
    stream give bit-identical values, thresholds and p-values)."""
    return np.sort(values, kind="stable")


def _mean_error(values: np.ndarray) -> float:
    """Standard error of the mean of ``values`` (sorted)."""
    return float(np.std(values, ddof=1) / math.sqrt(values.size)) if values.size > 1 else math.inf


def _macro_ratio_error(name: str, cells: np.ndarray, present: list[str], labels: list[str]) -> float:
    """Standard error of a (macro-averaged) ratio metric by linearization: each class's ratio A/B of per-row
    terms has the influence (a - r b) / mean(b) per row; the macro average's influence is their mean, and the
    error is the root mean square influence over sqrt(rows). ``cells`` counts rows per (true, predicted) cell."""
    n = cells.sum()
    size = len(present)
    true_class, predicted_class = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    influence = np.zeros_like(cells)
    for label in labels:
        c = present.index(label) if label in present else -1
        is_tp = (true_class == c) & (predicted_class == c)
        is_fp = (true_class != c) & (predicted_class == c)
        is_fn = (true_class == c) & (predicted_class != c)
        is_tn = ~(is_tp | is_fp | is_fn)
        a, b = {"precision": (is_tp, is_tp + is_fp), "recall": (is_tp, is_tp + is_fn),
                "specificity": (is_tn, is_tn + is_fp),
                "f1": (2.0 * is_tp, 2.0 * is_tp + is_fp + is_fn)}[name]
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        total = float(np.sum(b * cells))
        if total > 0:
            ratio = float(np.sum(a * cells)) / total
            influence += (a - ratio * b) / (total / n)
    influence /= len(labels)
    return float(math.sqrt(np.sum(cells * influence**2)) / n)


def _roc_auc_and_variance(positive: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """ROC-AUC and DeLong's variance of it (from the placement values), NaN with one class only.

    References:
        DeLong, DeLong, Clarke-Pearson. "Comparing the areas under two or more correlated receiver operating
        characteristic curves: a nonparametric approach." Biometrics 44(3), 1988.
    """
    auc = binary_roc_auc(positive, scores)
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    if math.isnan(auc):
        return auc, math.nan
    ranks = rankdata(scores)
    # A positive's placement: the share of negatives scored below it (ties 1/2); a negative's: positives above.
    positive_placement = (ranks[positive] - rankdata(scores[positive])) / n_negative
    negative_placement = 1.0 - (ranks[~positive] - rankdata(scores[~positive])) / n_positive
    variance = 0.0
    for placements in (positive_placement, negative_placement):
        if placements.size > 1:
            variance += float(np.var(_sorted(placements), ddof=1)) / placements.size
    return auc, variance


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    return {name: e.value for name, e in regression_evidence(y_true, y_pred).items()}


def regression_evidence(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, Evidence]:
    """``regression_metrics`` with each value's standard error (of a mean; RMSE and R² by linearization)."""
    truth = np.asarray(y_true, dtype=np.float64)
    predicted = np.asarray(y_pred, dtype=np.float64)
    if truth.size == 0:
        return {}
    error = truth - predicted
    squared = error**2
    mse = float(np.mean(_sorted(squared)))
    residual = float(np.sum(_sorted(squared)))
    deviation = (truth - np.mean(_sorted(truth))) ** 2
    total = float(np.sum(_sorted(deviation)))
    if total > 0:
        r2 = 1.0 - residual / total
        r2_error = float(math.sqrt(np.sum(_sorted((squared - (residual / total) * deviation) ** 2))) / total)
    else:
        r2, r2_error = (1.0 if residual == 0 else 0.0), 0.0
    mse_error = _mean_error(_sorted(squared))
    relative = _sorted(np.abs(error) / np.maximum(np.abs(truth), _EPS))
    absolute = _sorted(np.abs(error))
    return {"mae": Evidence(float(np.mean(absolute)), standard_error=_mean_error(absolute)),
            "mse": Evidence(mse, standard_error=mse_error),
            "rmse": Evidence(math.sqrt(mse), standard_error=mse_error / (2 * math.sqrt(mse)) if mse > 0 else 0.0),
            "mape": Evidence(float(np.mean(relative)), standard_error=_mean_error(relative)),
            "r2": Evidence(r2, standard_error=r2_error)}


def window_evidence(task: str, classes: Sequence[str], y_true: Sequence[Any], y_pred: Sequence[Any],
                    scores: Sequence[Sequence[float]]) -> dict[str, Evidence]:
    """Every metric of a window's joined rows with its sampling error, for the model's task and classes."""
    if not len(y_true):
        return {}
    if task == "regression":
        return regression_evidence([float(v) for v in y_true], [float(v) for v in y_pred])
    array = np.asarray(scores, dtype=np.float64) if len(scores) else None
    return classification_evidence(y_true, y_pred, array, classes)
