"""NumericSketch.rebucketed: a sketch made without a reference, moved onto the profile's bucketing.

Exact where it can be (count, moments, min, max, bad-value counts, values that sit on bucket bounds), and within
0.005 of scipy's exact two-sample KS statistic on the raw values otherwise, with the verdicts of the sketch the
profile's bucketing would have made directly.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from scipy import stats

from otel_mlmon.engine.columns import profile_from_columns, window_from_columns
from otel_mlmon.engine.evaluate import WindowData, evaluate_window
from otel_mlmon.engine.profile import choose_bucketing
from otel_mlmon.engine.windows import WindowSpec
from otel_mlmon.sketch import NumericSketch

# (reference sampler, analysis sampler with a shift): shift 0 is the same distribution
DATA = {
    "normal": lambda rng, n, shift: rng.normal(10.0 + 2.0 * shift, 2.0, n),
    "lognormal": lambda rng, n, shift: rng.lognormal(1.0 + shift, 0.8, n),
    "uniform": lambda rng, n, shift: rng.uniform(shift, 1.0 + shift, n),
    "bimodal": lambda rng, n, shift: np.where(rng.random(n) < 0.4 + shift / 2, rng.normal(-3.0, 1.0, n),
                                              rng.normal(4.0, 1.5, n)),
    "integers": lambda rng, n, shift: rng.poisson(6.0 + 4.0 * shift, n).astype(float),
    "ages": lambda rng, n, shift: rng.integers(18, 91 + int(40 * shift), n).astype(float),
    "wide integers": lambda rng, n, shift: rng.integers(100, 400 + int(300 * shift), n).astype(float),
    "binary": lambda rng, n, shift: (rng.random(n) < 0.3 + shift / 2).astype(float),
}


def _results(profile, window: WindowData) -> dict[str, tuple[float, bool | None]]:
    return {r.metric: (r.value, r.alert) for r in evaluate_window(profile, window) if r.kind == "drift"}


@pytest.mark.parametrize("name", list(DATA))
@pytest.mark.parametrize("shift", [0.0, 0.1, 0.25])
@pytest.mark.parametrize("seed", [0, 1])
def test_ks_of_rebucketed_sketch_agrees_with_scipy_and_verdicts_with_direct_bucketing(name: str, shift: float,
                                                                                     seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference, analysis = DATA[name](rng, 5000, 0.0), DATA[name](rng, 3000, shift)
    profile, _ = profile_from_columns({"x": reference}, WindowSpec(chunk_size=1000))
    column = profile.columns["x"].sketch
    assert isinstance(column, NumericSketch)
    first = NumericSketch()
    first.update(reference[:16_384])
    assert (column.center, column.scale) == choose_bucketing(first)  # the bucketing a profile chooses
    plain = NumericSketch()  # what an app instrumented without reference= sends
    plain.update(analysis)
    moved = plain.rebucketed(column.center, column.scale, column.precision)
    ours = _results(profile, WindowData("analysis", 0, analysis.size, {"x": moved}))
    direct = _results(profile, window_from_columns(profile, {"x": analysis}))
    exact = stats.ks_2samp(reference, analysis)
    assert abs(ours["kolmogorov_smirnov"][0] - exact.statistic) < 0.005
    assert {m: alert for m, (_, alert) in ours.items()} == {m: alert for m, (_, alert) in direct.items()}
    if shift == 0.0:
        assert not ours["kolmogorov_smirnov"][1]
    elif shift == 0.25 and name != "wide integers":
        assert ours["kolmogorov_smirnov"][1]


@pytest.mark.parametrize("name", ["integers", "ages", "binary"])
def test_values_on_bucket_bounds_move_exactly(name: str) -> None:
    values = DATA[name](np.random.default_rng(5), 4000, 0.0)
    first = NumericSketch()
    first.update(values)
    center, scale = choose_bucketing(first)
    direct = NumericSketch(center, scale)
    direct.update(values)
    assert first.rebucketed(center, scale, 7) == direct


@pytest.mark.parametrize("precision", [3, 7, 10])
def test_totals_moments_extremes_and_bad_counts_are_exact(precision: int) -> None:
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.lognormal(0.0, 2.0, 3000), -rng.exponential(5.0, 500), [0.0, -0.0]])
    plain = NumericSketch()
    plain.update(values)
    plain.update([None, math.nan, math.inf, -math.inf, "x"])
    moved = plain.rebucketed(1.7, 0.35, precision)
    assert (moved.center, moved.scale, moved.precision) == (1.7, 0.35, precision)
    assert (moved.count, moved.missing, moved.non_finite, moved.invalid) == (values.size, 2, 2, 1)
    assert (moved.min, moved.max, moved.mean, moved.m2) == (plain.min, plain.max, plain.mean, plain.m2)
    keys, counts = moved.buckets()
    assert counts.sum() == values.size and (counts > 0).all()
    lower, upper = moved.bounds(keys)
    assert (upper >= values.min()).all() and (lower <= values.max()).all()  # no count outside [min, max]
    # At every target bound the cumulative count is within the count of the source bucket holding it (+1).
    source_keys, source_counts = plain.buckets()
    source_lower, source_upper = plain.bounds(source_keys)
    for key, bound, cumulative in zip(keys, upper, np.cumsum(counts)):
        true = int((values <= bound).sum() if key < 0 else (values < bound).sum())  # (lower, upper] below center
        straddling = int(source_counts[(source_lower <= bound) & (bound <= source_upper)].sum())
        assert abs(int(cumulative) - true) <= straddling + 1


def test_same_bucketing_is_a_copy_and_the_result_round_trips() -> None:
    plain = NumericSketch()
    plain.update(np.random.default_rng(4).normal(3.0, 1.0, 1000))
    same = plain.rebucketed(0.0, 1.0, 7)
    assert same == plain and same is not plain
    moved = plain.rebucketed(3.0, 1.3, 7)
    assert NumericSketch.from_dict(moved.to_dict()) == moved == pickle.loads(pickle.dumps(moved))
    other = NumericSketch(3.0, 1.3, 7)
    other.update([3.0, 4.0])
    assert other.merge(moved).count == 1002  # mergeable with the target bucketing's sketches


def test_empty_and_single_value() -> None:
    assert NumericSketch().rebucketed(5.0, 2.0, 7) == NumericSketch(5.0, 2.0, 7)
    single = NumericSketch()
    single.update([42.25, 42.25, None])
    direct = NumericSketch(40.0, 3.0)
    direct.update([42.25, 42.25, None])
    assert single.rebucketed(40.0, 3.0, 7) == direct


def test_bad_target_bucketing_raises() -> None:
    with pytest.raises(ValueError, match="scale"):
        NumericSketch().rebucketed(0.0, 0.0, 7)
