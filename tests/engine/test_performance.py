"""Realized performance equals scikit-learn's, to 1e-9."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from otel_mlmon.engine.performance import classification_metrics, regression_metrics


def _specificity(y, p, labels):
    values = []
    for c in labels:
        tn = np.sum((y != c) & (p != c))
        fp = np.sum((y != c) & (p == c))
        values.append(tn / (tn + fp) if tn + fp else 0.0)
    return float(np.mean(values))


@pytest.mark.parametrize("seed", range(5))
def test_binary_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 400)
    s = np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1)
    p = (s > 0.5).astype(int)
    ours = classification_metrics(y, p, np.column_stack([1 - s, s]), ["0", "1"])
    assert ours["accuracy"] == pytest.approx(sk.accuracy_score(y, p), abs=1e-9)
    assert ours["precision"] == pytest.approx(sk.precision_score(y, p, zero_division=0), abs=1e-9)
    assert ours["recall"] == pytest.approx(sk.recall_score(y, p), abs=1e-9)
    assert ours["f1"] == pytest.approx(sk.f1_score(y, p), abs=1e-9)
    assert ours["specificity"] == pytest.approx(sk.recall_score(y, p, pos_label=0), abs=1e-9)
    assert ours["roc_auc"] == pytest.approx(sk.roc_auc_score(y, s), abs=1e-9)
    assert ours["log_loss"] == pytest.approx(sk.log_loss(y, s), abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_multiclass_macro_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    classes = ["cat", "dog", "eel", "fox"]
    y = rng.choice(classes, 500)
    scores = rng.dirichlet(np.ones(4), 500)
    p = np.array(classes)[scores.argmax(1)]
    ours = classification_metrics(y, p, scores, classes)
    kw = {"average": "macro", "zero_division": 0}
    assert ours["accuracy"] == pytest.approx(sk.accuracy_score(y, p), abs=1e-9)
    assert ours["precision"] == pytest.approx(sk.precision_score(y, p, **kw), abs=1e-9)
    assert ours["recall"] == pytest.approx(sk.recall_score(y, p, **kw), abs=1e-9)
    assert ours["f1"] == pytest.approx(sk.f1_score(y, p, **kw), abs=1e-9)
    assert ours["specificity"] == pytest.approx(_specificity(y, p, classes), abs=1e-9)
    assert ours["roc_auc"] == pytest.approx(sk.roc_auc_score(y, scores, multi_class="ovr", labels=classes), abs=1e-9)
    assert ours["log_loss"] == pytest.approx(sk.log_loss(y, scores, labels=classes), abs=1e-9)


def test_class_never_predicted_counts_zero_like_sklearn() -> None:
    y = np.array(["a", "b", "c", "c"])
    p = np.array(["a", "a", "c", "c"])
    ours = classification_metrics(y, p, None, ["a", "b", "c"])
    assert ours["precision"] == pytest.approx(sk.precision_score(y, p, average="macro", zero_division=0))
    assert ours["f1"] == pytest.approx(sk.f1_score(y, p, average="macro", zero_division=0))
    assert "roc_auc" not in ours and "log_loss" not in ours


def test_single_class_window_has_no_auc() -> None:
    ours = classification_metrics([1, 1, 1], [1, 0, 1], np.array([[0.1, 0.9], [0.6, 0.4], [0.2, 0.8]]), ["0", "1"])
    assert np.isnan(ours["roc_auc"]) and ours["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", range(5))
def test_regression_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(3, 2, 300)
    y[0] = 0.0  # MAPE's epsilon case
    p = y + rng.normal(0, 0.5, 300)
    ours = regression_metrics(y, p)
    assert ours["mae"] == pytest.approx(sk.mean_absolute_error(y, p), abs=1e-9)
    assert ours["mse"] == pytest.approx(sk.mean_squared_error(y, p), abs=1e-9)
    assert ours["rmse"] == pytest.approx(sk.root_mean_squared_error(y, p), abs=1e-9)
    assert ours["mape"] == pytest.approx(sk.mean_absolute_percentage_error(y, p), rel=1e-9)
    assert ours["r2"] == pytest.approx(sk.r2_score(y, p), abs=1e-9)


def test_r2_of_constant_labels_matches_sklearn() -> None:
    assert regression_metrics([2.0, 2.0], [2.0, 2.0])["r2"] == sk.r2_score([2.0, 2.0], [2.0, 2.0])
    assert regression_metrics([2.0, 2.0], [1.0, 2.0])["r2"] == sk.r2_score([2.0, 2.0], [1.0, 2.0])
    assert regression_metrics([], []) == {} and classification_metrics([], [], None, ["a", "b"]) == {}
