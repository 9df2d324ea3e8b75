"""Never break the model: failing, raising and hanging exporters, broken sketches, bad inputs, bounded state."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor

import otel_mlmon
from otel_mlmon import semconv
from otel_mlmon.instrumentation import _guard, force_flush
from otel_mlmon.instrumentation._telemetry import Telemetry
from tests.conftest import Providers, column


class Doubler:
    """A model without any framework: returns 2 * the first column."""

    def predict(self, X):
        return np.asarray(X, dtype=float)[:, 0] * 2


def test_sketch_exporter_raising_keeps_sketches_for_the_next_export(providers: Providers) -> None:
    model = otel_mlmon.instrument_model(Doubler(), name="d", task="regression", **providers.kwargs())
    providers.sketches.mode = "raise"
    model.predict(np.arange(10.0).reshape(5, 2))
    assert force_flush() is False
    assert _guard.counts()["sketch_export"] == 1
    providers.sketches.mode = "ok"
    model.predict(np.arange(10.0, 14.0).reshape(2, 2))
    assert force_flush() is True
    (point,) = [p for p in providers.sketches.points(semconv.ML_FEATURE_VALUE)
                if p.attributes[semconv.ML_FEATURE_NAME] == "feature_0"]
    assert point.count == 7 and point.min == 0.0 and point.max == 12.0  # nothing lost, nothing doubled


def test_sketch_exporter_reporting_failure_is_counted(providers: Providers) -> None:
    model = otel_mlmon.instrument_model(Doubler(), name="d", task="regression", **providers.kwargs())
    providers.sketches.mode = "fail"
    model.predict(np.ones((3, 2)))
    assert force_flush() is False
    assert _guard.counts()["sketch_export"] == 1


def test_hanging_exporter_never_blocks_predict(providers: Providers) -> None:
    model = otel_mlmon.instrument_model(Doubler(), name="d", task="regression", **providers.kwargs())
    model.predict(np.ones((3, 2)))
    providers.sketches.mode = "hang"
    exporting = threading.Thread(target=force_flush, kwargs={"timeout_millis": 30_000})
    exporting.start()
    try:
        for _ in range(50):  # the export thread is stuck inside the exporter meanwhile
            assert model.predict(np.ones((4, 2))).tolist() == [2.0] * 4
        assert exporting.is_alive()
    finally:
        providers.sketches.release.set()
        exporting.join(10)
    assert not exporting.is_alive()


def test_broken_sketch_code_does_not_break_predict(providers: Providers, monkeypatch) -> None:
    from otel_mlmon.instrumentation import _recorder

    def explode(*args, **kwargs):
        raise MemoryError("simulated")

    monkeypatch.setattr(_recorder, "update_columns", explode)
    model = otel_mlmon.instrument_model(Doubler(), name="d", task="regression", **providers.kwargs())
    for _ in range(3):
        assert model.predict(np.ones((100, 2))).tolist() == [2.0] * 100
    assert _guard.counts()["sketch"] == 3
    force_flush()
    # The other signals still flow.
    assert sum(p.value for p in providers.metric_points(semconv.ML_PREDICTIONS)) == 300
    errors = providers.metric_points(semconv.ML_INSTRUMENTATION_ERRORS)
    assert {p.attributes[semconv.ERROR_TYPE]: p.value for p in errors}["sketch"] == 3


def test_failing_log_exporter_does_not_break_predict(providers: Providers) -> None:
    class Raising(LogRecordExporter):
        def export(self, batch):
            raise OSError("disk full")

        def shutdown(self):
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    providers.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(Raising()))
    model = otel_mlmon.instrument_model(Doubler(), name="d", task="regression", **providers.kwargs())
    assert model.predict(np.ones((2, 2))).tolist() == [2.0, 2.0]
    force_flush()
    assert len(column(providers.events(semconv.EVENT_PREDICTIONS), semconv.ML_PREDICTION_ID)) == 2


class Recorder:
    def __init__(self) -> None:
        self.seen: list[object] = []

    def predict(self, X):
        self.seen.append(X)
        return [0] * len(list(X)) if not hasattr(X, "__len__") else [0] * len(X)


def test_generators_are_not_consumed_by_the_instrumentation(providers: Providers) -> None:
    model = otel_mlmon.instrument_model(Recorder(), name="g", task="classification", **providers.kwargs())
    rows = ([float(i), 1.0] for i in range(5))
    result = model.predict(rows)
    assert result == [0] * 5  # the model saw all five rows
    force_flush()
    assert column(providers.events(semconv.EVENT_PREDICTIONS), semconv.ML_PREDICTION_LABEL) == [0] * 5


@pytest.mark.parametrize("bad_input", [
    [[1.0, 2.0], [3.0]],  # ragged
    np.array([["a", 1.0], [None, "2"]], dtype=object),
    {"age": 3, "plan": "gold"},
    object(),
    np.zeros((2, 3, 4)),
    [],
])
def test_odd_inputs_never_raise(providers: Providers, bad_input) -> None:
    model = otel_mlmon.instrument_model(Recorder(), name="odd", task="classification", **providers.kwargs())
    model.predict(bad_input) if hasattr(bad_input, "__len__") else model.predict([bad_input])
    force_flush()
    assert len(providers.finished_spans()) == 1


def test_odd_outputs_never_raise(providers: Providers) -> None:
    class Odd:
        def __init__(self, value):
            self.value = value

        def predict(self, X):
            return self.value

    for value in (None, "text", {"a": 1}, [[1, 2], [3]], np.float64(3.0), np.array([np.nan, np.inf])):
        model = otel_mlmon.instrument_model(Odd(value), name="odd", task="regression", **providers.kwargs())
        assert model.predict(np.ones((2, 1))) is value
    force_flush()
    assert len(providers.finished_spans()) == 6


def test_model_cardinality_is_bounded(providers: Providers, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_MLMON_MAX_MODELS", "2")
    telemetry = Telemetry(providers.tracer_provider, providers.meter_provider, providers.logger_provider,
                          providers.sketches)
    names = [telemetry.recorder(f"m{i}", "", "other", None).name for i in range(5)]
    assert names == ["m0", "m1", semconv.OVERFLOW_MODEL_NAME, semconv.OVERFLOW_MODEL_NAME,
                     semconv.OVERFLOW_MODEL_NAME]
    assert _guard.counts()["too_many_models"] == 3
    telemetry.close()


def test_categories_are_bounded_on_the_wire(providers: Providers, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_MLMON_CATEGORY_TOP_K", "3")

    class Echo:
        def predict(self, X):
            return np.zeros(len(X))

    telemetry_kwargs = providers.kwargs()
    model = otel_mlmon.instrument_model(Echo(), name="c", task="regression", **telemetry_kwargs)
    values = np.array([[f"user-{i % 40}"] for i in range(400)], dtype=object)
    model.predict(values)
    force_flush()
    points = providers.sketches.points(semconv.ML_FEATURE_CATEGORY_COUNT)
    assert len(points) == 4
    assert {p.attributes[semconv.ML_FEATURE_CATEGORY] for p in points} >= {semconv.OTHER_CATEGORY}
    assert sum(p.value for p in points) == 400


def test_malformed_settings_warn_and_fall_back(monkeypatch, caplog) -> None:
    from otel_mlmon.instrumentation._settings import Settings

    monkeypatch.setenv("OTEL_PYTHON_MLMON_EVENT_MAX_ROWS", "lots")
    monkeypatch.setenv("OTEL_PYTHON_MLMON_SKETCH_PRECISION", "42")
    monkeypatch.setenv("OTEL_PYTHON_MLMON_CAPTURE_FEATURES", "maybe")
    settings = Settings.from_env()
    assert settings.event_max_rows == 4096 and settings.sketch_precision == 7 and not settings.capture_features
    assert "OTEL_PYTHON_MLMON_EVENT_MAX_ROWS" in caplog.text and "OTEL_PYTHON_MLMON_SKETCH_PRECISION" in caplog.text


def test_each_failure_kind_is_logged_once(caplog) -> None:
    for _ in range(5):
        _guard.failure("example", RuntimeError("boom"))
    assert caplog.text.count("example") == 1 and _guard.counts()["example"] == 5


def test_score_histograms_are_bounded_per_class(providers: Providers, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_MLMON_CATEGORY_TOP_K", "3")

    class ManyClasses:
        classes_ = np.arange(10)

        def predict_proba(self, X):
            return np.full((len(X), 10), 0.1)

    kwargs = providers.kwargs()
    kwargs["sketch_exporter"] = type(providers.sketches)()  # a new telemetry, with the setting above
    model = otel_mlmon.instrument_model(ManyClasses(), name="wide", task="classification", **kwargs)
    model.predict_proba(np.ones((4, 2)))
    force_flush()
    points = kwargs["sketch_exporter"].points(semconv.ML_PREDICTION_SCORE_METRIC)
    classes = [p.attributes[semconv.ML_PREDICTION_CLASS] for p in points]
    assert len(classes) == 4 and semconv.OTHER_CATEGORY in classes
    assert sum(p.count for p in points) == 40
