"""Segments: bounded values chosen on the reference, per-segment realized metrics equal to scikit-learn on the
segment's rows, a shift in one segment flagged there only, profiles that survive JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as sk

from otel_mlmon.engine.segments import (
    MISSING,
    OTHER,
    SegmentedProfile,
    assign_segments,
    build_segmented_profile,
    choose_segments,
    evaluate_segmented,
)
from otel_mlmon.engine.windows import WindowSpec

DEVICES = np.array(["desktop", "mobile", "tablet"])


def _table(seed: int, rows: int, shifted: str | None = None) -> dict[str, np.ndarray]:
    """Two features, a device segment column; a logistic model's scores and labels; ``shifted``: the device
    whose feature x moves by one sd (in the analysis)."""
    rng = np.random.default_rng(seed)
    device = rng.choice(DEVICES, rows, p=[0.5, 0.35, 0.15])
    x = rng.normal(0.0, 1.0, rows) + np.where(device == shifted, 1.0, 0.0)
    z = rng.normal(0.0, 1.0, rows)
    score = 1 / (1 + np.exp(-(1.5 * x + z + np.where(device == "mobile", -0.5, 0.0))))
    y = (rng.random(rows) < score).astype(int)
    return {"x": x, "z": z, "device": device, "score": score, "y_pred": (score > 0.5).astype(int), "y": y}


def _profile(table: dict[str, np.ndarray], **options) -> SegmentedProfile:
    return build_segmented_profile(table, WindowSpec(chunks=4), segment_by="device", model="m",
                                   prediction_column="y_pred", score_columns={"1": "score"}, target_column="y",
                                   categorical=["device"], **options)


def test_segments_are_bounded_most_frequent_first_with_missing_apart() -> None:
    values = np.array([f"v{i}" for i in range(12) for _ in range(20 - i)] + [None, None], dtype=object)
    chosen = choose_segments(values, max_segments=5)
    assert chosen == ["v0", "v1", "v2", "v3", OTHER, MISSING]
    names = assign_segments(np.array(["v2", "v11", None, "new"], dtype=object), chosen)
    assert names.tolist() == ["v2", OTHER, MISSING, OTHER]
    assert choose_segments(np.array(["b", "a", "b"])) == ["b", "a"]  # few values: all kept, no __other__
    assert choose_segments(np.array([1.0, 2.0, 1.0])) == ["1", "2"]  # whole numbers as the sketches key them
    with pytest.raises(ValueError, match=r"'age' is numeric with 50 distinct values .* bin it first"):
        choose_segments(np.arange(50) + 0.5, column="age")


def test_per_segment_realized_performance_equals_sklearn_on_the_segments_rows() -> None:
    profile = _profile(_table(0, 6000))
    analysis = _table(1, 3000)
    results = evaluate_segmented(profile, analysis)
    performance = {(r.segment, r.result.metric): r.result.value for r in results
                   if r.result.kind == "performance"}
    for segment in [None, *DEVICES]:
        rows = np.ones(3000, dtype=bool) if segment is None else analysis["device"] == segment
        y, p, s = analysis["y"][rows], analysis["y_pred"][rows], analysis["score"][rows]
        assert performance[segment, "accuracy"] == pytest.approx(sk.accuracy_score(y, p), abs=1e-12)
        assert performance[segment, "f1"] == pytest.approx(sk.f1_score(y, p), abs=1e-12)
        assert performance[segment, "recall"] == pytest.approx(sk.recall_score(y, p), abs=1e-12)
        assert performance[segment, "roc_auc"] == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
        assert performance[segment, "log_loss"] == pytest.approx(sk.log_loss(y, s), abs=1e-9)
    rows = {r.segment: r.result.rows for r in results}
    assert rows == {None: 3000, **{d: int(np.sum(analysis["device"] == d)) for d in DEVICES}}
    assert set(profile.segments) == set(DEVICES)
    assert profile.segments["tablet"].classes == profile.whole.classes == ["0", "1"]


def test_a_shift_in_one_segment_is_flagged_in_that_segment_only() -> None:
    profile = _profile(_table(0, 8000))
    for seed in range(2, 5):
        results = evaluate_segmented(profile, _table(seed, 4000, shifted="tablet"))
        drifted = {(r.segment, r.result.column) for r in results if r.result.kind == "drift" and r.result.alert}
        assert ("tablet", "x") in drifted
        assert not {(s, c) for s, c in drifted if s in ("desktop", "mobile")}
        assert ("tablet", "z") not in drifted
        stationary = evaluate_segmented(profile, _table(seed + 10, 4000))
        assert not [r for r in stationary if r.result.kind == "drift" and r.result.alert]


def test_values_unseen_in_the_reference_are_judged_as_other_against_the_whole_reference() -> None:
    profile = _profile(_table(0, 4000))
    analysis = _table(7, 1000)
    analysis["device"] = np.where(analysis["device"] == "tablet", "watch", analysis["device"]).astype(object)
    analysis["device"][:5] = None
    results = evaluate_segmented(profile, analysis)
    segments = {r.segment for r in results}
    assert segments == {None, "desktop", "mobile", OTHER, MISSING}
    other = [r.result for r in results if r.segment == OTHER and r.result.kind == "performance"]
    assert other and all(r.rows == int(np.sum(analysis["device"] == "watch")) for r in other)
    assert {"segment": OTHER}.items() <= next(r for r in results if r.segment == OTHER).as_json().items()


def test_segmented_profile_survives_json_with_the_same_results() -> None:
    profile = _profile(_table(0, 3000), max_segments=2)
    assert list(profile.segments) == ["desktop", OTHER]
    again = SegmentedProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    analysis = _table(3, 1500)
    first = [r.as_json() for r in evaluate_segmented(profile, analysis)]
    assert first == [r.as_json() for r in evaluate_segmented(again, analysis)]
    with pytest.raises(ValueError, match="not an otel-mlmon segmented profile"):
        SegmentedProfile.from_dict(profile.whole.to_dict())
    with pytest.raises(ValueError, match="segment column 'region' is not in the table"):
        build_segmented_profile(_table(0, 100), WindowSpec(chunks=1), segment_by="region", model="m")
