"""The instrumentation runtime: uninstrumenting puts back the very objects that were wrapped, classes defined later
are covered, work in joblib's worker threads belongs to the call that started it, ``uninstrument_model``, unused
telemetries are retired (flushed, their counts kept, their providers let go), ``instrument_model(attributes=)``."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sklearn.datasets import make_classification

import otel_mlmon
from otel_mlmon import semconv
from otel_mlmon.instrumentation import force_flush
from otel_mlmon.instrumentation._runtime import RUNTIME
from tests.conftest import Providers, eventually


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n_samples=120, n_features=5, n_informative=3, random_state=0)


def _names(providers: Providers) -> list[str]:
    return [s.name for s in providers.finished_spans()]


def _attributes_in_place() -> dict[tuple[Any, str], Any]:
    """Every attribute any instrumentor may replace, as it is now (absent ones as None)."""
    import joblib.parallel
    import lightgbm
    import torch
    import xgboost
    from sklearn.base import BaseEstimator

    from otel_mlmon.instrumentation._patch import FIT_METHODS, PREDICT_METHODS, subclasses

    owners: set[type] = set()
    for base in (BaseEstimator,):
        for cls in subclasses(base):
            owners.update(cls.__mro__)
    found: dict[tuple[Any, str], Any] = {}
    for owner in owners:
        for name in (*PREDICT_METHODS, *FIT_METHODS, "__init_subclass__"):
            found[(owner, name)] = owner.__dict__.get(name)
    for owner, name in ((joblib.parallel.Parallel, "__call__"), (xgboost.Booster, "predict"),
                        (xgboost.Booster, "inplace_predict"), (xgboost, "train"), (xgboost.training, "train"),
                        (lightgbm.Booster, "predict"), (lightgbm, "train"), (lightgbm.engine, "train"),
                        (torch.nn.Module, "__call__")):
        found[(owner, name)] = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name)
    return found


def _instrumentors() -> list[Any]:
    from otel_mlmon.instrumentation.lightgbm import LightGBMInstrumentor
    from otel_mlmon.instrumentation.sklearn import SklearnInstrumentor
    from otel_mlmon.instrumentation.torch import TorchInstrumentor
    from otel_mlmon.instrumentation.xgboost import XGBoostInstrumentor

    return [SklearnInstrumentor(), XGBoostInstrumentor(), LightGBMInstrumentor(), TorchInstrumentor()]


def test_uninstrument_puts_back_the_very_objects_that_were_wrapped(providers: Providers) -> None:
    from sklearn.linear_model._base import LinearClassifierMixin

    gc.collect()
    RUNTIME.unwrap()  # what only models gone since needed is put back now
    kept = set(RUNTIME.wrapped)  # wrapped for models of other tests that are still alive: they stay wrapped
    before = _attributes_in_place()
    for _ in range(2):  # instrument -> uninstrument -> instrument -> uninstrument
        for instrumentor in _instrumentors():
            instrumentor.instrument(**providers.kwargs())
        try:
            wrapped = {key for key, value in before.items() if _attributes_in_place()[key] is not value}
            assert (LinearClassifierMixin, "predict") in wrapped | kept
            assert len(wrapped) > 100
        finally:
            for instrumentor in _instrumentors():
                instrumentor.uninstrument()
        after = _attributes_in_place()
        changed = [f"{getattr(o, '__name__', o)}.{n}" for (o, n), v in before.items() if after.get((o, n)) is not v]
        assert changed == []
        assert set(RUNTIME.wrapped) == kept and RUNTIME.zero_code == {}


def test_a_class_defined_later_records_what_it_inherits_from_a_mixin(providers: Providers, data) -> None:
    from sklearn.linear_model import LogisticRegression

    from otel_mlmon.instrumentation.sklearn import SklearnInstrumentor

    X, y = data
    SklearnInstrumentor().instrument(**providers.kwargs())
    try:
        class Later(LogisticRegression):  # predict and decision_function come from LinearClassifierMixin
            pass

        model = Later().fit(X, y)
        assert _names(providers) == []  # fit is not recorded
        model.predict(X[:3])
        model.decision_function(X[:2])
        model.score(X, y)  # score calls predict: not recorded
        assert _names(providers) == ["predict Later", "decision_function Later"]
    finally:
        SklearnInstrumentor().uninstrument()


def test_trees_predicting_in_worker_threads_are_part_of_the_forest_call(providers: Providers, data) -> None:
    from sklearn.ensemble import RandomForestClassifier

    from otel_mlmon.instrumentation.sklearn import SklearnInstrumentor

    X, y = data
    SklearnInstrumentor().instrument(**providers.kwargs())
    try:
        forest = RandomForestClassifier(n_estimators=6, n_jobs=2, random_state=0).fit(X, y)
        proba = forest.predict_proba(X[:5])
        assert _names(providers) == ["predict_proba RandomForestClassifier"]
    finally:
        SklearnInstrumentor().uninstrument()
    np.testing.assert_array_equal(forest.predict_proba(X[:5]), proba)


def test_uninstrument_model(providers: Providers, data) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.linear_model._base import LinearClassifierMixin

    X, y = data
    original = LinearClassifierMixin.__dict__["predict"]
    first = otel_mlmon.instrument_model(LogisticRegression().fit(X, y), name="first", **providers.kwargs())
    second = otel_mlmon.instrument_model(LogisticRegression().fit(X, y), name="second", **providers.kwargs())
    assert LinearClassifierMixin.__dict__["predict"] is not original
    first.predict(X[:2])
    assert otel_mlmon.uninstrument_model(first) is first
    first.predict(X[:2])
    second.predict(X[:3])
    assert _names(providers) == ["predict first", "predict second"]
    assert LinearClassifierMixin.__dict__["predict"] is not original  # the second model still needs it
    otel_mlmon.uninstrument_model(second)
    assert LinearClassifierMixin.__dict__["predict"] is original
    np.testing.assert_array_equal(second.predict(X), LogisticRegression().fit(X, y).predict(X))
    assert len(providers.finished_spans()) == 2
    assert otel_mlmon.uninstrument_model(second) is second  # not instrumented: as is


def test_an_instrumentor_leaves_what_a_manually_instrumented_model_needs(providers: Providers, data) -> None:
    from sklearn.linear_model import LogisticRegression

    from otel_mlmon.instrumentation.sklearn import SklearnInstrumentor

    X, y = data
    model = otel_mlmon.instrument_model(LogisticRegression().fit(X, y), name="manual", **providers.kwargs())
    SklearnInstrumentor().instrument(**providers.kwargs())
    SklearnInstrumentor().uninstrument()
    model.predict(X[:2])
    assert _names(providers) == ["predict manual"]
    otel_mlmon.uninstrument_model(model)


def _own_providers() -> dict[str, Any]:
    """Providers of this test alone (nothing else holds them: no SDK exit hook, no fixture frame)."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider([reader], shutdown_on_exit=False)
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    return {"kwargs": {"tracer_provider": tracer_provider, "meter_provider": meter_provider,
                       "logger_provider": logger_provider}, "reader": reader, "logs": logs}


def test_a_telemetry_nobody_uses_is_retired_and_lets_its_providers_go() -> None:
    class Doubler:
        def predict(self, X: np.ndarray) -> np.ndarray:
            return X[:, 0] * 2

    own_providers = _own_providers()
    kwargs = own_providers["kwargs"]
    tracer_provider = weakref.ref(kwargs["tracer_provider"])
    model = otel_mlmon.instrument_model(Doubler(), name="gone", task="regression", **kwargs)
    model.predict(np.ones((3, 2)))
    assert any(tracer_provider() in key for key in RUNTIME.telemetries)
    del model
    gc.collect()
    eventually(lambda: not any(tracer_provider() in key for key in RUNTIME.telemetries), timeout_s=10,
               what="the unused telemetry retired")
    # Flushed when retired: the buffered event went out; the row count stays (a counter that stops).
    events = [r.log_record for r in own_providers["logs"].get_finished_logs()
              if r.log_record.event_name == semconv.EVENT_PREDICTIONS]
    assert [len(e.attributes[semconv.ML_PREDICTION_ID]) for e in events] == [3]
    data = own_providers["reader"].get_metrics_data()
    rows = [p.value for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
            if m.name == semconv.ML_PREDICTIONS for p in m.data.data_points]
    assert rows == [3]
    # Nothing of otel-mlmon holds the tracer provider any more.
    kwargs.clear()
    gc.collect()
    assert tracer_provider() is None


def test_extra_attributes_go_on_spans_and_events_not_on_metrics(providers: Providers) -> None:
    class Doubler:
        def predict(self, X: np.ndarray) -> np.ndarray:
            return X[:, 0] * 2

    model = otel_mlmon.instrument_model(Doubler(), name="reg", version="4", task="regression",
                                        attributes={"mlflow.run_id": "abc123", "stage": ("a", "b")},
                                        **providers.kwargs())
    model.predict(np.ones((2, 2)))
    (span,) = providers.finished_spans()
    assert span.attributes["mlflow.run_id"] == "abc123" and span.attributes["stage"] == ("a", "b")
    assert span.attributes[semconv.ML_MODEL_NAME] == "reg"
    (event,) = providers.events(semconv.EVENT_PREDICTIONS)
    assert event.attributes["mlflow.run_id"] == "abc123"
    assert event.attributes[semconv.ML_MODEL_VERSION] == "4"
    for point in providers.metric_points(semconv.ML_PREDICTIONS) + providers.metric_points(
            semconv.ML_OPERATION_DURATION):
        assert "mlflow.run_id" not in point.attributes
    force_flush()
    with pytest.raises(ValueError, match="set by otel-mlmon itself"):
        otel_mlmon.instrument_model(Doubler(), attributes={semconv.ML_MODEL_NAME: "x"})
    with pytest.raises(TypeError, match="must be a str, bool, int or float"):
        otel_mlmon.instrument_model(Doubler(), attributes={"run": {"nested": 1}})
    otel_mlmon.uninstrument_model(model)
