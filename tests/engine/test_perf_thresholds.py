"""Performance verdicts from sampling error plus the reference windows' spread (issue 15, item 1).

Seeded concept drift is caught with one and two reference windows, stationary data of the same shape and the
breast-cancer case stay silent, thresholds stay inside each metric's range on the side that is worse, and the
errors behind them agree with scipy, scikit-learn and brute-force references.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as sk
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from otel_mlmon.engine.columns import build_profile, window_from_columns
from otel_mlmon.engine.evaluate import (
    LABELED_ROWS,
    LabeledRows,
    WindowData,
    evaluate_window,
    performance,
    reference_values,
)
from otel_mlmon.engine.performance import (
    ALPHA,
    HIGHER_IS_BETTER,
    RANGES,
    Evidence,
    Reference,
    _quantile,
    classification_evidence,
    judge,
    regression_evidence,
)
from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.engine.windows import WindowSpec


def _sea(rng: np.random.Generator, n: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """SEA-like concept: three uniform features on [0, 10], label x1 + x2 <= threshold, 6 % label noise."""
    x = rng.uniform(0, 10, (n, 3))
    y = (x[:, 0] + x[:, 1] <= threshold).astype(int)
    return x, np.where(rng.random(n) < 0.06, 1 - y, y)


def _columns(model, x: np.ndarray, y: np.ndarray | None = None) -> dict[str, np.ndarray]:
    score = model.predict_proba(x)[:, 1]
    columns = {"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "y_pred": model.predict(x), "y_score": score}
    if y is not None:
        columns["y"] = y
    return columns


def _window(profile, columns: dict[str, np.ndarray], index: int):
    """An analysis window of in-memory rows, every row labelled."""
    truth = columns.pop("y")
    window = window_from_columns(profile, columns, index)
    score = columns["y_score"]
    window.labeled = LabeledRows([str(v) for v in truth.tolist()], [str(v) for v in columns["y_pred"].tolist()],
                                 np.column_stack([1 - score, score]).tolist())
    return window


def _performance(results):
    return [r for r in results if r.kind == "performance"]


def _check_ranges(rows) -> None:
    for r in rows:
        low, high = RANGES[r.metric]
        for bound in (r.lower_threshold, r.upper_threshold):
            assert bound is None or low <= bound <= high, (r.metric, bound)
        if r.alert is not None:  # the side that is worse, and only it
            if r.metric in HIGHER_IS_BETTER:
                assert r.upper_threshold is None and r.lower_threshold is not None
                assert r.alert == (r.value < r.lower_threshold)
            else:
                assert r.lower_threshold is None and r.upper_threshold is not None
                assert r.alert == (r.value > r.upper_threshold)


@pytest.mark.parametrize("reference_windows", [1, 2])
def test_concept_drift_alerts_in_every_drifted_window_and_stationary_windows_never(reference_windows) -> None:
    """Issue 15: a 10,000-row reference in 2 windows of 5,000 (and one of 5,000) gave no verdict at all."""
    rng = np.random.default_rng(15)
    model = LogisticRegression().fit(*_sea(rng, 5000, 8.0))
    x, y = _sea(rng, 5000 * reference_windows, 8.0)
    profile, _ = build_profile(_columns(model, x, y), WindowSpec(chunk_size=5000), model="sea",
                               prediction_column="y_pred", score_columns={"1": "y_score"}, target_column="y",
                               classes=["0", "1"])
    assert profile.reference_performance["accuracy"] > 0.92
    for index in range(4):
        rows = _performance(evaluate_window(profile, _window(profile, _columns(model, *_sea(rng, 5000, 8.0)),
                                                             index)))
        assert len(rows) == 7 and all(r.alert is False for r in rows), [(r.metric, r.value) for r in rows]
        _check_ranges(rows)
    for index in range(4, 8):
        rows = _performance(evaluate_window(profile, _window(profile, _columns(model, *_sea(rng, 5000, 14.0)),
                                                             index)))
        accuracy = next(r for r in rows if r.metric == "accuracy")
        assert accuracy.value < 0.6 and accuracy.alert is True
        assert accuracy.upper_threshold is None and accuracy.value < accuracy.lower_threshold  # the side crossed
        assert accuracy.p_value is not None and accuracy.p_value < ALPHA
        _check_ranges(rows)


def _cancer_table(model, data, rows: np.ndarray) -> dict[str, np.ndarray]:
    columns = {f"f{j}": data.data[rows, j] for j in range(5)}
    columns.update({"y_pred": model.predict(data.data[rows]), "y_score": model.predict_proba(data.data[rows])[:, 1],
                    "y": data.target[rows]})
    return columns


def test_breast_cancer_windows_of_70_rows_give_no_false_alert() -> None:
    """Issue 15: recall 1.0 in every reference window made a band [1, 1]; one missed positive alerted."""
    data = load_breast_cancer()
    checked = 0
    for seed in range(6):
        order = np.random.default_rng(seed).permutation(len(data.target))
        train, reference, analysis = order[:219], order[219:429], order[429:569]
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(data.data[train],
                                                                                        data.target[train])
        profile, _ = build_profile(_cancer_table(model, data, reference), WindowSpec(chunk_size=70), model="cancer",
                                   prediction_column="y_pred", score_columns={"1": "y_score"}, target_column="y",
                                   classes=["0", "1"])
        for index, begin in enumerate(range(0, 140, 70)):
            window = _window(profile, _cancer_table(model, data, analysis[begin:begin + 70]), index)
            rows = _performance(evaluate_window(profile, window))
            assert rows and not any(r.alert for r in rows), [(r.metric, r.value, r.lower_threshold,
                                                              r.upper_threshold) for r in rows if r.alert]
            assert all(r.alert is False for r in rows if math.isfinite(r.value))
            _check_ranges(rows)
            checked += len(rows)
    assert checked == 6 * 2 * 7


def test_a_perfect_reference_recall_does_not_make_one_miss_an_alert() -> None:
    """Three 70-row reference windows with recall 1.0 (44 positives each) and a window that misses one."""
    reference = Reference(1.0, (1.0, 1.0, 1.0), (70, 70, 70), 210)
    one_miss = judge("recall", Evidence(43 / 44, successes=43, trials=44), 70, reference)
    assert one_miss.alert is False and 0 <= one_miss.lower < 43 / 44 and one_miss.upper is None
    many = judge("recall", Evidence(30 / 44, successes=30, trials=44), 70, reference)
    assert many.alert is True and many.p_value < ALPHA


@pytest.mark.parametrize(("center", "trials", "successes"), [(0.9, 500, 430), (0.6, 70, 30), (0.99, 5000, 4930)])
def test_binomial_threshold_equals_scipys_binomial_quantile_for_a_large_reference(center, trials, successes) -> None:
    """With a reference of a billion rows the predictive is the binomial at the reference rate (scipy.stats)."""
    verdict = judge("accuracy", Evidence(successes / trials, successes=successes, trials=trials), trials,
                    Reference(center, (), (), 10**9))
    assert verdict.lower == pytest.approx(stats.binom.ppf(ALPHA, trials, center) / trials, abs=1e-12)
    assert verdict.p_value == pytest.approx(stats.binom.cdf(successes, trials, center), rel=1e-3)
    assert verdict.alert == (stats.binom.cdf(successes, trials, center) < ALPHA)


def test_between_window_spread_widens_the_threshold() -> None:
    sampling = judge("accuracy", Evidence(0.88, successes=880, trials=1000), 1000,
                     Reference(0.9, (0.9, 0.9, 0.9), (1000, 1000, 1000), 3000))
    spread = judge("accuracy", Evidence(0.88, successes=880, trials=1000), 1000,
                   Reference(0.9, (0.86, 0.9, 0.94), (1000, 1000, 1000), 3000))
    assert spread.lower < sampling.lower < 0.9


def _delong_brute_force(positive: np.ndarray, scores: np.ndarray) -> float:
    """DeLong's variance from the pairwise kernel, O(n^2), as the 1988 paper writes it."""
    pos, neg = scores[positive], scores[~positive]
    kernel = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = kernel.mean(axis=1), kernel.mean(axis=0)
    return float(np.var(v10, ddof=1) / pos.size + np.var(v01, ddof=1) / neg.size)


def test_standard_errors_agree_with_brute_force_and_the_bootstrap_of_sklearns_metrics() -> None:
    rng = np.random.default_rng(3)
    n = 400
    y = rng.integers(0, 2, n)
    s = np.round(np.clip(0.35 * y + rng.random(n) * 0.65, 0, 1), 2)  # rounded: ties
    p = (s > 0.5).astype(int)
    found = classification_evidence(y, p, np.column_stack([1 - s, s]), ["0", "1"])
    assert found["roc_auc"].value == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    assert found["roc_auc"].standard_error == pytest.approx(math.sqrt(_delong_brute_force(y == 1, s)), rel=1e-9)
    assert found["recall"].successes == int(np.sum((y == 1) & (p == 1))) and found["recall"].trials == int(y.sum())
    boot = np.random.default_rng(0).integers(0, n, (600, n))
    f1 = np.std([sk.f1_score(y[b], p[b]) for b in boot])
    log_loss = np.std([sk.log_loss(y[b], s[b], labels=[0, 1]) for b in boot])
    assert found["f1"].standard_error == pytest.approx(f1, rel=0.1)
    assert found["log_loss"].standard_error == pytest.approx(log_loss, rel=0.1)
    classes = ["a", "b", "c"]
    truth = rng.choice(classes, n)
    predicted = np.where(rng.random(n) < 0.7, truth, rng.choice(classes, n))
    macro = classification_evidence(truth, predicted, None, classes)
    for name, function in (("f1", sk.f1_score), ("recall", sk.recall_score), ("precision", sk.precision_score)):
        spread = np.std([function(truth[b], predicted[b], average="macro") for b in boot])
        assert macro[name].standard_error == pytest.approx(spread, rel=0.1), name
    truth_r = rng.normal(3, 2, n)
    predicted_r = truth_r + rng.standard_t(5, n)
    regression = regression_evidence(truth_r, predicted_r)
    for name, function in (("r2", sk.r2_score), ("rmse", sk.root_mean_squared_error),
                           ("mae", sk.mean_absolute_error)):
        spread = np.std([function(truth_r[b], predicted_r[b]) for b in boot])
        assert regression[name].standard_error == pytest.approx(spread, rel=0.15), name


def _labeled(rng: np.random.Generator, task: str, classes: list[str], n: int, noise: float) -> LabeledRows:
    if task == "regression":
        truth = rng.gamma(2.0, 2.0, n)
        return LabeledRows(truth.tolist(), (truth + rng.normal(0, 0.5 + noise * 5, n)).tolist())
    scores = rng.dirichlet(np.ones(len(classes)) * 0.3, n)
    truth = [classes[rng.choice(len(classes), p=row)] if rng.random() > noise else classes[rng.integers(len(classes))]
             for row in scores]
    return LabeledRows(truth, [classes[i] for i in scores.argmax(1)], scores.tolist())


def test_every_threshold_of_every_metric_is_inside_its_range() -> None:
    """Binary, multiclass and regression windows, stationary and degraded, tiny and large, 1 to 4 windows."""
    rng = np.random.default_rng(9)
    for task, classes in (("classification", ["0", "1"]), ("classification", ["a", "b", "c"]), ("regression", [])):
        for reference_windows in (1, 4):
            for size in (30, 80, 2000):
                windows = [WindowData("reference", i, size, {}, _labeled(rng, task, classes, size, 0.0))
                           for i in range(reference_windows)]
                profile = ReferenceProfile("m", "", task, WindowSpec(chunk_size=size), {}, classes=classes,
                                           target_column="y",
                                           reference_windows=[{"index": w.index, "rows": w.rows,
                                                               "labeled_rows": len(w.labeled)} for w in windows])
                profile.reference_values = reference_values(profile, windows)
                everything = LabeledRows()
                for w in windows:
                    everything.extend(w.labeled)
                profile.reference_performance = performance(profile, everything)
                for noise in (0.0, 0.5, 1.0):
                    rows = _performance(evaluate_window(profile, WindowData("analysis", 0, size, {},
                                                                            _labeled(rng, task, classes, size,
                                                                                     noise))))
                    assert rows
                    _check_ranges(rows)


def test_a_window_too_small_for_a_verdict_says_why() -> None:
    rng = np.random.default_rng(4)
    model = LogisticRegression().fit(*_sea(rng, 2000, 8.0))
    profile, _ = build_profile(_columns(model, *_sea(rng, 1000, 8.0)), WindowSpec(chunk_size=500), model="sea",
                               prediction_column="y_pred", score_columns={"1": "y_score"}, target_column="y",
                               classes=["0", "1"])
    results = evaluate_window(profile, _window(profile, _columns(model, *_sea(rng, 12, 14.0)), 0))
    reason = [r for r in results if r.metric == LABELED_ROWS]
    assert len(reason) == 1 and reason[0].value == 12 and reason[0].lower_threshold == 30 and reason[0].alert is None
    assert reason[0].kind == "data_quality" and reason[0].column == "y"
    rows = _performance(results)
    assert len(rows) == 7 and all(r.alert is None and r.lower_threshold is None and r.upper_threshold is None
                                  for r in rows)
    enough = evaluate_window(profile, _window(profile, _columns(model, *_sea(rng, 60, 8.0)), 1))
    assert [(r.value, r.alert) for r in enough if r.metric == LABELED_ROWS] == [(60, False)]


def test_the_beta_binomial_quantile_is_scipys_ppf() -> None:
    """``_quantile`` (one pmf over the support, summed in order) gives the very integer scipy's bisecting ``ppf``
    gives, over seeded shapes: small and large trials, rates near 0 and 1, concentrations from 0.1 to 10^6."""
    rng = np.random.default_rng(7)
    shapes = [(int(n), float(m), float(s)) for n, m, s in zip(
        rng.integers(1, 400, 150), rng.uniform(0.005, 0.999, 150), 10 ** rng.uniform(-1, 6, 150))]
    shapes += [(int(n), float(m), float(s)) for n, m, s in zip(
        rng.integers(1_000, 60_000, 8), rng.uniform(0.05, 0.99, 8), 10 ** rng.uniform(0, 6, 8))]
    shapes += [(1, 0.5, 1.0), (2, 0.9, 3.0), (10, 0.99, 1e6), (44, 0.99, 1e9)]
    for trials, mean, size in shapes:
        predictive = stats.betabinom(trials, mean * size, (1 - mean) * size)
        for q in (ALPHA, 0.05, 0.5):
            assert _quantile(predictive, trials, q) == int(predictive.ppf(q)), (trials, mean, size, q)


def test_an_exploding_error_metric_gives_a_verdict_not_an_overflow() -> None:
    """A window whose regression target is near 0 (MAPE 411 against a reference's 0.15) stopped `mlmon evaluate`
    with OverflowError in the log-scale threshold: it gets a verdict (its own error is as large as its value, so
    not an alert), and a precise one alerts."""
    verdict = judge("mape", Evidence(411.0, standard_error=400.0), 500, Reference(0.154, rows=20_000))
    assert verdict.alert is False and verdict.upper is not None and math.isfinite(verdict.upper)
    assert judge("mape", Evidence(411.0, standard_error=0.01), 500, Reference(0.154, rows=20_000)).alert is True


def test_a_reference_smaller_than_the_window_widens_the_threshold_by_its_own_sampling_error() -> None:
    """The reference value's sampling error is per row over the reference's rows: with 300 reference rows a
    2,000-row window's threshold is wider than with 20,000 (it was the same: the error was sized at the window's
    rows whenever the reference had fewer)."""
    evidence = Evidence(0.80, standard_error=0.01)
    small = judge("roc_auc", evidence, 2000, Reference(0.84, rows=300))
    large = judge("roc_auc", evidence, 2000, Reference(0.84, rows=20_000))
    assert small.lower is not None and large.lower is not None and small.lower < large.lower
    assert large.alert is True and small.alert is False  # 0.80 is within a 300-row reference's own error of 0.84
