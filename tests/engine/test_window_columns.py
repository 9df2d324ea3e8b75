"""WindowData.columns: a window judged on some of the profile's columns reports nothing of the others."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from otel_mlmon.engine.evaluate import WindowData, evaluate_window
from otel_mlmon.sketch import NumericSketch
from tests.engine.synthetic import analysis_window, categorical, numeric, profile_from


def _data(seed: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"age": numeric(rng, n), "income": numeric(rng, n, "mean"), "plan": categorical(rng, n)}


def test_columns_outside_the_window_give_no_result_not_even_missing() -> None:
    profile, _ = profile_from(_data(0, 2000), chunk=500)
    full = analysis_window(profile, _data(1, 500))
    only_age = WindowData("analysis", 0, full.rows, {"age": full.sketches["age"]})

    unrestricted = evaluate_window(profile, only_age)
    assert {(r.column, r.metric) for r in unrestricted if r.metric == "column_missing"} == {
        ("income", "column_missing"), ("plan", "column_missing")}  # what the field is there to avoid

    judged = evaluate_window(profile, replace(only_age, columns=frozenset({"age"})))
    assert {r.column for r in judged} == {"age"}
    age_of_full = [r for r in evaluate_window(profile, full) if r.column == "age"]
    # The same values; p-values are Benjamini–Hochberg-adjusted over the columns judged, so they may differ.
    assert [(r.kind, r.metric, r.value) for r in judged] == [(r.kind, r.metric, r.value) for r in age_of_full]


def test_sketches_of_unjudged_columns_are_ignored_and_added_columns_still_reported() -> None:
    profile, _ = profile_from(_data(0, 2000), chunk=500)
    window = analysis_window(profile, _data(1, 500))
    extra = NumericSketch()
    extra.update(np.arange(500.0))
    window.sketches["new_feature"] = extra
    judged = evaluate_window(profile, replace(window, columns=frozenset({"plan"})))
    assert {r.column for r in judged} == {"plan", "new_feature"}
    assert [r.metric for r in judged if r.column == "new_feature"] == ["column_added"]
    assert evaluate_window(profile, replace(window, columns=frozenset())) == [
        r for r in judged if r.column == "new_feature"]
    assert evaluate_window(profile, replace(window, columns=None)) == evaluate_window(profile, window)
