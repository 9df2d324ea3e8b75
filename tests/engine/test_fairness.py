"""Fairness per window: values equal fairlearn's and a direct computation from scikit-learn confusion matrices; a
seeded biased model is flagged in every window, an unbiased one in none; small groups and noise give no verdict."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix

from otel_mlmon.engine.columns import build_profile
from otel_mlmon.engine.evaluate import LabeledRows, WindowData, evaluate_window
from otel_mlmon.engine.fairness import (
    DEMOGRAPHIC_PARITY_DIFFERENCE,
    DISPARATE_IMPACT_RATIO,
    EQUAL_OPPORTUNITY_DIFFERENCE,
    OTHER,
    FairnessPolicy,
    SensitiveRows,
    bounded_groups,
    fairness,
)
from otel_mlmon.engine.windows import WindowSpec


def _random_window(seed: int, rows: int = 3000):
    rng = np.random.default_rng(seed)
    groups = rng.choice(["a", "b", "c", "d"], rows, p=[0.4, 0.3, 0.2, 0.1])
    y_true = rng.integers(0, 2, rows)
    bias = {"a": 0.5, "b": 0.42, "c": 0.35, "d": 0.5}
    y_pred = (rng.random(rows) < np.vectorize(bias.get)(groups) + 0.2 * y_true).astype(int)
    return groups, y_true, y_pred


@pytest.mark.parametrize("seed", range(4))
def test_values_equal_fairlearn(seed: int) -> None:
    metrics = pytest.importorskip("fairlearn.metrics")
    groups, y_true, y_pred = _random_window(seed)
    found = {gap.metric: gap.value for gap in fairness(groups.tolist(), y_pred.tolist(), y_true.tolist(), "1").gaps}
    assert found[DEMOGRAPHIC_PARITY_DIFFERENCE] == pytest.approx(
        metrics.demographic_parity_difference(y_true, y_pred, sensitive_features=groups), abs=1e-12)
    assert found[DISPARATE_IMPACT_RATIO] == pytest.approx(
        metrics.demographic_parity_ratio(y_true, y_pred, sensitive_features=groups), abs=1e-12)
    assert found[EQUAL_OPPORTUNITY_DIFFERENCE] == pytest.approx(
        metrics.equal_opportunity_difference(y_true, y_pred, sensitive_features=groups), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_rates_and_p_values_equal_a_direct_computation(seed: int) -> None:
    groups, y_true, y_pred = _random_window(seed)
    found = fairness(groups.tolist(), y_pred.tolist(), y_true.tolist(), "1")
    selection, true_positive = {}, {}
    for group in np.unique(groups):
        tn, fp, fn, tp = confusion_matrix(y_true[groups == group], y_pred[groups == group], labels=[0, 1]).ravel()
        selection[group] = (tp + fp) / (tn + fp + fn + tp)
        true_positive[group] = tp / (tp + fn)
        assert found.selection_rate[group] == (pytest.approx(selection[group], abs=1e-12), tn + fp + fn + tp)
        assert found.true_positive_rate[group] == (pytest.approx(true_positive[group], abs=1e-12), tp + fn)
    gaps = {gap.metric: gap for gap in found.gaps}
    assert gaps[DEMOGRAPHIC_PARITY_DIFFERENCE].value == pytest.approx(
        max(selection.values()) - min(selection.values()), abs=1e-12)
    assert gaps[DISPARATE_IMPACT_RATIO].value == pytest.approx(
        min(selection.values()) / max(selection.values()), abs=1e-12)
    assert gaps[EQUAL_OPPORTUNITY_DIFFERENCE].value == pytest.approx(
        max(true_positive.values()) - min(true_positive.values()), abs=1e-12)
    table = [[np.sum((groups == g) & (y_pred == 1)), np.sum((groups == g) & (y_pred == 0))] for g in "abcd"]
    assert gaps[DISPARATE_IMPACT_RATIO].p_value == pytest.approx(
        stats.chi2_contingency(table, correction=False).pvalue, rel=1e-9)


def _credit(seed: int, rows: int, biased: bool):
    """Loans: whether a loan is repaid depends on income alone; in the biased world the historical approvals a
    model learns from held group 'b' back at equal income. Returns group, features, approvals and repayments."""
    rng = np.random.default_rng(seed)
    group = rng.choice(np.array(["a", "b"]), rows, p=[0.6, 0.4])
    income = rng.normal(50.0, 15.0, rows)
    repaid = (income + rng.normal(0.0, 8.0, rows) > 50.0).astype(int)
    penalty = np.where(group == "b", 12.0, 0.0) if biased else 0.0
    approved = (income - penalty + rng.normal(0.0, 8.0, rows) > 50.0).astype(int)
    features = np.column_stack([income, (group == "b").astype(float)])
    return group, features, approved, repaid


@pytest.mark.parametrize("biased", [True, False])
def test_a_seeded_bias_is_flagged_in_every_window_and_no_bias_in_none(biased: bool) -> None:
    group, features, approved, repaid = _credit(0, 4000, biased)
    model = LogisticRegression().fit(features, approved)
    reference = model.predict(features)
    profile, _ = build_profile({"income": features[:, 0], "y_pred": reference, "repaid": repaid},
                               WindowSpec(chunks=1), model="credit", prediction_column="y_pred",
                               target_column="repaid")
    verdicts: dict[str, list[bool | None]] = {}
    for seed in range(1, 4):
        group, features, _, repaid = _credit(seed, 5000, biased)
        predicted = model.predict(features)
        for index in range(5):  # windows of 1000 rows, half of them labelled (whether the loan was repaid)
            part = slice(index * 1000, (index + 1) * 1000)
            labels = [int(v) if i % 2 == 0 else None for i, v in enumerate(repaid[part])]
            known = [i for i, v in enumerate(labels) if v is not None]
            window = WindowData(
                "analysis", index, 1000, {}, LabeledRows([labels[i] for i in known],
                                                         [int(predicted[part][i]) for i in known]),
                columns=frozenset(),
                sensitive=SensitiveRows("group", group[part].tolist(), predicted[part].tolist(), labels))
            for result in evaluate_window(profile, window):
                if result.kind == "fairness" and "=" not in result.column:
                    verdicts.setdefault(result.metric, []).append(result.alert)
    assert set(verdicts) == {DEMOGRAPHIC_PARITY_DIFFERENCE, DISPARATE_IMPACT_RATIO, EQUAL_OPPORTUNITY_DIFFERENCE}
    if biased:
        assert all(verdicts[DISPARATE_IMPACT_RATIO]) and all(verdicts[DEMOGRAPHIC_PARITY_DIFFERENCE])
        assert all(verdicts[EQUAL_OPPORTUNITY_DIFFERENCE])
    else:
        assert not any(alert for alerts in verdicts.values() for alert in alerts)
        assert all(alert is False for alerts in verdicts.values() for alert in alerts)


def test_window_rows_name_the_groups_behind_a_gap() -> None:
    group, features, approved, repaid = _credit(0, 2000, True)
    predicted = LogisticRegression().fit(features, approved).predict(features)
    profile, _ = build_profile({"x": features[:, 0], "y_pred": predicted, "y": repaid}, WindowSpec(chunks=1),
                               model="credit", prediction_column="y_pred", target_column="y")
    window = WindowData("analysis", 0, 2000, {}, columns=frozenset(),
                        sensitive=SensitiveRows("group", group.tolist(), predicted.tolist()))
    rows = {(r.column, r.metric): r for r in evaluate_window(profile, window) if r.kind == "fairness"}
    assert set(rows) == {("group", DEMOGRAPHIC_PARITY_DIFFERENCE), ("group", DISPARATE_IMPACT_RATIO),
                         ("group=a", "selection_rate"), ("group=b", "selection_rate")}  # no labels: no EOD
    ratio = rows["group", DISPARATE_IMPACT_RATIO]
    assert ratio.lower_threshold == 0.8 and ratio.upper_threshold is None and ratio.alert is True
    rates = {group: rows[f"group={group}", "selection_rate"].value for group in "ab"}
    assert ratio.value == pytest.approx(rates["b"] / rates["a"])
    assert rows["group", DEMOGRAPHIC_PARITY_DIFFERENCE].upper_threshold == 0.1
    assert rows["group=a", "selection_rate"].alert is None


def test_small_groups_and_noise_give_no_verdict() -> None:
    # a gap of 0.2 over groups of 40 rows is not significant: no alert, unless the thresholds alone are asked for
    groups = ["a"] * 40 + ["b"] * 40
    y_pred = [1] * 20 + [0] * 20 + [1] * 12 + [0] * 28
    gaps = {g.metric: g for g in fairness(groups, y_pred, None, "1").gaps}
    assert gaps[DEMOGRAPHIC_PARITY_DIFFERENCE].value == pytest.approx(0.2)
    assert gaps[DEMOGRAPHIC_PARITY_DIFFERENCE].p_value > 0.01
    assert gaps[DEMOGRAPHIC_PARITY_DIFFERENCE].alert is False and gaps[DISPARATE_IMPACT_RATIO].alert is False
    alone = {g.metric: g for g in fairness(groups, y_pred, None, "1", FairnessPolicy(alpha=None)).gaps}
    assert alone[DEMOGRAPHIC_PARITY_DIFFERENCE].alert is True and alone[DISPARATE_IMPACT_RATIO].alert is True
    # a group under min_group_rows takes no part in the verdict; with one group left there is none
    few = fairness(["a"] * 100 + ["b"] * 10, [1] * 50 + [0] * 50 + [0] * 10, None, "1")
    assert all(g.alert is None for g in few.gaps) and few.gaps[0].value == pytest.approx(0.5)


def test_groups_are_bounded_and_missing_values_named() -> None:
    values = [f"g{i:02d}" for i in range(25) for _ in range(25 - i)] + [None, float("nan"), ""]
    names = bounded_groups(values, 20)
    assert len(set(names)) == 21  # 19 most frequent, __other__ and __missing__
    assert names.count(OTHER) == sum(25 - i for i in range(19, 25))
    assert names[-3:] == ["__missing__"] * 3
    assert bounded_groups(["x", "y"], 20) == ["x", "y"]


def test_no_rows_for_regression_or_multiclass_without_a_positive_class() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array(["cat", "dog", "eel"]), 300)
    profile, _ = build_profile({"x": rng.random(300), "p": labels, "y": labels}, WindowSpec(chunks=1), model="m",
                               prediction_column="p", target_column="y")
    sensitive = SensitiveRows("g", rng.choice(["u", "v"], 300).tolist(), labels.tolist())
    window = WindowData("analysis", 0, 300, {}, columns=frozenset(), sensitive=sensitive)
    assert not [r for r in evaluate_window(profile, window) if r.kind == "fairness"]
    sensitive.positive = "dog"
    assert {r.metric for r in evaluate_window(profile, window) if r.kind == "fairness" and r.column == "g"} == {
        DEMOGRAPHIC_PARITY_DIFFERENCE, DISPARATE_IMPACT_RATIO}
    values = rng.random(300)
    regression, _ = build_profile({"x": values, "p": values, "y": values}, WindowSpec(chunks=1), model="r",
                                  task="regression", prediction_column="p", target_column="y")
    assert not [r for r in evaluate_window(regression, window) if r.kind == "fairness"]


def test_bad_settings_and_misaligned_rows_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="disparate_impact_ratio must be in"):
        FairnessPolicy(disparate_impact_ratio=4 / 5 * 100)
    with pytest.raises(ValueError, match="alpha must be in"):
        FairnessPolicy(alpha=0.0)
    with pytest.raises(ValueError, match="2 sensitive values, 3 predictions"):
        fairness(["a", "b"], [1, 0, 1], None, "1")


def test_labels_are_compared_as_the_engine_keys_them() -> None:
    groups, y_true, y_pred = _random_window(0, 500)
    as_ints = fairness(groups.tolist(), y_pred.tolist(), y_true.tolist(), "1")
    as_floats = fairness(groups.tolist(), y_pred.astype(float).tolist(), [float(v) for v in y_true], "1")
    as_bools = fairness(groups.tolist(), (y_pred == 1).tolist(), (y_true == 1).tolist(), "1")
    assert as_ints == as_floats == as_bools
    assert as_ints.selection_rate["a"][0] > 0
