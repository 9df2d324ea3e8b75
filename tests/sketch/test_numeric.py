from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from otel_mlmon.sketch import NumericSketch, bucket_keys, key_bounds, update_columns
from otel_mlmon.sketch._numeric import index_to_key

PARAMETERS = [(0.0, 1.0, 7), (1000.0, 2.5, 7), (-3.0, 0.01, 5), (0.0, 1.0, 10), (1e7, 1.0, 7)]


def _data(seed: int, center: float, scale: float, n: int = 5000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(center, 3 * scale, n // 2), center + scale * rng.standard_cauchy(n // 2)])
    x[:7] = center  # exact center values land next to zero after standardising
    x[7] = -0.0
    return x


@pytest.mark.parametrize(("center", "scale", "precision"), PARAMETERS)
def test_every_value_lies_in_its_bucket(center: float, scale: float, precision: int) -> None:
    x = _data(1, center, scale)
    keys = index_to_key(bucket_keys(x, center, scale, precision))
    lower, upper = key_bounds(keys, center, scale, precision)
    assert np.all(lower <= x) and np.all(x <= upper)
    # Relative width of every bucket away from the zero bucket: at most 2**-precision of its magnitude.
    t_low, t_high = (lower - center) / scale, (upper - center) / scale
    far = np.abs(t_low) > 1e-6
    width = (t_high - t_low)[far] / np.minimum(np.abs(t_low), np.abs(t_high))[far]
    assert np.all(width <= 2.0**-precision * (1 + 1e-9))


@pytest.mark.parametrize(("center", "scale", "precision"), PARAMETERS)
@pytest.mark.parametrize("cut", [0, 1, 2500, 4999])
def test_merge_of_parts_equals_sketch_of_whole(center: float, scale: float, precision: int, cut: int) -> None:
    x = _data(2, center, scale)
    whole = NumericSketch(center, scale, precision)
    whole.update(x)
    left, right = NumericSketch(center, scale, precision), NumericSketch(center, scale, precision)
    left.update(x[:cut])
    right.update(x[cut:])
    merged = left.merge(right)
    assert merged == whole
    keys_m, counts_m = merged.buckets()
    keys_w, counts_w = whole.buckets()
    np.testing.assert_array_equal(keys_m, keys_w)
    np.testing.assert_array_equal(counts_m, counts_w)
    assert merged.min == x.min() and merged.max == x.max()
    assert merged.mean == pytest.approx(x.mean(), rel=1e-9, abs=1e-9)
    assert merged.variance == pytest.approx(x.var(), rel=1e-7)


def test_merge_is_commutative_and_associative() -> None:
    rng = np.random.default_rng(3)
    parts = [rng.lognormal(size=n) for n in (10, 500, 1)]
    sketches = []
    for part in parts:
        s = NumericSketch()
        s.update(part)
        sketches.append(s)
    a, b, c = (s.copy() for s in sketches)
    left = a.merge(b).merge(c)
    a, b, c = (s.copy() for s in sketches)
    right = c.merge(b.merge(a))
    assert left == right


def test_counts_missing_non_finite_invalid_and_strings() -> None:
    s = NumericSketch()
    s.update([1.0, None, float("nan"), math.inf, -math.inf, "2.5", "abc", -4, True])
    assert (s.count, s.missing, s.non_finite, s.invalid) == (4, 2, 2, 1)
    assert s.total == 9
    assert s.min == -4.0 and s.max == 2.5
    assert s.sum == pytest.approx(1.0 + 2.5 - 4 + 1)


def test_empty_and_single_row() -> None:
    s = NumericSketch()
    s.update([])
    assert s.count == 0 and math.isnan(s.mean) and math.isnan(s.min)
    s.update(np.array([-7.25]))
    keys, counts = s.buckets()
    assert counts.tolist() == [1] and s.min == s.max == -7.25 and s.variance == 0.0
    low, high = s.bounds(keys)
    assert low[0] <= -7.25 <= high[0]


def test_update_columns_equals_per_column_updates_with_bad_values() -> None:
    rng = np.random.default_rng(4)
    block = rng.normal(size=(20_000, 6)) * np.array([1, 10, 0.001, 1e6, 1, 3])
    block[::97, 2] = np.nan
    block[5, 4] = np.inf
    fast = [NumericSketch() for _ in range(6)]
    update_columns(fast, block)
    slow = [NumericSketch() for _ in range(6)]
    for j, sketch in enumerate(slow):
        sketch.update(block[:, j])
    assert fast == slow
    assert fast[2].missing == len(range(0, 20_000, 97)) and fast[4].non_finite == 1


def test_update_columns_with_reference_bucketing() -> None:
    rng = np.random.default_rng(5)
    block = rng.normal(50, 2, size=(3000, 2))
    fast = [NumericSketch(50, 2), NumericSketch(49, 3)]
    update_columns(fast, block)
    slow = [NumericSketch(50, 2), NumericSketch(49, 3)]
    for j in range(2):
        slow[j].update(block[:, j])
    assert fast == slow


@pytest.mark.parametrize(("center", "scale", "precision"), PARAMETERS)
def test_explicit_histogram_round_trip(center: float, scale: float, precision: int) -> None:
    s = NumericSketch(center, scale, precision)
    s.update(_data(6, center, scale))
    bounds, counts = s.to_explicit()
    assert len(counts) == len(bounds) + 1 and np.all(np.diff(bounds) > 0)
    assert sum(counts) == s.count and counts[0] == counts[-1] == 0
    back = NumericSketch.from_explicit(bounds, counts, count=s.count, total=s.sum, minimum=s.min,
                                       maximum=s.max, m2=s.m2, center=center, scale=scale, precision=precision)
    assert back == s


def test_from_explicit_rejects_inconsistent_points() -> None:
    with pytest.raises(ValueError, match="bounds"):
        NumericSketch.from_explicit([1.0, 2.0], [0, 1], count=1, total=1.5, minimum=1.5, maximum=1.5)
    with pytest.raises(ValueError, match="count"):
        NumericSketch.from_explicit([1.0, 2.0], [0, 1, 0], count=2, total=1.5, minimum=1.5, maximum=1.5)


def test_serialisation_pickle_and_repr() -> None:
    s = NumericSketch(2.0, 0.5, 6)
    s.update(np.random.default_rng(7).normal(2, 1, 400))
    s.update([None, "x", math.inf])
    assert NumericSketch.from_dict(s.to_dict()) == s
    assert pickle.loads(pickle.dumps(s)) == s
    assert "NumericSketch(center=2.0, scale=0.5, precision=6, count=400" in repr(s)


def test_merge_refuses_other_bucketing_and_types() -> None:
    with pytest.raises(ValueError, match="different bucketing"):
        NumericSketch().merge(NumericSketch(scale=2.0))
    with pytest.raises(TypeError):
        NumericSketch().merge("x")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [{"scale": 0.0}, {"scale": math.inf}, {"center": math.nan}, {"precision": 0},
                                 {"precision": 11}])
def test_bad_parameters_raise(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        NumericSketch(**bad)  # type: ignore[arg-type]


def test_cdf_from_buckets_matches_exact_cdf() -> None:
    """The property the engine relies on: the bucketed CDF is within one bucket's mass of the exact CDF."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=100_000)
    s = NumericSketch()
    s.update(x)
    keys, counts = s.buckets()
    _, upper = s.bounds(keys)
    cdf = np.cumsum(counts) / counts.sum()
    exact = np.searchsorted(np.sort(x), upper, side="left") / x.size
    assert np.max(np.abs(cdf - exact)) < 1e-12 + 1 / x.size
    assert counts.max() / counts.sum() < 0.005


@pytest.mark.parametrize("values", [[1.5, None, 2, -3.25, float("nan")], [2**70, 1.5], [10**400, 1.0, None],
                                    [1.0, "2.5"], [1, True, None]])
def test_plain_lists_count_as_the_item_by_item_reading(values) -> None:
    """Lists of floats, ints and None take numpy's conversion; each item must count as ``float(item)`` does (an int
    past the float range is invalid, not an error)."""
    s = NumericSketch()
    s.update(values)
    want = NumericSketch()
    for item in values:  # each item beside a string, which takes the general item-by-item path (one invalid more)
        want.update(np.asarray([item, "x"], dtype=object))
    assert (s.count, s.missing, s.non_finite, s.invalid + len(values)) == (want.count, want.missing, want.non_finite,
                                                                           want.invalid)
    assert s.sum == pytest.approx(want.sum, rel=1e-12)
