"""Realized performance from joined labels, equal to scikit-learn's definitions (numpy only).

Classification: accuracy, precision, recall, F1, specificity, ROC-AUC, log-loss; binary metrics are for the
positive class, multiclass ones are macro averages over the classes present in the labels and predictions (as
scikit-learn does; a class with an undefined ratio counts 0, scikit-learn's ``zero_division`` default).
Regression: MAE, MSE, RMSE, MAPE (a fraction, as scikit-learn), R² (1 for a perfect fit of constant labels, 0 for
an imperfect one, as scikit-learn's ``force_finite``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "specificity", "roc_auc", "log_loss")
REGRESSION_METRICS = ("mae", "mse", "rmse", "mape", "r2")
_EPS = np.finfo(np.float64).eps


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
    truth = np.asarray([str(v) for v in y_true], dtype=object)
    predicted = np.asarray([str(v) for v in y_pred], dtype=object)
    if truth.size == 0:
        return {}
    out: dict[str, float] = {"accuracy": float(np.mean(truth == predicted))}
    binary = len(classes) == 2
    present = sorted(set(truth.tolist()) | set(predicted.tolist()))
    labels = [classes[1]] if binary else present
    tp = np.array([np.sum((truth == c) & (predicted == c)) for c in labels], dtype=np.float64)
    fp = np.array([np.sum((truth != c) & (predicted == c)) for c in labels], dtype=np.float64)
    fn = np.array([np.sum((truth == c) & (predicted != c)) for c in labels], dtype=np.float64)
    tn = truth.size - tp - fp - fn
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    out["precision"] = float(precision.mean())
    out["recall"] = float(recall.mean())
    out["f1"] = float(_ratio(2 * tp, 2 * tp + fp + fn).mean())
    out["specificity"] = float(_ratio(tn, tn + fp).mean())
    if scores is not None and scores.shape[0] == truth.size and scores.shape[1] == len(classes):
        if binary:
            out["roc_auc"] = binary_roc_auc(truth == classes[1], scores[:, 1])
        else:
            per_class = [binary_roc_auc(truth == c, scores[:, j]) for j, c in enumerate(classes)]
            out["roc_auc"] = float(np.mean(per_class)) if not any(math.isnan(v) for v in per_class) else math.nan
        onehot = np.stack([truth == c for c in classes], axis=1).astype(np.float64)
        if onehot.sum(axis=1).min() == 1:  # every true label is a known class
            clipped = np.clip(scores, _EPS, 1 - _EPS)
            out["log_loss"] = float(np.mean(-np.sum(onehot * np.log(clipped), axis=1)))
    return out


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    truth = np.asarray(y_true, dtype=np.float64)
    predicted = np.asarray(y_pred, dtype=np.float64)
    if truth.size == 0:
        return {}
    error = truth - predicted
    mse = float(np.mean(error**2))
    residual = float(np.sum(error**2))
    total = float(np.sum((truth - truth.mean()) ** 2))
    if total > 0:
        r2 = 1.0 - residual / total
    else:
        r2 = 1.0 if residual == 0 else 0.0
    return {"mae": float(np.mean(np.abs(error))), "mse": mse, "rmse": math.sqrt(mse),
            "mape": float(np.mean(np.abs(error) / np.maximum(np.abs(truth), _EPS))), "r2": r2}
