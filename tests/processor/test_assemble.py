"""A window's data read a column at a time equals the row-by-row reading (the evaluation's fast path)."""

from __future__ import annotations

import numpy as np
import pytest

from otel_mlmon.engine.calibration import Calibration
from otel_mlmon.engine.columns import profile_from_columns
from otel_mlmon.engine.windows import WindowSpec
from otel_mlmon.processor.assemble import window_data
from otel_mlmon.processor.store import StoredRows


def _profile(task: str):
    rng = np.random.default_rng(1)
    if task == "regression":
        columns = {"value": rng.normal(size=500), "x": rng.normal(size=500)}
    else:
        columns = {"score": rng.beta(2, 2, 500), "prediction": rng.integers(0, 2, 500).astype(str).astype(object),
                   "x": rng.normal(size=500)}
    profile, _ = profile_from_columns(columns, WindowSpec(chunk_size=100), model="m", task=task)
    if task == "regression":
        profile.columns["value"].role = "prediction"
        profile.prediction_column = "value"
    else:
        profile.columns["score"].role = "score"
        profile.columns["prediction"].role = "prediction"
        profile.classes, profile.score_columns, profile.prediction_column = ["0", "1"], {"1": "score"}, "prediction"
        score = rng.random(500)  # a calibration: the window then carries its scored rows (CBPE)
        profile.calibration = Calibration.fit(["0", "1"], (rng.random(500) < score).astype(int).astype(str),
                                              np.column_stack([1 - score, score]))
    return profile


def _rows(task: str, n: int, seed: int) -> StoredRows:
    rng = np.random.default_rng(seed)
    maybe = rng.random(n) < 0.8  # some rows without an output, some without a label
    labeled = rng.random(n) < 0.6
    labels = [str(v) if m else None for v, m in zip(rng.integers(0, 2, n), maybe)]
    scores = [float(v) if m else None for v, m in zip(rng.random(n), maybe)] if task != "regression" else [None] * n
    values = [float(v) if m else None for v, m in zip(rng.normal(size=n), maybe)] if task == "regression" \
        else [None] * n
    truths = [(float(rng.normal()) if task == "regression" else int(rng.integers(0, 2))) if k else None
              for k in labeled]
    return StoredRows([f"p{i}" for i in range(n)], list(range(n)), labels if task != "regression" else [None] * n,
                      scores, values, [None] * n, truths, [i + 5 if k else None for i, k in enumerate(labeled)])


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("outputs", [True, False])
def test_columns_at_a_time_equal_rows_one_by_one(task: str, outputs: bool) -> None:
    profile = _profile(task)
    rows = _rows(task, 300, seed=7)
    assert rows.plain
    fast = window_data(profile, 3, rows, [], features=False, outputs=outputs)
    slow = window_data(profile, 3, rows.joined(), [], features=False, outputs=outputs)
    assert fast.rows == slow.rows == 300 and fast.columns == slow.columns and (fast.start, fast.end) == \
        (slow.start, slow.end)
    assert {k: v.to_dict() for k, v in fast.sketches.items()} == {k: v.to_dict() for k, v in slow.sketches.items()}
    assert (fast.labeled.y_true, fast.labeled.y_pred, fast.labeled.scores) == \
        (slow.labeled.y_true, slow.labeled.y_pred, slow.labeled.scores)
    assert len(slow.labeled) == (int(sum(t is not None and o is not None for t, o in zip(
        rows.truths, rows.values if task == "regression" else rows.labels))) if outputs else 0)
    if task == "regression" or not outputs:  # no estimate for a regressor, none on a sketch-only window
        assert fast.scored is None and slow.scored is None
        return
    assert fast.scored is not None and slow.scored is not None
    assert (fast.scored.y_pred, fast.scored.scores) == (slow.scored.y_pred, slow.scored.scores)
    # every row with a predicted label and a score, labelled or not: [1 - s, s]
    expected = [(label, [1 - score, score]) for label, score in zip(rows.labels, rows.scores)
                if label is not None and score is not None]
    assert list(zip(fast.scored.y_pred, fast.scored.scores)) == expected
    assert len(expected) > len(fast.labeled)


def test_rows_with_extras_take_the_row_path() -> None:
    profile = _profile("classification")
    rows = _rows("classification", 50, seed=3)
    rows.extras[10] = '{"features": {"x": 1.5}}'
    assert not rows.plain
    data = window_data(profile, 0, rows, [], features=True)
    assert data.sketches["x"].count == 1  # the one captured value, read row by row


def test_multiclass_scores_are_scored_in_the_profiles_class_order() -> None:
    rng = np.random.default_rng(5)
    classes = ["a", "b", "c"]
    profile, _ = profile_from_columns({"x": rng.normal(size=300)}, WindowSpec(chunk_size=100), model="m")
    profile.classes, profile.prediction_column = classes, "x"
    raw = rng.dirichlet([1, 1, 1], 300)
    profile.calibration = Calibration.fit(classes, [classes[int(k)] for k in raw.argmax(axis=1)], raw)
    extras = ['{"scores": {"c": 0.5, "a": 0.2, "b": 0.3}}', '{"scores": {"a": 0.9}}', None]
    rows = StoredRows(["p0", "p1", "p2"], [1, 2, 3], ["c", "a", "b"], [None] * 3, [None] * 3, extras,
                      [None, "a", None], [None, 9, None])
    data = window_data(profile, 0, rows, [], features=False)
    assert data.scored is not None  # the row lacking a class score and the row without scores are left out
    assert (data.scored.y_pred, data.scored.scores) == (["c"], [[0.2, 0.3, 0.5]])
    profile.calibration = None  # an uncalibrated profile: nothing to estimate with
    assert window_data(profile, 0, rows, [], features=False).scored is None
