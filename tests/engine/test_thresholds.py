"""The default verdicts on seeded data with known answers: shifted columns flagged, stationary ones silent.

Measured false-alarm rates are printed (run with -s) and bounded; see benchmarks/README.md for the figures.
"""

from __future__ import annotations

import numpy as np
import pytest

from otel_mlmon.engine.evaluate import Policy, evaluate_window
from tests.engine.synthetic import analysis_window, categorical, numeric, profile_from

SCENARIOS = [  # (reference rows, reference window, analysis window)
    (5000, 500, 500),
    (20000, 2000, 5000),
    (300, 300, 300),  # one reference window of a few hundred rows: no band, test + floor decide
]


def _run(reference_rows: int, chunk: int, window_rows: int, seeds: int, policy: Policy | None = None):
    false_alarms = tests = 0
    detected = {"mean": 0, "scale": 0, "mixture": 0, "categories": 0}
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        reference = {f"n{j}": numeric(rng, reference_rows) for j in range(6)}
        reference.update({f"c{j}": categorical(rng, reference_rows) for j in range(2)})
        profile, _ = profile_from(reference, chunk)
        for w in range(2):
            columns = {f"n{j}": numeric(rng, window_rows) for j in range(6)}
            columns.update({f"c{j}": categorical(rng, window_rows) for j in range(2)})
            results = evaluate_window(profile, analysis_window(profile, columns, w), policy)
            false_alarms += len({r.column for r in results if r.kind == "drift" and r.alert})
            tests += len(columns)
        shifted = {"n0": numeric(rng, window_rows, "mean"), "n1": numeric(rng, window_rows, "scale"),
                   "n2": numeric(rng, window_rows, "mixture"), "c0": categorical(rng, window_rows, True)}
        shifted.update({f"n{j}": numeric(rng, window_rows) for j in (3, 4, 5)})
        shifted["c1"] = categorical(rng, window_rows)
        results = evaluate_window(profile, analysis_window(profile, shifted, 9), policy)
        alerted = {r.column for r in results if r.kind == "drift" and r.alert}
        for name, column in (("mean", "n0"), ("scale", "n1"), ("mixture", "n2"), ("categories", "c0")):
            detected[name] += column in alerted
        false_alarms += len(alerted - {"n0", "n1", "n2", "c0"})
        tests += 4
    return false_alarms / tests, {k: v / seeds for k, v in detected.items()}


@pytest.mark.parametrize(("reference_rows", "chunk", "window_rows"), SCENARIOS)
def test_defaults_flag_shifts_and_stay_silent_on_stationary_columns(reference_rows, chunk, window_rows) -> None:
    false_alarm_rate, detection = _run(reference_rows, chunk, window_rows, seeds=12)
    print(f"\nref {reference_rows} / chunk {chunk} / window {window_rows}: false-alarm rate per column-window "
          f"{false_alarm_rate:.4f}, detection {detection}")
    assert false_alarm_rate <= 0.01
    assert detection["mean"] == 1.0
    assert min(detection.values()) >= (0.9 if window_rows >= 500 else 0.5)


def test_no_verdict_below_the_minimum_window_size() -> None:
    rng = np.random.default_rng(0)
    profile, _ = profile_from({"n0": numeric(rng, 2000)}, 500)
    results = evaluate_window(profile, analysis_window(profile, {"n0": numeric(rng, 10, "mean")}))
    drift = [r for r in results if r.kind == "drift"]
    assert drift and all(r.alert is None for r in drift)  # "not enough data", not "no drift"
    assert all(np.isfinite(r.value) for r in drift)


def test_large_windows_do_not_alert_on_negligible_shifts() -> None:
    """A p-value test alone fires on any large window (evidently#50); the effect-size floor does not."""
    rng = np.random.default_rng(1)
    profile, _ = profile_from({"n0": numeric(rng, 100_000)}, 20_000)
    tiny = numeric(rng, 100_000) + 0.03 * 2.0  # 0.03 sd: real, significant, negligible
    results = evaluate_window(profile, analysis_window(profile, {"n0": tiny}))
    ks = next(r for r in results if r.metric == "kolmogorov_smirnov")
    # Strong evidence (p < 1e-3) lowers the threshold to half the floor (issue 15), still far above 0.03 sd.
    assert ks.p_value < 0.001 and ks.alert is False and ks.upper_threshold == pytest.approx(0.04)
    assert ks.value < 0.5 * ks.upper_threshold


def test_presets_use_published_constants() -> None:
    rng = np.random.default_rng(2)
    profile, _ = profile_from({"n0": numeric(rng, 5000), "c0": categorical(rng, 5000)}, 1000)
    window = analysis_window(profile, {"n0": numeric(rng, 1000, "mean"), "c0": categorical(rng, 1000)})
    vertex = {r.metric: r for r in evaluate_window(profile, window, Policy(preset="vertex")) if r.kind == "drift"}
    assert set(vertex) == {"jensen_shannon", "l_infinity"} and vertex["l_infinity"].upper_threshold == 0.3
    evidently = [r for r in evaluate_window(profile, window, Policy(preset="evidently")) if r.kind == "drift"]
    wasserstein = next(r for r in evidently if r.metric == "wasserstein")
    assert wasserstein.upper_threshold == 0.1 and wasserstein.alert is True
    with pytest.raises(ValueError, match="unknown preset"):
        Policy(preset="acme")


def test_constant_thresholds_override() -> None:
    rng = np.random.default_rng(3)
    profile, _ = profile_from({"n0": numeric(rng, 3000)}, 1000)
    window = analysis_window(profile, {"n0": numeric(rng, 1000)})
    results = evaluate_window(profile, window, Policy(thresholds=(("kolmogorov_smirnov", 0.0),)))
    ks = next(r for r in results if r.metric == "kolmogorov_smirnov")
    assert ks.upper_threshold == 0.0 and ks.alert is True


def _labeled_window(rng: np.random.Generator, n: int, index: int, period: str, flip: float):
    from otel_mlmon.engine.evaluate import LabeledRows, WindowData

    scores = rng.random(n)
    truth = (rng.random(n) < scores).astype(int)
    truth = np.where(rng.random(n) < flip, 1 - truth, truth)  # label noise = degradation
    predicted = (scores > 0.5).astype(int)
    labeled = LabeledRows([str(v) for v in truth], [str(v) for v in predicted],
                          np.column_stack([1 - scores, scores]).tolist())
    return WindowData(period, index, n, {}, labeled)


def test_performance_band_is_silent_when_stationary_and_catches_degradation() -> None:
    from otel_mlmon.engine.evaluate import reference_values
    from otel_mlmon.engine.profile import ReferenceProfile
    from otel_mlmon.engine.windows import WindowSpec

    false_alarms = checks = caught = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        reference = [_labeled_window(rng, 500, i, "reference", 0.0) for i in range(10)]
        profile = ReferenceProfile("m", "", "classification", WindowSpec(chunk_size=500), {}, classes=["0", "1"],
                                   target_column="y")
        profile.reference_values = reference_values(profile, reference)
        for i in range(3):
            # the window's performance rows (beside them, the target's labeled_rows data-quality row)
            results = [r for r in evaluate_window(profile, _labeled_window(rng, 500, i, "analysis", 0.0))
                       if r.kind == "performance"]
            false_alarms += sum(bool(r.alert) for r in results)
            checks += len(results)
        degraded = evaluate_window(profile, _labeled_window(rng, 500, 9, "analysis", 0.35))  # accuracy 0.75 -> 0.58
        caught += any(r.alert for r in degraded if r.metric == "accuracy")
    assert checks == 10 * 3 * 7
    assert false_alarms / checks <= 0.01
    assert caught == 10


def test_a_column_whose_every_value_is_new_gets_no_verdict_not_no_drift() -> None:
    """Zip codes (or ids) all different: the reference's own windows score ~1 on the bounded metrics, so their band
    puts the thresholds past 1, where no window can alert. That is reported as no verdict (``alert`` None), while
    an ordinary column of the same windows is judged as usual."""
    rng = np.random.default_rng(7)
    reference = {"zip": np.array([f"z{i}" for i in range(2000)], dtype=object),
                 "plan": rng.choice(np.array(list("abc"), dtype=object), 2000, p=[0.5, 0.3, 0.2])}
    profile, _ = profile_from(reference, 500)
    window = analysis_window(profile, {"zip": np.array([f"q{i}" for i in range(500)], dtype=object),
                                       "plan": rng.choice(np.array(list("abc"), dtype=object), 500,
                                                          p=[0.2, 0.3, 0.5])})
    results = {(r.column, r.metric): r for r in evaluate_window(profile, window, Policy())}
    for metric in ("jensen_shannon", "chi2", "unseen_category_rate"):
        assert results["zip", metric].value == pytest.approx(1.0) and results["zip", metric].upper_threshold >= 1
        assert results["zip", metric].alert is None, metric
    assert results["plan", "jensen_shannon"].alert is True and results["zip", "missing_rate"].alert is False


@pytest.mark.parametrize("seed", range(4))
def test_a_mostly_zero_column_has_nothing_out_of_range(seed: int) -> None:
    """80 % exact zeros: the bucket holding 0 can have bounds computed as [-4.8e-15, 0.0], which the range check
    read as below the reference minimum (0): out_of_range_rate 0.8 with nothing out of range. By bucket key now."""
    rng = np.random.default_rng(seed)

    def column(n: int) -> np.ndarray:
        values = rng.exponential(2.0, n)
        values[rng.random(n) < 0.8] = 0.0
        return values

    reference = column(20_000)
    profile, _ = profile_from({"x": reference}, 2000)
    inside = analysis_window(profile, {"x": np.minimum(column(500), reference.max())})
    rates = {r.metric: r for r in evaluate_window(profile, inside, Policy()) if r.column == "x"}
    assert rates["out_of_range_rate"].value == 0.0 and rates["out_of_range_rate"].alert is False
    outside = analysis_window(profile, {"x": np.r_[np.minimum(column(490), reference.max()), np.full(10, -1.0)]})
    rates = {r.metric: r for r in evaluate_window(profile, outside, Policy()) if r.column == "x"}
    assert rates["out_of_range_rate"].value == pytest.approx(10 / 500)
