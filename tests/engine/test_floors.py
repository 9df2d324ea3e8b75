"""The effect-size floors are the methods' values for a small effect (Cohen): recomputed here."""

from __future__ import annotations

import numpy as np
import pytest

from otel_mlmon.engine.drift import CATEGORICAL, METHODS, NUMERIC, CategoricalComparison, NumericComparison
from otel_mlmon.engine.profile import bin_keys
from otel_mlmon.sketch import CategoricalSketch, NumericSketch


def test_numeric_floors_are_the_values_of_a_shift_of_0_2_sd() -> None:
    rng = np.random.default_rng(0)
    ref, cur = NumericSketch(), NumericSketch()
    ref.update(rng.normal(0, 1, 400_000))
    cur.update(rng.normal(0.2, 1, 400_000))
    comparison = NumericComparison.build(ref, cur, bin_keys(ref), 1.0)
    for method in METHODS.values():
        if NUMERIC in method.kinds:
            assert method.floors[NUMERIC] == pytest.approx(method.compute(comparison).value, rel=0.15), method.name


def test_categorical_floors_are_the_values_of_cohens_w_0_1() -> None:
    rng = np.random.default_rng(1)
    base = np.full(5, 0.2)
    shifted = base + np.array([1, -1, 0, 0, 0]) * np.sqrt(0.01 * 0.2 / 2)  # Cohen's w = 0.1
    assert np.sqrt(np.sum((shifted - base) ** 2 / base)) == pytest.approx(0.1)
    ref, cur = CategoricalSketch(), CategoricalSketch()
    ref.update(rng.choice(list("abcde"), 400_000, p=base))
    cur.update(rng.choice(list("abcde"), 400_000, p=shifted))
    comparison = CategoricalComparison.build(ref, cur)
    for method in METHODS.values():
        if CATEGORICAL in method.kinds:
            assert method.floors[CATEGORICAL] == pytest.approx(method.compute(comparison).value, rel=0.2), method.name
