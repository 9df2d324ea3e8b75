"""instrument_model / prediction_ids / record_labels on real scikit-learn models, against in-memory exporters."""

from __future__ import annotations

import pickle
import random
import uuid

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import otel_mlmon
from otel_mlmon import semconv
from otel_mlmon.instrumentation import force_flush
from otel_mlmon.sketch import NumericSketch
from tests.conftest import Providers, column


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    return load_iris(return_X_y=True)


def _binary(iris: tuple[np.ndarray, np.ndarray]) -> tuple[LogisticRegression, np.ndarray, np.ndarray]:
    X, y = iris
    keep = y < 2
    return LogisticRegression(max_iter=1000).fit(X[keep], y[keep]), X[keep], y[keep]


def test_predict_proba_emits_span_metrics_event_and_sketches(providers: Providers, iris) -> None:
    model, X, _ = _binary(iris)
    expected = model.predict_proba(X)
    otel_mlmon.instrument_model(model, name="iris-bin", version="2", **providers.kwargs())
    with otel_mlmon.prediction_ids() as ids:
        result = model.predict_proba(X)
    np.testing.assert_array_equal(result, expected)
    force_flush()

    (span,) = providers.finished_spans()
    assert span.name == "predict_proba iris-bin"
    assert span.kind.name == "INTERNAL"
    assert dict(span.attributes) == {
        semconv.ML_MODEL_NAME: "iris-bin", semconv.ML_MODEL_VERSION: "2",
        semconv.ML_MODEL_TASK: "classification", semconv.ML_SYSTEM_NAME: "sklearn",
        semconv.ML_OPERATION_NAME: "predict_proba", semconv.ML_BATCH_SIZE: len(X)}

    (rows,) = providers.metric_points(semconv.ML_PREDICTIONS)
    assert rows.value == len(X)
    (duration,) = providers.metric_points(semconv.ML_OPERATION_DURATION)
    assert duration.count == 1 and list(duration.explicit_bounds) == list(semconv.ML_OPERATION_DURATION_BUCKETS)

    events = providers.events(semconv.EVENT_PREDICTIONS)
    assert column(events, semconv.ML_PREDICTION_ID) == ids.ids
    assert len(ids.ids) == len(X) and all(uuid.UUID(i).version == 4 and uuid.UUID(i).variant == uuid.RFC_4122
                                          and uuid.UUID(i).hex == i for i in ids.ids)
    np.testing.assert_allclose(column(events, semconv.ML_PREDICTION_SCORE), expected[:, 1])
    assert column(events, semconv.ML_PREDICTION_LABEL) == model.classes_[expected.argmax(1)].tolist()
    assert events[0].attributes[semconv.ML_MODEL_NAME] == "iris-bin" and events[0].body is None

    # Feature sketches: exactly the sketch of each column of X.
    points = {p.attributes[semconv.ML_FEATURE_NAME]: p for p in providers.sketches.points(semconv.ML_FEATURE_VALUE)}
    assert sorted(points) == [f"feature_{j}" for j in range(4)]
    for j in range(4):
        point = points[f"feature_{j}"]
        rebuilt = NumericSketch.from_explicit(point.explicit_bounds, point.bucket_counts, count=point.count,
                                              total=point.sum, minimum=point.min, maximum=point.max)
        direct = NumericSketch()
        direct.update(X[:, j])
        assert rebuilt.buckets()[1].tolist() == direct.buckets()[1].tolist()
        assert point.min == X[:, j].min() and point.max == X[:, j].max()
    (score,) = providers.sketches.points(semconv.ML_PREDICTION_SCORE_METRIC)
    assert score.count == len(X) and score.attributes[semconv.ML_PREDICTION_CLASS] == "1"
    expected_counts = np.histogram(expected[:, 1], bins=[-np.inf, *semconv.ML_PREDICTION_SCORE_BUCKETS, np.inf])[0]
    assert sum(score.bucket_counts) == expected_counts.sum()


def test_multiclass_scores_per_class_and_dataframe_feature_names(providers: Providers, iris) -> None:
    X, y = iris
    frame = pd.DataFrame(X, columns=["sepal length", "sepal width", "petal length", "petal width"])
    model = LogisticRegression(max_iter=1000).fit(frame, y)
    otel_mlmon.instrument_model(model, name="iris", **providers.kwargs())
    proba = model.predict_proba(frame)
    force_flush()
    events = providers.events(semconv.EVENT_PREDICTIONS)
    for k in range(3):
        np.testing.assert_allclose(column(events, f"{semconv.ML_PREDICTION_SCORE_PREFIX}{k}"), proba[:, k])
    names = {p.attributes[semconv.ML_FEATURE_NAME] for p in providers.sketches.points(semconv.ML_FEATURE_VALUE)}
    assert names == set(frame.columns)
    classes = {p.attributes[semconv.ML_PREDICTION_CLASS] for p in
               providers.sketches.points(semconv.ML_PREDICTION_SCORE_METRIC)}
    assert classes == {"0", "1", "2"}
    assert events[0].attributes[semconv.ML_MODEL_VERSION] == ""


def test_regression_outputs_values_and_output_sketch(providers: Providers) -> None:
    X, y = load_diabetes(return_X_y=True)
    model = otel_mlmon.instrument_model(LinearRegression().fit(X, y), name="diabetes", **providers.kwargs())
    predicted = model.predict(X)
    force_flush()
    events = providers.events(semconv.EVENT_PREDICTIONS)
    np.testing.assert_allclose(column(events, semconv.ML_PREDICTION_VALUE), predicted)
    (output,) = providers.sketches.points(semconv.ML_PREDICTION_VALUE_METRIC)
    assert output.count == len(X) and output.min == predicted.min()
    assert providers.finished_spans()[0].attributes[semconv.ML_MODEL_TASK] == "regression"


def test_given_ids_shared_by_calls_on_the_same_rows_and_labels(providers: Providers, iris) -> None:
    model, X, y = _binary(iris)
    otel_mlmon.instrument_model(model, name="m", **providers.kwargs())
    order_ids = [f"order-{i}" for i in range(len(X))]
    with otel_mlmon.prediction_ids(ids=order_ids) as p:
        model.predict_proba(X)
        labels = model.predict(X)
    assert p.ids == order_ids
    otel_mlmon.record_labels("m", ids=order_ids, labels=y, logger_provider=providers.logger_provider)
    force_flush()
    events = providers.events(semconv.EVENT_PREDICTIONS)
    assert column(events, semconv.ML_PREDICTION_ID) == order_ids * 2
    assert column([e for e in events if semconv.ML_PREDICTION_SCORE not in e.attributes],
                  semconv.ML_PREDICTION_LABEL) == labels.tolist()
    (label_event,) = providers.events(semconv.EVENT_LABELS)
    assert list(label_event.attributes[semconv.ML_PREDICTION_ID]) == order_ids
    assert list(label_event.attributes[semconv.ML_LABEL_VALUE]) == y.tolist()
    assert label_event.attributes[semconv.ML_MODEL_VERSION] == ""


def test_ids_mismatch_gets_fresh_ids_and_is_counted(providers: Providers, iris) -> None:
    from otel_mlmon.instrumentation import _guard

    model, X, _ = _binary(iris)
    otel_mlmon.instrument_model(model, name="m", **providers.kwargs())
    with otel_mlmon.prediction_ids(ids=["a", "b"]):
        model.predict(X[:3])
    force_flush()
    ids = column(providers.events(semconv.EVENT_PREDICTIONS), semconv.ML_PREDICTION_ID)
    assert len(ids) == 3 and "a" not in ids
    assert _guard.counts()["ids_row_mismatch"] == 1


@pytest.mark.filterwarnings("ignore:X has feature names:UserWarning")
@pytest.mark.parametrize("make_input", [
    lambda X: X.tolist(),
    lambda X: scipy.sparse.csr_matrix(X),
    lambda X: pd.DataFrame(X, columns=list("abcd")),
], ids=["list", "sparse", "frame"])
def test_inputs_of_every_kind(providers: Providers, iris, make_input) -> None:
    model, X, _ = _binary(iris)
    expected = model.predict(X[:10])
    otel_mlmon.instrument_model(model, name="m", feature_names=list("abcd"), **providers.kwargs())
    result = model.predict(make_input(X[:10]))
    np.testing.assert_array_equal(result, expected)
    force_flush()
    points = {p.attributes[semconv.ML_FEATURE_NAME]: p for p in providers.sketches.points(semconv.ML_FEATURE_VALUE)}
    assert sorted(points) == list("abcd")
    assert points["c"].min == X[:10, 2].min() and points["c"].count == 10


def test_single_rows_are_staged_and_sketched_exactly(providers: Providers, iris) -> None:
    model, X, _ = _binary(iris)
    otel_mlmon.instrument_model(model, name="m", **providers.kwargs())
    for row in X:
        model.predict(row.reshape(1, -1))
    force_flush()
    assert sum(p.value for p in providers.metric_points(semconv.ML_PREDICTIONS)) == len(X)
    points = {p.attributes[semconv.ML_FEATURE_NAME]: p for p in providers.sketches.points(semconv.ML_FEATURE_VALUE)}
    direct = NumericSketch()
    direct.update(X[:, 3])
    rebuilt = NumericSketch.from_explicit(points["feature_3"].explicit_bounds, points["feature_3"].bucket_counts,
                                          count=points["feature_3"].count, total=points["feature_3"].sum,
                                          minimum=points["feature_3"].min, maximum=points["feature_3"].max)
    assert rebuilt.buckets()[1].tolist() == direct.buckets()[1].tolist()
    assert len(column(providers.events(semconv.EVENT_PREDICTIONS), semconv.ML_PREDICTION_ID)) == len(X)


def test_categorical_columns_and_bad_values_in_a_frame(providers: Providers) -> None:
    class Echo:
        def predict(self, X):
            return np.zeros(len(X))

    frame = pd.DataFrame({"plan": ["a", "b", "a", None], "age": [30.0, np.nan, np.inf, -5.0],
                          "raw": np.array([1, "x", None, 2.5], dtype=object)})
    model = otel_mlmon.instrument_model(Echo(), name="echo", task="regression", **providers.kwargs())
    model.predict(frame)
    force_flush()
    categories = {(p.attributes[semconv.ML_FEATURE_NAME], p.attributes[semconv.ML_FEATURE_CATEGORY]): p.value
                  for p in providers.sketches.points(semconv.ML_FEATURE_CATEGORY_COUNT)}
    assert categories[("plan", "a")] == 2 and categories[("plan", "b")] == 1
    missing = {(p.attributes[semconv.ML_FEATURE_NAME], p.attributes[semconv.ML_FEATURE_MISSING_REASON]): p.value
               for p in providers.sketches.points(semconv.ML_FEATURE_MISSING)}
    assert missing[("plan", "missing")] == 1
    assert missing[("age", "missing")] == 1 and missing[("age", "non_finite")] == 1
    # an object column is categorical per the design (pandas object -> categorical)
    assert categories[("raw", "x")] == 1 and categories[("raw", "1")] == 1


def test_pipeline_records_one_operation_and_fit_is_never_recorded(providers: Providers, iris) -> None:
    X, y = iris
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    otel_mlmon.instrument_model(pipeline, name="pipe", **providers.kwargs())
    otel_mlmon.instrument_model(pipeline.steps[-1][1], name="inner", **providers.kwargs())
    pipeline.fit(X, y)
    pipeline.score(X, y)
    assert providers.finished_spans() == ()
    pipeline.predict(X[:5])
    assert [s.name for s in providers.finished_spans()] == ["predict pipe"]


def test_user_exception_is_preserved_and_recorded(providers: Providers) -> None:
    class Broken:
        def predict(self, X):
            raise KeyError("feature 'age' missing")

    model = otel_mlmon.instrument_model(Broken(), name="broken", **providers.kwargs())
    with pytest.raises(KeyError) as raised:
        model.predict([[1.0]])
    assert raised.value.args == ("feature 'age' missing",)
    (span,) = providers.finished_spans()
    assert span.status.status_code.name == "ERROR"
    assert span.attributes[semconv.ERROR_TYPE] == "KeyError"
    (duration,) = providers.metric_points(semconv.ML_OPERATION_DURATION)
    assert duration.attributes[semconv.ERROR_TYPE] == "KeyError"
    assert providers.metric_points(semconv.ML_PREDICTIONS) == []


def test_return_value_is_the_very_object(providers: Providers) -> None:
    sentinel = np.array([1, 2, 3])

    class Fixed:
        def predict(self, X):
            return sentinel

    model = otel_mlmon.instrument_model(Fixed(), name="fixed", **providers.kwargs())
    assert model.predict(np.ones((3, 2))) is sentinel


def test_other_instances_of_the_class_are_not_recorded(providers: Providers, iris) -> None:
    model, X, _ = _binary(iris)
    other = LogisticRegression(max_iter=1000).fit(X, _binary(iris)[2])
    otel_mlmon.instrument_model(model, name="m", **providers.kwargs())
    other.predict(X)
    assert providers.finished_spans() == ()


def test_suppressed_instrumentation_calls_through(providers: Providers, iris) -> None:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    model, X, _ = _binary(iris)
    otel_mlmon.instrument_model(model, name="m", **providers.kwargs())
    with suppress_instrumentation():
        model.predict(X)
    assert providers.finished_spans() == ()


def test_no_op_providers_still_predict(iris) -> None:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider

    model, X, _ = _binary(iris)
    expected = model.predict(X)
    otel_mlmon.instrument_model(model, name="noop", tracer_provider=NoOpTracerProvider(),
                                meter_provider=NoOpMeterProvider())
    np.testing.assert_array_equal(model.predict(X), expected)


def test_instrumented_model_pickles(providers: Providers, iris) -> None:
    model, X, _ = _binary(iris)
    otel_mlmon.instrument_model(model, name="m", version="1", **providers.kwargs())
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))
    assert clone._otel_mlmon.name == "m" and clone._otel_mlmon.telemetry is None


def test_capture_features_puts_raw_values_on_events(providers: Providers, iris, monkeypatch) -> None:
    from otel_mlmon.instrumentation._api import telemetry_for
    from otel_mlmon.instrumentation._settings import Settings

    monkeypatch.setenv("OTEL_PYTHON_MLMON_CAPTURE_FEATURES", "true")
    monkeypatch.setenv("OTEL_PYTHON_MLMON_EVENT_MODE", "per_call")
    assert Settings.from_env().capture_features
    model, X, _ = _binary(iris)
    kwargs = providers.kwargs()
    otel_mlmon.instrument_model(model, name="m", feature_names=list("abcd"), **kwargs)
    assert telemetry_for(**kwargs).settings.event_mode == "per_call"
    model.predict(X[:4])
    (event,) = providers.events(semconv.EVENT_PREDICTIONS)
    assert list(event.attributes["ml.feature.b"]) == X[:4, 1].tolist()
    (span,) = providers.finished_spans()
    assert event.trace_id == span.context.trace_id  # per-call events sit in the call's span context


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"task": "ranking"}, ValueError), ({"name": ""}, ValueError), ({"name": 3}, TypeError),
    ({"feature_names": "abc"}, TypeError), ({"feature_names": ["a", "a"]}, ValueError),
    ({"reference": "/nonexistent/profile.json"}, FileNotFoundError),
])
def test_setup_errors_are_clear(iris, kwargs, error) -> None:
    model, _, _ = _binary(iris)
    with pytest.raises(error):
        otel_mlmon.instrument_model(model, **kwargs)


def test_nothing_to_instrument_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="has no predict"):
        otel_mlmon.instrument_model(object())


def test_record_labels_validates() -> None:
    with pytest.raises(ValueError, match="pair up"):
        otel_mlmon.record_labels("m", ids=["a"], labels=[1, 2])
    with pytest.raises(ValueError, match="non-empty id"):
        otel_mlmon.record_labels("m", ids=[None], labels=[1])
    with pytest.raises(ValueError, match="labels\\[0\\]"):
        otel_mlmon.record_labels("m", ids=["a"], labels=[None])


def test_reference_profile_sets_kinds_and_bucketing(providers: Providers, tmp_path) -> None:
    import json

    profile = {"columns": {"age": {"kind": "numeric", "role": "feature", "sketch": {"center": 40.0, "scale": 12.0}},
                           "zip": {"kind": "categorical", "role": "feature"},
                           "y": {"kind": "categorical", "role": "target"}}}
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(profile))

    class Echo:
        def predict(self, X):
            return np.zeros(len(X))

    model = otel_mlmon.instrument_model(Echo(), name="ref", task="regression", feature_names=["age", "zip"],
                                        reference=path, **providers.kwargs())
    model.predict(np.array([[30, 12345], [50, 12345]]))
    force_flush()
    (point,) = providers.sketches.points(semconv.ML_FEATURE_VALUE)
    assert point.attributes[semconv.ML_SKETCH_CENTER] == 40.0 and point.attributes[semconv.ML_SKETCH_SCALE] == 12.0
    (category,) = providers.sketches.points(semconv.ML_FEATURE_CATEGORY_COUNT)
    assert category.attributes[semconv.ML_FEATURE_CATEGORY] == "12345" and category.value == 2


def test_deferred_spans_keep_times_parent_and_errors(providers: Providers, monkeypatch) -> None:
    import time

    from opentelemetry import trace

    monkeypatch.setenv("OTEL_PYTHON_MLMON_SPAN_MODE", "deferred")

    class Slow:
        def predict(self, X):
            time.sleep(0.01)
            if len(X) == 3:
                raise ValueError("three rows")
            return np.zeros(len(X))

    kwargs = providers.kwargs()
    kwargs["sketch_exporter"] = type(providers.sketches)()  # a new telemetry, with the deferred setting
    model = otel_mlmon.instrument_model(Slow(), name="slow", task="regression", **kwargs)
    tracer = providers.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("request") as request:
        before = time.time_ns()
        model.predict(np.ones((2, 1)))
        with pytest.raises(ValueError, match="three rows"):
            model.predict(np.ones((3, 1)))
        after = time.time_ns()
    assert [s.name for s in providers.spans.get_finished_spans()] == ["request"]  # not built yet
    spans = {s.name: s for s in providers.finished_spans()}
    ok, failed = [s for s in providers.spans.get_finished_spans() if s.name == "predict slow"]
    assert ok.parent.span_id == request.get_span_context().span_id == failed.parent.span_id
    assert before <= ok.start_time < ok.end_time <= failed.start_time < failed.end_time <= after
    assert ok.end_time - ok.start_time >= 10_000_000
    assert ok.attributes[semconv.ML_BATCH_SIZE] == 2 and "request" in spans
    assert failed.status.status_code.name == "ERROR" and failed.attributes[semconv.ERROR_TYPE] == "ValueError"
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_a_profile_from_the_engine_sharpens_the_instrumentation_sketches(providers: Providers, tmp_path) -> None:
    """instrument_model(reference=) reads what `mlmon reference build` writes: the same bucketing on both sides."""
    from otel_mlmon.engine.columns import profile_from_columns
    from otel_mlmon.engine.windows import WindowSpec

    rng = np.random.default_rng(0)
    reference = {"year": rng.normal(2020, 3, 2000), "plan": rng.choice(["a", "b"], 2000).astype(object)}
    profile, _ = profile_from_columns(reference, WindowSpec(chunks=2))
    path = tmp_path / "profile.json"
    profile.save(path)

    class Echo:
        def predict(self, X):
            return np.zeros(len(X))

    model = otel_mlmon.instrument_model(Echo(), name="ref", task="regression", reference=path, **providers.kwargs())
    served = pd.DataFrame({"year": rng.normal(2020, 3, 500), "plan": rng.choice(["a", "b"], 500)})
    model.predict(served)
    force_flush()
    (point,) = providers.sketches.points(semconv.ML_FEATURE_VALUE)
    sketch = profile.columns["year"].sketch
    assert point.attributes[semconv.ML_SKETCH_CENTER] == sketch.center
    assert point.attributes[semconv.ML_SKETCH_SCALE] == sketch.scale
    rebuilt = NumericSketch.from_explicit(point.explicit_bounds, point.bucket_counts, count=point.count,
                                          total=point.sum, minimum=point.min, maximum=point.max,
                                          center=sketch.center, scale=sketch.scale)
    direct = NumericSketch(sketch.center, sketch.scale)
    direct.update(served["year"].to_numpy())
    assert rebuilt.buckets()[0].tolist() == direct.buckets()[0].tolist()
    assert rebuilt.buckets()[1].tolist() == direct.buckets()[1].tolist()


@pytest.mark.parametrize("rows", [1, 31, 32, 500])  # the per-row path and the block path
def test_generated_ids_are_uuid4_hex_unique_and_ignore_the_applications_random_seed(rows: int) -> None:
    from otel_mlmon.instrumentation._ids import generate

    random.seed(0)
    first = generate(rows)
    random.seed(0)
    second = generate(rows)
    assert len(set(first + second)) == 2 * rows
    for value in first:
        parsed = uuid.UUID(value)
        assert parsed.hex == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122
