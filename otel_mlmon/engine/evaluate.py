"""The engine: a reference profile and one window of sketches and joined labels in, window results out.

Both the batch path (``mlmon evaluate``) and the streaming processor call ``evaluate_window``; whatever builds the
window (files or OTLP), the same sketches give the same results.

Verdict of a drift value (default policy): the window has at least ``min_rows`` values, the value exceeds its
upper threshold — the method's effect-size floor, or the reference windows' mean + 3 sigma when that is higher —
and the difference is significant: its p-value, Benjamini–Hochberg-adjusted across the window's columns, is below
``alpha``. The floor keeps large windows from alerting on negligible shifts (fixed p-value tests fire on every
large window), the test keeps small windows from alerting on sampling noise (fixed distances do), and the band
adds the reference's own variability when it has enough windows (the band alone false-alarms).
Performance: mean ± 3 sigma of the reference windows, both directions (a prediction interval: wider when the
reference has few windows). Data quality: rates above the reference's
(by a floor and significantly, one-sided binomial test).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import special, stats

from otel_mlmon.engine.drift import (
    CATEGORICAL,
    METHODS,
    NUMERIC,
    CategoricalComparison,
    DriftValue,
    KolmogorovSmirnov,
    NumericComparison,
    resolve_methods,
    strong_evidence_threshold,
)
from otel_mlmon.engine.estimate import ESTIMATED_PERFORMANCE, SAMPLING_ERROR, ScoredRows, estimate, lower_threshold
from otel_mlmon.engine.fairness import SensitiveRows, fairness_results
from otel_mlmon.engine.performance import (
    Evidence,
    Reference,
    classification_metrics,
    judge,
    judge_reference,
    regression_metrics,
    window_evidence,
)
from otel_mlmon.engine.profile import ColumnProfile, ReferenceProfile
from otel_mlmon.engine.results import WindowResult
from otel_mlmon.sketch import CategoricalSketch, NumericSketch

MIN_ROWS = 30
MIN_BAND_WINDOWS = 3
QUALITY_FLOOR = 0.02
DRIFT, PERFORMANCE, DATA_QUALITY = "drift", "performance", "data_quality"

# Published defaults of other products, as (methods per kind, value thresholds, p-value thresholds).
PRESETS: dict[str, dict[str, Any]] = {
    # Evidently: KS / chi2 p < 0.05 on small data, normed Wasserstein / JS > 0.1 on large data.
    "evidently": {"methods": {NUMERIC: ("kolmogorov_smirnov", "wasserstein"), CATEGORICAL: ("chi2", "jensen_shannon")},
                  "value": {"wasserstein": 0.1, "jensen_shannon": 0.1},
                  "p": {"kolmogorov_smirnov": 0.05, "chi2": 0.05}},
    # Vertex AI Model Monitoring: Jensen-Shannon (numeric) and L-infinity (categorical), threshold 0.3.
    "vertex": {"methods": {NUMERIC: ("jensen_shannon",), CATEGORICAL: ("l_infinity",)},
               "value": {"jensen_shannon": 0.3, "l_infinity": 0.3}, "p": {}},
    # SageMaker Model Monitor: distribution comparison threshold 0.1 (KS distance, L-infinity for categories).
    "sagemaker": {"methods": {NUMERIC: ("kolmogorov_smirnov",), CATEGORICAL: ("l_infinity",)},
                  "value": {"kolmogorov_smirnov": 0.1, "l_infinity": 0.1}, "p": {}},
    # Azure ML model monitoring: normalized Wasserstein (numeric) and Jensen-Shannon (categorical), 0.1.
    "azure": {"methods": {NUMERIC: ("wasserstein",), CATEGORICAL: ("jensen_shannon",)},
              "value": {"wasserstein": 0.1, "jensen_shannon": 0.1}, "p": {}},
}


@dataclass(frozen=True)
class Policy:
    """How values become verdicts. ``thresholds`` overrides the upper threshold of a drift method (constant)."""

    methods: tuple[str, ...] | None = None
    preset: str | None = None
    alpha: float = 0.01
    min_rows: int = MIN_ROWS
    thresholds: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.methods:
            resolve_methods(list(self.methods), NUMERIC)  # validates the names
        unknown = [name for name, _ in self.thresholds if name not in METHODS]
        if unknown:
            raise ValueError(f"thresholds for unknown drift method(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(METHODS)}")

    def methods_for(self, kind: str) -> list[Any]:
        if self.methods:
            return resolve_methods(list(self.methods), kind)
        if self.preset is not None:
            return [METHODS[n] for n in PRESETS[self.preset]["methods"][kind]]
        return resolve_methods(None, kind)


@dataclass
class LabeledRows:
    """Joined rows of a window: true labels, predicted labels (or values), class scores."""

    y_true: list[Any] = field(default_factory=list)
    y_pred: list[Any] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y_true)

    def extend(self, other: LabeledRows) -> None:
        self.y_true += other.y_true
        self.y_pred += other.y_pred
        self.scores += other.scores


@dataclass
class WindowData:
    """One window of one period: a sketch per column present, and the joined labels.

    ``columns`` names the profile columns the window is judged on (None: all of them). A profile column outside
    it gives no result at all, not even ``column_missing``: a streaming window built from captured rows judges only
    the features that were captured. Columns the window has and the profile lacks are still ``column_added``;
    realized performance comes from ``labeled`` either way. ``scored``: every row's prediction and scores, labelled
    or not, for estimated performance (None: not estimated; a reference window estimates on ``labeled``).
    """

    period: str
    index: int
    rows: int
    sketches: dict[str, NumericSketch | CategoricalSketch]
    labeled: LabeledRows = field(default_factory=LabeledRows)
    start: str | None = None
    end: str | None = None
    columns: frozenset[str] | None = None
    scored: ScoredRows | None = None
    sensitive: SensitiveRows | None = None  # every row's sensitive value, for engine.fairness (None: no fairness)


@dataclass
class Measurement:
    column: str
    kind: str
    metric: str
    value: float
    p_value: float | None
    n: int  # observations behind the value (verdict needs policy.min_rows)
    floor: float | None = None  # drift effect-size floor / data-quality reference rate + floor
    reference_rate: float | None = None
    evidence: Evidence | None = None  # realized performance: what the metric's sampling error rests on

    @property
    def key(self) -> str:
        return f"{self.column}|{self.kind}|{self.metric}"


def _binomial_greater(successes: int, n: int, rate: float) -> float:
    """P(X >= successes) for X ~ Binomial(n, rate): the one-sided exact binomial test's p-value."""
    if n == 0 or successes <= 0:
        return 1.0
    return float(special.bdtrc(successes - 1, n, min(max(rate, 1e-12), 1 - 1e-12)))


def _quality(column: ColumnProfile, sketch: NumericSketch | CategoricalSketch) -> list[Measurement]:
    out = []
    reference = column.sketch
    if sketch.total:
        bad = sketch.total - sketch.count
        rate = max(column.missing_rate, 1 / (reference.total + 1))
        out.append(Measurement(column.name, DATA_QUALITY, "missing_rate", bad / sketch.total,
                               _binomial_greater(bad, sketch.total, rate), sketch.total,
                               reference_rate=column.missing_rate))
    if sketch.count == 0:
        return out
    if isinstance(sketch, NumericSketch) and isinstance(reference, NumericSketch) and reference.count:
        keys, counts = sketch.buckets()
        if sketch.same_bucketing(reference):  # by bucket: the buckets below the reference minimum's, above its max's
            low, high = reference.keys_of([reference.min, reference.max])
            outside = int(counts[(keys < low) | (keys > high)].sum())
        else:
            lower, upper = sketch.bounds(keys)
            outside = int(counts[(upper <= reference.min) | (lower > reference.max)].sum())
        # Chance that a new value from the reference distribution falls outside the range of N reference values.
        rate = 2 / (reference.count + 1)
        out.append(Measurement(column.name, DATA_QUALITY, "out_of_range_rate", outside / sketch.count,
                               _binomial_greater(outside, sketch.count, rate), sketch.count, reference_rate=0.0))
    elif isinstance(sketch, CategoricalSketch) and isinstance(reference, CategoricalSketch) and reference.count:
        unseen = sum(n for category, n in sketch.counts.items() if category not in reference.counts)
        # Good-Turing: the mass of unseen categories is about the share of categories seen once.
        singletons = sum(1 for n in reference.counts.values() if n == 1)
        rate = max(singletons, 1) / (reference.count + 1)
        out.append(Measurement(column.name, DATA_QUALITY, "unseen_category_rate", unseen / sketch.count,
                               _binomial_greater(unseen, sketch.count, rate), sketch.count,
                               reference_rate=singletons / reference.count))
    return out


def measure(profile: ReferenceProfile, window: WindowData, policy: Policy) -> list[Measurement]:
    """Every value of a window (no verdicts yet)."""
    out: list[Measurement] = []
    for column in profile.columns.values():
        if window.columns is not None and column.name not in window.columns:
            continue
        sketch = window.sketches.get(column.name)
        if sketch is None:
            if column.role in ("feature", "prediction", "score") and window.rows:
                out.append(Measurement(column.name, DATA_QUALITY, "column_missing", 1.0, None, window.rows))
            continue
        out.extend(_quality(column, sketch))
        if sketch.count == 0:
            continue
        if sketch is column.sketch:
            comparison: Any = None
        elif column.kind == NUMERIC:
            assert isinstance(sketch, NumericSketch) and isinstance(column.sketch, NumericSketch)
            comparison = NumericComparison.build(column.sketch, sketch, column.bin_keys, column.std)
        else:
            assert isinstance(sketch, CategoricalSketch) and isinstance(column.sketch, CategoricalSketch)
            comparison = CategoricalComparison.build(column.sketch, sketch)
        methods = policy.methods_for(column.kind)
        if sketch is column.sketch:  # a single reference window is the reference: every method gives 0, p = 1
            results = {method.name: DriftValue(0.0, 1.0) for method in methods}
        else:
            results = {method.name: method.compute(comparison) for method in methods}
        for method in methods:
            result = results[method.name]
            p_value = result.p_value
            if method.name == "wasserstein":  # its significance: the KS test of the same buckets
                ks = results.get("kolmogorov_smirnov") or KolmogorovSmirnov().compute(comparison)
                p_value = ks.p_value
            out.append(Measurement(column.name, DRIFT, method.name, result.value, p_value, sketch.count,
                                   floor=method.floors[column.kind]))
    known = set(profile.columns)
    for name in sorted(set(window.sketches) - known):
        out.append(Measurement(name, DATA_QUALITY, "column_added", 1.0, None, window.rows))
    out.extend(_performance(profile, window))
    out.extend(_estimated(profile, window))
    return out


def performance(profile: ReferenceProfile, labeled: LabeledRows) -> dict[str, float]:
    """Realized performance of joined rows, for the profile's task and classes."""
    if not len(labeled):
        return {}
    if profile.task == "regression":
        return regression_metrics([float(v) for v in labeled.y_true], [float(v) for v in labeled.y_pred])
    scores = np.asarray(labeled.scores, dtype=np.float64) if labeled.scores else None
    return classification_metrics(labeled.y_true, labeled.y_pred, scores, profile.classes)


def _performance(profile: ReferenceProfile, window: WindowData) -> list[Measurement]:
    if profile.target_column is None:
        return []
    labeled = window.labeled
    return [Measurement(profile.target_column, PERFORMANCE, metric, found.value, None, len(labeled), evidence=found)
            for metric, found in window_evidence(profile.task, profile.classes, labeled.y_true, labeled.y_pred,
                                                 labeled.scores).items()]


def _estimated(profile: ReferenceProfile, window: WindowData) -> list[Measurement]:
    """CBPE (``engine.estimate``): each estimated metric and its sampling error."""
    rows = window.scored if window.scored is not None else window.labeled if window.period == "reference" else None
    if profile.calibration is None or rows is None or not len(rows):
        return []
    column = profile.target_column or "target"
    out = []
    for metric, found in estimate(profile.calibration, rows.y_pred, rows.scores).items():
        out.append(Measurement(column, ESTIMATED_PERFORMANCE, metric, found.value, None, found.rows))
        out.append(Measurement(column, ESTIMATED_PERFORMANCE, metric + SAMPLING_ERROR, found.sampling_error, None,
                               found.rows))
    return out


_THREE_SIGMA_TAIL = stats.norm.sf(3.0)  # the one-sided tail of mean + 3 sigma (0.135 %)


def _band(values: Sequence[float], prediction_interval: bool) -> tuple[float, float] | None:
    """mean ± 3 sigma of the reference windows' values (at least ``MIN_BAND_WINDOWS`` of them).

    With ``prediction_interval`` (performance) the 3 becomes Student's t quantile of the same coverage times
    sqrt(1 + 1/k): with k windows the spread is known only roughly, and with three windows the plain ±3 s made
    a third of stationary windows alert in our tests. Drift thresholds keep NannyML's plain ±3 s: there the band
    only ever raises the effect-size floor, and a widened band would hide real drift.
    """
    finite = [v for v in values if math.isfinite(v)]
    k = len(finite)
    if k < MIN_BAND_WINDOWS:
        return None
    mean, std = float(np.mean(finite)), float(np.std(finite, ddof=1))
    factor = float(stats.t.isf(_THREE_SIGMA_TAIL, k - 1)) * math.sqrt(1 + 1 / k) if prediction_interval else 3.0
    return mean - factor * std, mean + factor * std


def _adjusted(measurements: list[Measurement]) -> dict[int, float]:
    """Benjamini–Hochberg-adjusted p-values by id: one family per kind per window (every column and method)."""
    groups: dict[str, list[Measurement]] = defaultdict(list)
    for m in measurements:
        if m.p_value is not None and math.isfinite(m.p_value):
            groups[m.kind].append(m)
    adjusted: dict[int, float] = {}
    for members in groups.values():
        ps = stats.false_discovery_control([m.p_value for m in members], method="bh")
        for m, p in zip(members, np.atleast_1d(ps)):
            adjusted[id(m)] = float(p)
    return adjusted


def verdicts(profile: ReferenceProfile, window: WindowData, measurements: list[Measurement],
             policy: Policy) -> list[WindowResult]:
    adjusted = _adjusted(measurements)
    constants = dict(policy.thresholds)
    preset = PRESETS.get(policy.preset or "", {"value": {}, "p": {}})
    out = []
    for m in measurements:
        p_value = adjusted.get(id(m), m.p_value)
        values = band_values(profile.reference_values.get(m.key, []), policy.min_rows)
        band = _band(values, prediction_interval=m.kind == PERFORMANCE)
        lower = upper = None
        alert: bool | None = None
        enough = m.n >= policy.min_rows and math.isfinite(m.value)
        if m.kind == DRIFT:
            if m.metric in constants:
                upper = constants[m.metric]
                alert = m.value > upper if enough else None
            elif m.metric in preset["value"]:
                upper = preset["value"][m.metric]
                alert = m.value > upper if enough else None
            elif m.metric in preset["p"]:
                alert = (m.p_value is not None and m.p_value < preset["p"][m.metric]) if enough else None
            else:  # the default policy (also for a method a preset has no threshold for)
                upper = max(m.floor or 0.0, band[1] if band else -math.inf)
                lowered = strong_evidence_threshold(m.floor or 0.0, values, p_value)
                upper = upper if lowered is None else min(upper, lowered)
                significant = p_value is None or p_value < policy.alpha
                alert = (m.value > upper and significant) if enough and not _beyond_reach(m, upper) else None
        elif m.kind == PERFORMANCE:  # engine.performance.judge: sampling error + the reference windows' spread
            reference = Reference.from_series(profile.reference_performance.get(m.metric),
                                              profile.reference_values.get(m.key, []), _labeled_rows(profile),
                                              policy.min_rows)
            if enough and reference is not None:
                verdict = (judge(m.metric, m.evidence, m.n, reference) if m.evidence is not None
                           and window.period == "analysis" else judge_reference(m.metric, m.value, reference))
                lower, upper, alert, p_value = verdict.lower, verdict.upper, verdict.alert, verdict.p_value
        elif m.kind == ESTIMATED_PERFORMANCE:  # a drop below the reference's range alerts; not a sampling error
            if profile.calibration is not None and not m.metric.endswith(SAMPLING_ERROR):
                lower = lower_threshold(profile.calibration, m.metric, m.n, profile.reference_values.get(m.key, []))
                alert = (m.value < lower) if enough and lower is not None else None
        elif m.metric in ("column_missing", "column_added"):
            alert = True
        else:  # data quality rates
            upper = max((m.reference_rate or 0.0) + QUALITY_FLOOR, band[1] if band else -math.inf)
            alert = (m.value > upper and (p_value is None or p_value < policy.alpha)) \
                if enough and not _beyond_reach(m, upper) else None
        out.append(WindowResult(
            model=profile.model, model_version=profile.version, period=window.period, window=window.index,
            window_start=window.start, window_end=window.end, rows=window.rows, labeled_rows=len(window.labeled),
            column=m.column, kind=m.kind, metric=m.metric, value=m.value, lower_threshold=lower,
            upper_threshold=upper, alert=alert, p_value=p_value))
    out.extend(_too_few_labels(profile, window, measurements, policy))
    return out


def _beyond_reach(m: Measurement, upper: float | None) -> bool:
    """No value of the measurement's metric can exceed this threshold: a drift method's ``maximum``, 1 for a data
    quality rate. When the reference's own windows put the threshold there (a column whose every value is new, like
    an id or a zip code: its reference windows already score ~1), no window can cross it: that is no verdict
    (``alert`` None), not "no drift"."""
    if upper is None:
        return False
    maximum = METHODS[m.metric].maximum if m.kind == DRIFT and m.metric in METHODS else \
        1.0 if m.kind == DATA_QUALITY else math.inf
    return upper >= maximum


LABELED_ROWS = "labeled_rows"


def _labeled_rows(profile: ReferenceProfile) -> int:
    return sum(int(info.get("labeled_rows", 0)) for info in profile.reference_windows)


def _too_few_labels(profile: ReferenceProfile, window: WindowData, measurements: list[Measurement],
                    policy: Policy) -> list[WindowResult]:
    """Whether a window's realized performance could get a verdict, and why not: a ``labeled_rows`` data-quality
    row of the target in every window with labels, whose value is the window's labeled rows and whose lower
    threshold is the number a verdict needs (``min_rows``); its alert is empty below it (no verdict), else false.
    (Present in every labelled window, so a stream's revision of the window replaces it.)"""
    judged = next((m for m in measurements if m.kind == PERFORMANCE and m.n > 0), None)
    if judged is None:
        return []
    return [WindowResult(
        model=profile.model, model_version=profile.version, period=window.period, window=window.index,
        window_start=window.start, window_end=window.end, rows=window.rows, labeled_rows=len(window.labeled),
        column=judged.column, kind=DATA_QUALITY, metric=LABELED_ROWS, value=float(judged.n),
        lower_threshold=float(policy.min_rows), upper_threshold=None,
        alert=None if judged.n < policy.min_rows else False, p_value=None)]


def evaluate_window(profile: ReferenceProfile, window: WindowData, policy: Policy | None = None) -> list[WindowResult]:
    """The window results of one window."""
    policy = policy or Policy()
    return verdicts(profile, window, measure(profile, window, policy), policy) + fairness_results(profile, window)


def reference_values(profile: ReferenceProfile, windows: Sequence[WindowData],
                     policy: Policy | None = None) -> dict[str, list[list[float | None]]]:
    """Each metric's (value, p-value, n) in every reference window (keyed ``column|kind|metric``, aligned with
    the windows; None where a window has no value), for the drift methods of ``policy`` (the defaults unless
    told). The bands use the values of windows with at least ``min_rows``; a method asked of the profile later
    that it has no values for is judged on its floor and test alone."""
    policy = policy or Policy()
    values: dict[str, list[list[float | None]]] = {}
    for position, window in enumerate(windows):
        for m in measure(profile, window, policy):
            series = values.setdefault(m.key, [[None, None, 0] for _ in windows])
            series[position] = [m.value, m.p_value, m.n]
    return values


def band_values(series: Sequence[Sequence[float | None]], min_rows: int = MIN_ROWS) -> list[float]:
    """The reference-window values a band is drawn from: windows of at least ``min_rows`` and at least half the
    median window size (a partial first or last window is noisier and would widen the band)."""
    sizes = [float(n) for v, _, n in series if v is not None and n]
    if not sizes:
        return []
    least = max(min_rows, 0.5 * float(np.median(sizes)))
    return [float(v) for v, _, n in series if v is not None and n is not None and n >= least]


def reference_results(profile: ReferenceProfile, policy: Policy | None = None) -> list[WindowResult]:
    """The reference period's window results, from what the profile recorded of its windows."""
    policy = policy or Policy()
    wanted = {NUMERIC: {m.name for m in policy.methods_for(NUMERIC)},
              CATEGORICAL: {m.name for m in policy.methods_for(CATEGORICAL)}}
    out: list[WindowResult] = []
    for position, info in enumerate(profile.reference_windows):
        window = WindowData("reference", int(info["index"]), int(info["rows"]), {}, start=info.get("start"),
                            end=info.get("end"))
        measurements = []
        for key, series in profile.reference_values.items():
            column_name, kind, metric = key.rsplit("|", 2)  # a column name may hold "|"
            value, p_value, n = series[position]
            column = profile.columns.get(column_name)
            if value is None:
                continue
            floor = reference_rate = None
            if kind == DRIFT:
                if column is None or metric not in wanted[column.kind]:
                    continue
                floor = METHODS[metric].floors[column.kind]
            elif kind == DATA_QUALITY and column is not None:
                reference_rate = column.missing_rate if metric == "missing_rate" else 0.0
            measurements.append(Measurement(column_name, kind, metric, float(value),
                                            None if p_value is None else float(p_value), int(n or 0), floor,
                                            reference_rate))
        labeled_rows = int(info.get("labeled_rows", 0))
        out.extend(replace(result, labeled_rows=labeled_rows)
                   for result in verdicts(profile, window, measurements, policy))
    return out
