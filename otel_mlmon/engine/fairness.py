"""Fairness across a sensitive attribute, per window: demographic parity, equal opportunity, disparate impact.

A classifier's favourable outcome is predicting the ``positive`` class (a binary model's positive class, the last of
its sorted classes, unless told). Per group of the sensitive column:

- selection rate: the share of the group's rows predicted positive (every row of the window, labelled or not);
- true-positive rate: the share of the group's truly positive rows predicted positive (joined labels only).

and over the groups (the definitions of fairlearn's ``demographic_parity_difference``, ``demographic_parity_ratio``
and ``equal_opportunity_difference``):

- ``demographic_parity_difference`` = largest − smallest selection rate; alerts above 0.1 by default;
- ``disparate_impact_ratio`` = smallest / largest selection rate; alerts below 0.8 by default (the four-fifths rule
  of the US EEOC's Uniform Guidelines, 29 CFR 1607.4(D));
- ``equal_opportunity_difference`` = largest − smallest true-positive rate; alerts above 0.1 by default.

The 0.1 defaults are the edges of the "fair" range [−0.1, 0.1] that IBM's AIF360 and common practice use for both
differences. Only groups with at least ``min_group_rows`` rows (for the true-positive rate: truly positive rows)
take part in a verdict, and by default the gap must also be significant: a chi-squared test of independence of group
and outcome over those groups (``p_value`` of the row) below ``alpha`` = 0.01 — so a window with small groups does
not alert on sampling noise, as the drift verdicts do. ``alpha=None`` applies the thresholds alone. With fewer than
two such groups a row is still given (over every group with a row) but with an empty verdict. The sensitive column's
values are bounded: the ``max_groups`` most frequent, the rest as ``__other__`` (missing values as ``__missing__``).

Results are ``kind=fairness`` rows on the sensitive column (the three metrics above, with their thresholds and
verdict) and, without a verdict, one row per group and rate with ``column`` = ``<sensitive column>=<group>`` and
``metric`` = ``selection_rate`` or ``true_positive_rate`` (so a report shows which group is behind a gap).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from otel_mlmon.engine.results import WindowResult
from otel_mlmon.sketch import category_key

if TYPE_CHECKING:
    from otel_mlmon.engine.evaluate import WindowData
    from otel_mlmon.engine.profile import ReferenceProfile

FAIRNESS = "fairness"
DEMOGRAPHIC_PARITY_DIFFERENCE = "demographic_parity_difference"
DISPARATE_IMPACT_RATIO = "disparate_impact_ratio"
EQUAL_OPPORTUNITY_DIFFERENCE = "equal_opportunity_difference"
SELECTION_RATE, TRUE_POSITIVE_RATE = "selection_rate", "true_positive_rate"
OTHER, MISSING = "__other__", "__missing__"


@dataclass(frozen=True)
class FairnessPolicy:
    """Thresholds of the fairness verdicts (defaults and their sources in the module docstring)."""

    demographic_parity_difference: float = 0.1
    disparate_impact_ratio: float = 0.8
    equal_opportunity_difference: float = 0.1
    alpha: float | None = 0.01
    min_group_rows: int = 30
    max_groups: int = 20

    def __post_init__(self) -> None:
        for name in (DEMOGRAPHIC_PARITY_DIFFERENCE, DISPARATE_IMPACT_RATIO, EQUAL_OPPORTUNITY_DIFFERENCE):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"fairness threshold {name} must be in [0, 1], got {value!r}")
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise ValueError(f"fairness alpha must be in (0, 1) or None (thresholds alone), got {self.alpha!r}")
        if self.min_group_rows < 1 or self.max_groups < 2:
            raise ValueError(f"fairness needs min_group_rows >= 1 and max_groups >= 2, got {self.min_group_rows} "
                             f"and {self.max_groups}")


@dataclass
class SensitiveRows:
    """Every row of a window: its sensitive value, its predicted label and its true label (None until joined).

    Args:
        column: the sensitive column's name (the results' ``column``).
        groups: the sensitive value of each row.
        y_pred: the predicted label of each row.
        y_true: the true label of each row, None where there is none (or no list at all: no labels yet).
        positive: the favourable predicted class; None: the binary model's positive class.
        policy: thresholds.
    """

    column: str
    groups: list[Any] = field(default_factory=list)
    y_pred: list[Any] = field(default_factory=list)
    y_true: list[Any] | None = None
    positive: str | None = None
    policy: FairnessPolicy = field(default_factory=FairnessPolicy)

    def __len__(self) -> int:
        return len(self.groups)


@dataclass(frozen=True)
class Gap:
    """One fairness metric of one window: its value, the test's p-value, and the verdict."""

    metric: str
    value: float
    p_value: float | None
    lower: float | None
    upper: float | None
    alert: bool | None


@dataclass(frozen=True)
class Fairness:
    """Per-group rates and the gaps between them."""

    selection_rate: dict[str, tuple[float, int]]  # group -> (rate, rows)
    true_positive_rate: dict[str, tuple[float, int]]  # group -> (rate, truly positive rows)
    gaps: list[Gap]


def bounded_groups(values: Sequence[Any], max_groups: int) -> list[str]:
    """The values as group names: the ``max_groups`` most frequent kept (ties by name), the rest ``__other__``,
    missing ones (None, NaN, empty) ``__missing__``."""
    names = [MISSING if value is None or (isinstance(value, float) and math.isnan(value)) or value == ""
             else str(value) for value in values]
    counts = Counter(name for name in names if name != MISSING)
    if len(counts) <= max_groups:
        return names
    kept = {name for name, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: max_groups - 1]}
    return [name if name in kept or name == MISSING else OTHER for name in names]


def _independence_p_value(outcome: np.ndarray, groups: np.ndarray, names: list[str]) -> float:
    """Chi-squared test of independence of group and a binary outcome (no continuity correction)."""
    table = np.array([[np.sum(outcome[groups == g]), np.sum(~outcome[groups == g])] for g in names], dtype=float)
    if (table.sum(axis=0) == 0).any():  # everyone (or no one) has the outcome: no evidence of a difference
        return 1.0
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def _gaps(rates: dict[str, tuple[float, int]], outcome: np.ndarray, groups: np.ndarray, policy: FairnessPolicy,
          metrics: Sequence[str]) -> list[Gap]:
    judged = sorted(g for g, (_, n) in rates.items() if n >= policy.min_group_rows)
    enough = len(judged) >= 2
    names = judged if enough else sorted(rates)
    if len(names) < 2:
        return []
    values = [rates[g][0] for g in names]
    p_value = _independence_p_value(outcome, groups, names) if policy.alpha is not None else None
    significant = p_value is None or (policy.alpha is not None and p_value < policy.alpha)
    out = []
    for metric in metrics:
        if metric == DISPARATE_IMPACT_RATIO:
            value = min(values) / max(values) if max(values) > 0 else math.nan
            threshold = policy.disparate_impact_ratio
            alert = (value < threshold and significant) if enough and math.isfinite(value) else None
            out.append(Gap(metric, value, p_value, threshold, None, alert))
        else:
            value = max(values) - min(values)
            threshold = getattr(policy, metric)
            out.append(Gap(metric, value, p_value, None, threshold, (value > threshold and significant)
                           if enough else None))
    return out


def fairness(groups: Sequence[Any], y_pred: Sequence[Any], y_true: Sequence[Any] | None, positive: str,
             policy: FairnessPolicy | None = None) -> Fairness:
    """Per-group rates and the three gaps of one window's rows (labels compared as the sketches key them: 1, 1.0
    and True are all "1")."""
    policy = policy or FairnessPolicy()
    if len(groups) != len(y_pred) or (y_true is not None and len(y_true) != len(groups)):
        raise ValueError(f"fairness needs one sensitive value, prediction and label (or None) per row; got "
                         f"{len(groups)} sensitive values, {len(y_pred)} predictions and "
                         f"{'no' if y_true is None else len(y_true)} labels")
    names = np.asarray(bounded_groups(groups, policy.max_groups), dtype=object)
    selected = np.asarray([category_key(p) == positive for p in y_pred], dtype=bool)
    selection = {str(g): (float(selected[names == g].mean()), int(np.sum(names == g))) for g in np.unique(names)}
    gaps = _gaps(selection, selected, names, policy, (DEMOGRAPHIC_PARITY_DIFFERENCE, DISPARATE_IMPACT_RATIO))
    true_positive: dict[str, tuple[float, int]] = {}
    if y_true is not None:
        actual = np.asarray([category_key(t) == positive for t in y_true], dtype=bool)
        positives, hit = names[actual], selected[actual]
        true_positive = {str(g): (float(hit[positives == g].mean()), int(np.sum(positives == g)))
                         for g in np.unique(positives)}
        gaps += _gaps(true_positive, hit, positives, policy, (EQUAL_OPPORTUNITY_DIFFERENCE,))
    return Fairness(selection, true_positive, gaps)


def positive_class(classes: Sequence[str], positive: str | None) -> str | None:
    """The favourable class: ``positive`` when given, else a binary model's positive class (the last of its two
    sorted classes); None for a multiclass model without one (no fairness rows then)."""
    if positive is not None:
        return str(positive)
    return str(classes[1]) if len(classes) == 2 else None


def fairness_results(profile: ReferenceProfile, window: WindowData) -> list[WindowResult]:
    """The ``kind=fairness`` rows of a window whose ``sensitive`` rows are set (none otherwise, and none for a
    regression model or a multiclass one without a positive class)."""
    rows = window.sensitive
    if rows is None or not len(rows) or profile.task == "regression":
        return []
    positive = positive_class(profile.classes, rows.positive)
    if positive is None:
        return []
    found = fairness(rows.groups, rows.y_pred, rows.y_true, positive, rows.policy)

    def result(column: str, metric: str, value: float, lower: float | None = None, upper: float | None = None,
               alert: bool | None = None, p_value: float | None = None) -> WindowResult:
        return WindowResult(model=profile.model, model_version=profile.version, period=window.period,
                            window=window.index, window_start=window.start, window_end=window.end, rows=window.rows,
                            labeled_rows=len(window.labeled), column=column, kind=FAIRNESS, metric=metric,
                            value=value, lower_threshold=lower, upper_threshold=upper, alert=alert, p_value=p_value)

    out = [result(rows.column, gap.metric, gap.value, gap.lower, gap.upper, gap.alert, gap.p_value)
           for gap in found.gaps]
    for metric, rates in ((SELECTION_RATE, found.selection_rate), (TRUE_POSITIVE_RATE, found.true_positive_rate)):
        out.extend(result(f"{rows.column}={group}", metric, rate) for group, (rate, _) in sorted(rates.items()))
    return out
