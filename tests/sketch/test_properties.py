"""Property-based checks of the sketches' contracts over arbitrary inputs (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_mlmon.sketch import CategoricalSketch, NumericSketch

values = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                            st.integers(-(10**12), 10**12), st.none()), max_size=200)
bucketing = st.tuples(st.floats(-1e6, 1e6, allow_nan=False), st.floats(1e-30, 1e30, allow_nan=False),
                      st.integers(1, 10))


@settings(max_examples=300, deadline=None)
@given(values, st.integers(0, 200), bucketing)
def test_merge_of_parts_is_the_sketch_of_the_whole(data, cut, parameters) -> None:
    center, scale, precision = parameters
    cut = min(cut, len(data))
    whole = NumericSketch(center, scale, precision)
    whole.update(data)
    left, right = NumericSketch(center, scale, precision), NumericSketch(center, scale, precision)
    left.update(data[:cut])
    right.update(data[cut:])
    merged = left.merge(right)
    assert merged.buckets()[0].tolist() == whole.buckets()[0].tolist()
    assert merged.buckets()[1].tolist() == whole.buckets()[1].tolist()
    assert (merged.count, merged.missing, merged.non_finite) == (whole.count, whole.missing, whole.non_finite)
    assert merged.total == len(data)
    finite = [float(v) for v in data if v is not None and math.isfinite(float(v))]
    assert whole.count == len(finite)
    if finite:
        assert whole.min == min(finite) and whole.max == max(finite)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-1e300, 1e300, allow_nan=False), min_size=1, max_size=100), bucketing)
def test_every_finite_value_lies_within_its_bucket_and_bounds_are_finite(data, parameters) -> None:
    center, scale, precision = parameters
    sketch = NumericSketch(center, scale, precision)
    sketch.update(data)
    keys, counts = sketch.buckets()
    lower, upper = sketch.bounds(keys)
    assert counts.sum() == len(data)
    assert np.all(np.isfinite(lower)) and np.all(np.isfinite(upper)) and np.all(lower <= upper)
    bounds, explicit = sketch.to_explicit()
    assert sum(explicit) == len(data) and all(b < a for b, a in zip(bounds, bounds[1:]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=3), st.integers(-3, 3), st.none(), st.booleans()), max_size=100),
       st.integers(0, 100))
def test_categorical_merge_is_exact_below_the_cap(data, cut) -> None:
    cut = min(cut, len(data))
    whole = CategoricalSketch()
    whole.update(data)
    left, right = CategoricalSketch(), CategoricalSketch()
    left.update(data[:cut])
    right.update(data[cut:])
    assert left.merge(right) == whole
    assert whole.total == len(data)
