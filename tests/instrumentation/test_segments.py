"""Segments (ml.segment) and fairness groups (ml.fairness.group) on the live path: from an input column or a W3C
baggage entry, bounded per model, on the rows of ml.predictions events and on every sketch point (sketched per
segment: the merge of a feature's segment points is the model's whole sketch); nothing changes without them."""

from __future__ import annotations

import json
import pickle
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pandas as pd
import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import otel_mlmon
import otel_mlmon.instrumentation._api
from otel_mlmon import semconv
from otel_mlmon.instrumentation import _guard, force_flush
from otel_mlmon.sketch import NumericSketch
from tests.conftest import Providers, column

SKETCH_METRICS = (semconv.ML_FEATURE_VALUE, semconv.ML_FEATURE_VALUE_M2, semconv.ML_FEATURE_MISSING,
                  semconv.ML_FEATURE_CATEGORY_COUNT, semconv.ML_PREDICTION_SCORE_METRIC)
REGIONS = ["eu", "us", "apac", "latam"]


def _frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(10.0, 3.0, rows)
    a[rng.random(rows) < 0.1] = np.nan
    region = rng.choice(REGIONS, rows).astype(object)
    region[rng.random(rows) < 0.1] = None
    return pd.DataFrame({"a": a, "b": rng.exponential(2.0, rows),
                         "color": rng.choice(["red", "green", "blue"], rows).astype(object),
                         "region": region, "sex": rng.choice(["f", "m"], rows).astype(object)})


@pytest.fixture(scope="module")
def fitted() -> bytes:
    """A real scikit-learn model on a DataFrame that uses a, b and color (region and sex are ignored), pickled."""
    frame = _frame(400, seed=1)
    y = (frame["b"] + (frame["color"] == "red") > 2.5).astype(int)
    select = ColumnTransformer([("n", SimpleImputer(), ["a", "b"]),
                                ("c", OneHotEncoder(handle_unknown="ignore"), ["color"])], remainder="drop")
    return pickle.dumps(make_pipeline(select, LogisticRegression(max_iter=1000)).fit(frame, y))


@pytest.fixture
def model(fitted: bytes) -> Any:
    return pickle.loads(fitted)


def _copy(model: Any) -> Any:
    """An uninstrumented copy of the model."""
    return otel_mlmon.instrumentation._api.uninstrument_model(pickle.loads(pickle.dumps(model)))


def _points(providers: Providers, model_name: str) -> dict[str, list[Any]]:
    force_flush()
    return {name: [p for p in providers.sketches.points(name)
                   if p.attributes[semconv.ML_MODEL_NAME] == model_name] for name in SKETCH_METRICS}


def test_segment_column_gives_each_row_its_bounded_segment(providers: Providers, model) -> None:
    frame = pd.DataFrame({"a": [1.0] * 9, "b": [2.0] * 9, "color": ["red"] * 9, "sex": ["f"] * 9,
                          "region": ["eu", "us", "apac", None, "eu", np.nan, "latam", "us", pd.NA]})
    otel_mlmon.instrument_model(model, name="m", segment_by="region", max_segments=3, **providers.kwargs())
    expected = _copy(model).predict(frame)
    result = model.predict(frame)
    np.testing.assert_array_equal(result, expected)  # the model got its input unchanged
    model.predict(frame.iloc[:2].assign(region=["mena", "us"]))  # a new value later: __other__, a kept one stays
    events = providers.events(semconv.EVENT_PREDICTIONS)
    assert column(events, semconv.ML_SEGMENT) == [
        "eu", "us", "__other__", "__missing__", "eu", "__missing__", "__other__", "us", "__missing__",
        "__other__", "us"]
    assert all(semconv.ML_FAIRNESS_GROUP not in e.attributes for e in events)
    points = _points(providers, "m")
    assert {p.attributes[semconv.ML_SEGMENT] for p in points[semconv.ML_FEATURE_VALUE]} == {
        "eu", "us", "__other__", "__missing__"}
    # Never on spans, durations or the row counter.
    assert all(semconv.ML_SEGMENT not in s.attributes for s in providers.finished_spans())
    for name in (semconv.ML_OPERATION_DURATION, semconv.ML_PREDICTIONS):
        found = providers.metric_points(name)
        assert found and all(semconv.ML_SEGMENT not in p.attributes for p in found)


def _merged_numeric(points: list[Any]) -> dict[str, NumericSketch]:
    merged: dict[str, NumericSketch] = {}
    for p in points:
        a = p.attributes
        sketch = NumericSketch.from_explicit(
            p.explicit_bounds, p.bucket_counts, count=p.count, total=p.sum, minimum=p.min, maximum=p.max,
            center=a[semconv.ML_SKETCH_CENTER], scale=a[semconv.ML_SKETCH_SCALE],
            precision=a[semconv.ML_SKETCH_PRECISION])
        name = a[semconv.ML_FEATURE_NAME]
        if name in merged:
            merged[name].merge(sketch)
        else:
            merged[name] = sketch
    return merged


def _sums(points: list[Any], *keys: str) -> Counter[tuple[Any, ...]]:
    out: Counter[tuple[Any, ...]] = Counter()
    for p in points:
        out[tuple(p.attributes[k] for k in keys)] += p.value
    return out


def test_segment_sketches_merge_into_the_whole_models_sketch(providers: Providers, model) -> None:
    frame = _frame(300)
    segmented = otel_mlmon.instrument_model(model, name="seg", segment_by="region", **providers.kwargs())
    plain = otel_mlmon.instrument_model(_copy(model), name="plain", **providers.kwargs())
    for m in (segmented, plain):
        for begin in range(0, 200, 10):  # small calls (staged rows) ...
            m.predict_proba(frame.iloc[begin: begin + 10])
        m.predict_proba(frame.iloc[200:])  # ... and one call of 100 rows
    seg, whole = _points(providers, "seg"), _points(providers, "plain")
    # Segmented: every sketch point carries ml.segment, one per region and __missing__; unsegmented: none does.
    for name in SKETCH_METRICS:
        assert seg[name] and all(semconv.ML_SEGMENT in p.attributes for p in seg[name]), name
        assert whole[name] and all(semconv.ML_SEGMENT not in p.attributes for p in whole[name]), name
    assert {p.attributes[semconv.ML_SEGMENT] for p in seg[semconv.ML_FEATURE_VALUE]} == {*REGIONS, "__missing__"}
    # Numeric features: the merge of the segments' sketches is the whole sketch, bucket for bucket.
    merged, reference = _merged_numeric(seg[semconv.ML_FEATURE_VALUE]), _merged_numeric(
        whole[semconv.ML_FEATURE_VALUE])
    assert set(merged) == set(reference) == {"a", "b"}
    for name in merged:
        for mine, theirs in zip(merged[name].buckets(), reference[name].buckets()):
            np.testing.assert_array_equal(mine, theirs)
        assert merged[name].count == reference[name].count == int(frame[name].notna().sum())
        assert merged[name].min == reference[name].min == frame[name].min()
        assert merged[name].max == reference[name].max == frame[name].max()
    # Categories and missing values: counts add up exactly, and equal pandas' counts of the data.
    categories = _sums(seg[semconv.ML_FEATURE_CATEGORY_COUNT], semconv.ML_FEATURE_NAME, semconv.ML_FEATURE_CATEGORY)
    assert categories == _sums(whole[semconv.ML_FEATURE_CATEGORY_COUNT], semconv.ML_FEATURE_NAME,
                               semconv.ML_FEATURE_CATEGORY)
    assert {c: n for (f, c), n in categories.items() if f == "color"} == frame["color"].value_counts().to_dict()
    missing = _sums(seg[semconv.ML_FEATURE_MISSING], semconv.ML_FEATURE_NAME, semconv.ML_FEATURE_MISSING_REASON)
    assert missing == _sums(whole[semconv.ML_FEATURE_MISSING], semconv.ML_FEATURE_NAME,
                            semconv.ML_FEATURE_MISSING_REASON)
    assert missing[("a", semconv.MISSING_NULL)] == int(frame["a"].isna().sum())
    # Each segment's own sketch holds exactly its rows.
    per_segment: dict[str, int] = defaultdict(int)
    for p in seg[semconv.ML_FEATURE_VALUE]:
        if p.attributes[semconv.ML_FEATURE_NAME] == "b":
            per_segment[p.attributes[semconv.ML_SEGMENT]] += p.count
    assert dict(per_segment) == frame["region"].fillna("__missing__").value_counts().to_dict()
    # Score histograms too.
    scores = [p for p in seg[semconv.ML_PREDICTION_SCORE_METRIC]]
    totals = np.sum([p.bucket_counts for p in scores], axis=0)
    np.testing.assert_array_equal(totals, np.sum([p.bucket_counts for p in whole[semconv.ML_PREDICTION_SCORE_METRIC]],
                                                 axis=0))
    # Events: the segment of every row, in row order; the unsegmented model's events are as before.
    events = providers.events(semconv.EVENT_PREDICTIONS)
    seg_events = [e for e in events if e.attributes[semconv.ML_MODEL_NAME] == "seg"]
    assert column(seg_events, semconv.ML_SEGMENT) == frame["region"].fillna("__missing__").tolist()
    assert all(semconv.ML_SEGMENT not in e.attributes for e in events if e.attributes[semconv.ML_MODEL_NAME] ==
               "plain")


def test_segment_from_baggage(providers: Providers, model) -> None:
    frame = _frame(5)
    otel_mlmon.instrument_model(model, name="m", segment_baggage_key="tenant", **providers.kwargs())
    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        model.predict(frame)
    finally:
        otel_context.detach(token)
    model.predict(frame.iloc[:2])  # no baggage entry
    events = providers.events(semconv.EVENT_PREDICTIONS)
    assert column(events, semconv.ML_SEGMENT) == ["acme"] * 5 + ["__missing__"] * 2
    points = _points(providers, "m")[semconv.ML_FEATURE_VALUE]
    counts = Counter()
    for p in points:
        if p.attributes[semconv.ML_FEATURE_NAME] == "b":
            counts[p.attributes[semconv.ML_SEGMENT]] += p.count
    assert counts == {"acme": 5, "__missing__": 2}
    assert "segment_column_missing" not in _guard.counts()


def test_sensitive_column_on_events_only(providers: Providers, model) -> None:
    frame = _frame(8).assign(sex=["f", "m", None, "x", "f", "", "y", "m"])
    otel_mlmon.instrument_model(model, name="m", sensitive_column="sex", max_segments=3, **providers.kwargs())
    expected = _copy(model).predict_proba(frame)
    np.testing.assert_array_equal(model.predict_proba(frame), expected)
    events = providers.events(semconv.EVENT_PREDICTIONS)
    assert column(events, semconv.ML_FAIRNESS_GROUP) == [
        "f", "m", "__missing__", "__other__", "f", "__missing__", "__other__", "m"]
    assert {e.attributes[semconv.ML_FAIRNESS_ATTRIBUTE] for e in events} == {"sex"}  # names the groups' column
    assert all(semconv.ML_SEGMENT not in e.attributes for e in events)
    points = _points(providers, "m")
    sketched = {p.attributes[semconv.ML_FEATURE_NAME] for name in SKETCH_METRICS for p in points[name]
                if semconv.ML_FEATURE_NAME in p.attributes}
    assert sketched == {"a", "b", "color", "region"}  # the sensitive column is not a feature
    everything = [p for name in SKETCH_METRICS for p in points[name]] + providers.metric_points(
        semconv.ML_PREDICTIONS) + list(providers.finished_spans())
    assert all(semconv.ML_FAIRNESS_GROUP not in p.attributes and semconv.ML_SEGMENT not in p.attributes
               and "f" not in p.attributes.values() for p in everything)


def test_settings_from_the_environment(providers: Providers, model, monkeypatch, caplog) -> None:
    from otel_mlmon.instrumentation._settings import Settings

    monkeypatch.setenv("OTEL_PYTHON_MLMON_SEGMENT_COLUMN", "region")
    monkeypatch.setenv("OTEL_PYTHON_MLMON_SEGMENT_BAGGAGE_KEY", "tenant")
    monkeypatch.setenv("OTEL_PYTHON_MLMON_MAX_SEGMENTS", "2")
    monkeypatch.setenv("OTEL_PYTHON_MLMON_SENSITIVE_COLUMN", "sex")
    settings = Settings.from_env()
    assert (settings.segment_column, settings.segment_baggage_key, settings.max_segments,
            settings.sensitive_column) == ("region", "tenant", 2, "sex")
    assert Settings.from_env({"OTEL_PYTHON_MLMON_MAX_SEGMENTS": "1"}).max_segments == 10  # warns, default
    assert "OTEL_PYTHON_MLMON_MAX_SEGMENTS" in caplog.text
    assert Settings().segment_column is None and Settings().sensitive_column is None

    # Zero-code: the sklearn instrumentor's models take their segments from the environment.
    from otel_mlmon.instrumentation.sklearn import SklearnInstrumentor

    SklearnInstrumentor().instrument(**providers.kwargs())
    try:
        zero = _copy(model)
        frame = _frame(4).assign(region=["us", "eu", None, "us"], sex=["f", "m", "f", None])
        zero.predict(frame)
        zero.predict(frame.drop(columns="region"))  # no column: the baggage entry, else __missing__
    finally:
        SklearnInstrumentor().uninstrument()
    events = providers.events(semconv.EVENT_PREDICTIONS)
    assert column(events, semconv.ML_SEGMENT) == ["us", "__other__", "__missing__", "us"] + ["__missing__"] * 4
    assert column(events, semconv.ML_FAIRNESS_GROUP) == ["f", "__other__", "f", "__missing__"] * 2
    assert "segment_column_missing" not in _guard.counts()  # the baggage key is the fallback


def test_a_missing_column_never_breaks_predict(providers: Providers) -> None:
    X = np.random.default_rng(0).normal(size=(50, 3))
    y = (X[:, 0] > 0).astype(int)
    bare = LogisticRegression().fit(X, y)
    otel_mlmon.instrument_model(bare, name="m", segment_by="region", sensitive_column="sex", **providers.kwargs())
    expected = _copy(bare).predict(X[:4])
    np.testing.assert_array_equal(bare.predict(X[:4]), expected)
    (event,) = providers.events(semconv.EVENT_PREDICTIONS)
    assert list(event.attributes[semconv.ML_SEGMENT]) == ["__missing__"] * 4
    assert list(event.attributes[semconv.ML_FAIRNESS_GROUP]) == ["__missing__"] * 4
    counts = _guard.counts()
    assert counts["segment_column_missing"] == 1 and counts["sensitive_column_missing"] == 1
    errors = {p.attributes[semconv.ERROR_TYPE]: p.value for p in providers.metric_points(
        semconv.ML_INSTRUMENTATION_ERRORS)}
    assert errors["segment_column_missing"] == 1
    points = _points(providers, "m")[semconv.ML_FEATURE_VALUE]
    assert points and {p.attributes[semconv.ML_SEGMENT] for p in points} == {"__missing__"}


def test_segments_of_a_segmented_reference_profile(providers: Providers, model, tmp_path) -> None:
    from otel_mlmon.engine.segments import build_segmented_profile
    from otel_mlmon.engine.windows import WindowSpec

    reference = _frame(400, seed=3)
    reference["region"] = np.where(reference["region"].isin(["eu", "us", "apac"]), reference["region"], "eu")
    columns = {name: reference[name].to_numpy() for name in ("a", "b", "color", "region")}
    profile = build_segmented_profile(columns, WindowSpec(chunk_size=100), segment_by="region", model="m",
                                      categorical=["color", "region"])
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile.to_dict()))
    assert set(profile.segments) == {"eu", "us", "apac"}
    # The profile's column is the segment column when none is given; its segments are the only ones kept.
    otel_mlmon.instrument_model(model, name="m", reference=path, **providers.kwargs())
    model.predict(_frame(4).assign(region=["latam", "us", None, "apac"]))
    assert column(providers.events(semconv.EVENT_PREDICTIONS), semconv.ML_SEGMENT) == [
        "__other__", "us", "__missing__", "apac"]
    with pytest.raises(ValueError, match="segments are of 'region'"):
        otel_mlmon.instrument_model(model, name="m", reference=path, segment_by="tenant", **providers.kwargs())


def test_bad_arguments_are_refused(model) -> None:
    with pytest.raises(ValueError, match="max_segments"):
        otel_mlmon.instrument_model(_copy(model), segment_by="region", max_segments=1)
    with pytest.raises(TypeError, match="segment_by"):
        otel_mlmon.instrument_model(_copy(model), segment_by=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="set by otel-mlmon"):
        otel_mlmon.instrument_model(_copy(model), attributes={semconv.ML_SEGMENT: "x"})


def test_segment_sketches_of_a_failed_export_are_sent_with_the_next(providers: Providers, model) -> None:
    frame = _frame(60, seed=5)
    otel_mlmon.instrument_model(model, name="m", segment_by="region", **providers.kwargs())
    providers.sketches.mode = "fail"
    model.predict(frame)
    assert not force_flush()
    assert providers.sketches.points(semconv.ML_FEATURE_VALUE) == []
    providers.sketches.mode = "ok"
    counts: Counter[str] = Counter()
    for p in _points(providers, "m")[semconv.ML_FEATURE_VALUE]:
        if p.attributes[semconv.ML_FEATURE_NAME] == "b":
            counts[p.attributes[semconv.ML_SEGMENT]] += p.count
    assert counts == frame["region"].fillna("__missing__").value_counts().to_dict()
