"""One reference-profile builder: every field set before the reference windows are measured, and the in-memory
builder (demo, processor bootstrap) equal to the file path of ``mlmon reference build``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk

from otel_mlmon.batch.runner import Columns
from otel_mlmon.batch.runner import build_profile as build_from_file
from otel_mlmon.engine.columns import build_profile
from otel_mlmon.engine.windows import WindowSpec


def _table(n: int = 2400, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 10, n)
    plan = rng.choice(["basic", "gold"], n).astype(object)
    score = 1 / (1 + np.exp(-(age - 40) / 10))
    return {"age": age, "plan": plan, "visits": rng.integers(0, 9, n).astype(float), "score": score,
            "prediction": np.where(score > 0.5, "1", "0").astype(object),
            "target": np.where(rng.random(n) < score, "1", "0").astype(object)}


def _build(table: dict[str, np.ndarray], **extra: Any):
    return build_profile(table, WindowSpec(chunk_size=600), model="churn", version="3",
                         prediction_column="prediction", score_columns={"1": "score"}, target_column="target",
                         **extra)


def test_every_field_is_set_and_the_target_gives_reference_performance() -> None:
    table = _table()
    profile, windows = _build(table, categorical=["visits"])
    assert (profile.model, profile.version, profile.task, profile.classes) == ("churn", "3", "classification",
                                                                               ["0", "1"])
    assert {name: (c.kind, c.role) for name, c in profile.columns.items()} == {
        "age": ("numeric", "feature"), "plan": ("categorical", "feature"), "visits": ("categorical", "feature"),
        "score": ("numeric", "score"), "prediction": ("categorical", "prediction")}  # the target is not sketched
    assert (profile.prediction_column, profile.score_columns, profile.target_column) == (
        "prediction", {"1": "score"}, "target")
    y, p, s = table["target"].astype(int), table["prediction"].astype(int), table["score"]
    assert profile.reference_performance["accuracy"] == pytest.approx(sk.accuracy_score(y, p), abs=1e-12)
    assert profile.reference_performance["roc_auc"] == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    # Measured after the roles and target were set: the performance band has its reference windows.
    series = profile.reference_values["target|performance|accuracy"]
    assert [v for v, _, _ in series] == pytest.approx(
        [sk.accuracy_score(y[i:i + 600], p[i:i + 600]) for i in range(0, 2400, 600)], abs=1e-12)
    assert [w["labeled_rows"] for w in profile.reference_windows] == [600] * 4 == [len(w.labeled) for w in windows]


def _close(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            _close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float) and not (math.isnan(a) and math.isnan(b)):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    else:
        assert a == b or (a != a and b != b), path


def test_the_in_memory_builder_equals_the_file_path(tmp_path) -> None:
    table = _table()
    path = tmp_path / "reference.parquet"
    pd.DataFrame(table).to_parquet(path)
    from_file, _ = build_from_file(str(path), Columns(target_column="target", prediction_column="prediction",
                                                      score_column="score", task="classification"),
                                   WindowSpec(chunk_size=600), "churn", "3")
    in_memory, _ = _build(table)
    _close(in_memory.to_dict(), from_file.to_dict())


def test_classes_are_inferred_and_outputs_must_be_columns() -> None:
    table = _table()
    profile, _ = build_profile(table, WindowSpec(chunks=2), model="m", prediction_column="prediction",
                               target_column="absent")
    assert profile.classes == ["0", "1"] and profile.reference_performance == {}
    with pytest.raises(ValueError, match="'y_pred' are not among the profile's columns"):
        build_profile(table, WindowSpec(chunks=2), model="m", prediction_column="y_pred")
    with pytest.raises(ValueError, match="window by rows"):
        build_profile(table, WindowSpec(window="1h"), model="m")
    regression, _ = build_profile({"x": table["age"], "y_hat": table["score"], "y": table["score"] * 0.9},
                                  WindowSpec(chunks=3), model="r", task="regression", prediction_column="y_hat",
                                  target_column="y")
    assert regression.classes == [] and regression.reference_performance["mae"] == pytest.approx(
        sk.mean_absolute_error(table["score"] * 0.9, table["score"]), abs=1e-12)
