"""Drift verdicts let strong evidence through (issue 15, item 2): a persistent shift under the effect-size floor
that the test finds highly significant and that stands far out of the reference windows' own spread alerts.

The stationary false-alarm rates stay those of tests/engine/test_thresholds.py (its table in
benchmarks/README.md; ``python benchmarks/bench_verdicts.py --drift`` measures both before and after).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from otel_mlmon.engine.columns import profile_from_columns, window_from_columns
from otel_mlmon.engine.drift import METHODS, STRONG_ALPHA, STRONG_FLOOR_SHARE
from otel_mlmon.engine.evaluate import evaluate_window
from otel_mlmon.engine.windows import WindowSpec


def _share(rng: np.random.Generator, rows: int, share: float) -> np.ndarray:
    values = np.array(["0"] * rows, dtype=object)
    values[:round(share * rows)] = "1"
    return rng.permutation(values)


def test_a_persistent_small_categorical_shift_is_flagged_in_every_window() -> None:
    """A binary share of 40.5 % (reference windows 40.1 % and 40.9 %) at 36.6 % in six 5,000-row windows."""
    rng = np.random.default_rng(15)
    reference = {"b": np.concatenate([_share(rng, 5000, 0.401), _share(rng, 5000, 0.409)]),
                 "u": np.where(rng.random(10_000) < 0.405, "1", "0").astype(object)}
    profile, _ = profile_from_columns(reference, WindowSpec(chunk_size=5000), model="share")
    for index in range(6):
        window = {"b": _share(rng, 5000, 0.366), "u": np.where(rng.random(5000) < 0.405, "1", "0").astype(object)}
        drift = [r for r in evaluate_window(profile, window_from_columns(profile, window, index)) if r.kind == "drift"]
        shifted = {r.metric: r for r in drift if r.column == "b"}
        # The effect is under every floor: Cohen's w 0.08 < 0.1 (scipy's chi-squared on the same table).
        table = np.array([[4050, 5950], [1830, 3170]])
        chi2, p_value, _, _ = stats.chi2_contingency(table, correction=False)
        goodness = stats.chisquare([1830, 3170], [5000 * 0.405, 5000 * 0.595]).statistic
        assert math.sqrt(goodness / 5000) == pytest.approx(0.08, abs=0.005) and chi2 > 20
        for metric, result in shifted.items():
            assert result.value < METHODS[metric].floors["categorical"]
            assert result.p_value == pytest.approx(min(p_value * 4 / 2, 1.0), rel=1e-6)  # BH: 2 of 4 tests
            assert result.p_value < STRONG_ALPHA
            assert result.alert is True and result.value > result.upper_threshold
            assert result.upper_threshold >= STRONG_FLOOR_SHARE * METHODS[metric].floors["categorical"]
        assert not any(r.alert for r in drift if r.column == "u")


def test_strong_evidence_needs_the_shift_to_stand_out_of_the_reference_windows_spread() -> None:
    """Reference windows that differ as much as the analysis window does: the spread keeps the floor's rule."""
    rng = np.random.default_rng(16)
    reference = {"b": np.concatenate([_share(rng, 5000, 0.37), _share(rng, 5000, 0.44)])}
    profile, _ = profile_from_columns(reference, WindowSpec(chunk_size=5000), model="share")
    results = evaluate_window(profile, window_from_columns(profile, {"b": _share(rng, 5000, 0.366)}))
    drift = [r for r in results if r.kind == "drift"]
    assert drift and all(r.p_value < STRONG_ALPHA and r.alert is False for r in drift)
    assert all(r.upper_threshold > r.value for r in drift)


def test_weak_evidence_keeps_the_floor() -> None:
    """The same shift in 500-row windows is not significant enough: the floor's rule decides (no alert)."""
    rng = np.random.default_rng(17)
    reference = {"b": np.concatenate([_share(rng, 500, 0.401), _share(rng, 500, 0.409)])}
    profile, _ = profile_from_columns(reference, WindowSpec(chunk_size=500), model="share")
    results = evaluate_window(profile, window_from_columns(profile, {"b": _share(rng, 500, 0.366)}))
    drift = [r for r in results if r.kind == "drift"]
    assert drift and all(r.alert is False for r in drift)
    assert {r.metric: r.upper_threshold for r in drift} == {m: METHODS[m].floors["categorical"] for m in
                                                            ("jensen_shannon", "chi2")}
