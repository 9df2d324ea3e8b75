from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from otel_mlmon.sketch import OTHER, CategoricalSketch, category_key


def test_keys_unify_numbers_and_strings_and_missing() -> None:
    assert category_key(1) == category_key(1.0) == category_key("1") == "1"
    assert category_key(np.int64(3)) == "3" and category_key(2.5) == "2.5"
    assert category_key(True) == "1" == category_key(1) and category_key(np.bool_(False)) == "0"
    assert category_key(None) is None and category_key(math.nan) is None and category_key(b"x") == "x"


def test_counts_and_missing() -> None:
    s = CategoricalSketch()
    s.update(np.array(["a", "b", None, "a", np.nan, 3], dtype=object))
    assert s.counts == {"a": 2, "b": 1, "3": 1} and s.missing == 2 and s.total == 6


@pytest.mark.parametrize("cut", [0, 1, 50, 99])
def test_merge_of_parts_equals_whole_below_cap(cut: int) -> None:
    rng = np.random.default_rng(1)
    values = rng.choice(["x", "y", "z", None], size=100).tolist()
    whole = CategoricalSketch()
    whole.update(values)
    left, right = CategoricalSketch(), CategoricalSketch()
    left.update(values[:cut])
    right.update(values[cut:])
    assert left.merge(right) == whole


def test_cap_counts_new_categories_as_other_and_top_k() -> None:
    s = CategoricalSketch(max_categories=3)
    s.update(["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2 + ["e"])
    assert s.counts == {"a": 5, "b": 4, "c": 3, OTHER: 3}
    assert s.top(2) == {"a": 5, "b": 4, OTHER: 6}
    assert sum(s.top(1).values()) == s.count


def test_unhashable_values_are_counted_by_their_string() -> None:
    s = CategoricalSketch()
    s.update([[1, 2], [1, 2], {"k": 1}])
    assert s.counts == {"[1, 2]": 2, "{'k': 1}": 1}


def test_pickle_dict_round_trip_and_repr() -> None:
    s = CategoricalSketch(max_categories=10)
    s.update(["a", "b", None])
    assert pickle.loads(pickle.dumps(s)) == s
    assert CategoricalSketch.from_dict(s.to_dict()) == s
    assert repr(s) == "CategoricalSketch(max_categories=10, categories=2, count=2, missing=1)"


def test_bad_cap_raises() -> None:
    with pytest.raises(ValueError):
        CategoricalSketch(max_categories=0)


@pytest.mark.parametrize("values", [
    np.arange(-50, 150) % 7,
    np.array([0.0, -0.0, 1.0, 1.5, np.nan, np.inf, -np.inf, 2.0**60, 1e-300] * 20),
    np.array([True, False] * 50),
    np.array([1, 2, 3] * 40, dtype=np.uint8),
    np.array(["a", None, 1, 1.0, True] * 20, dtype=object),
    np.array([1.0, 2.0]),  # short: item by item
])
def test_category_keys_equal_category_key_item_by_item(values) -> None:
    from otel_mlmon.sketch import category_key, category_keys

    assert category_keys(values) == [category_key(v) for v in values.tolist()]
