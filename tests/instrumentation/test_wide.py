"""Wide models with captured features: every row reaches the exporter with its id and the model's name and version
through a real SDK LoggerProvider with its DEFAULT limits (128 attributes per log record)."""

from __future__ import annotations

import numpy as np
import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from sklearn.linear_model import LogisticRegression

import otel_mlmon
from otel_mlmon import semconv
from tests.conftest import Providers, column, retire_telemetries

WIDTH = 1000


@pytest.mark.parametrize("event_mode", ["buffered", "per_call"])
def test_a_1000_feature_model_delivers_every_row(providers: Providers, monkeypatch, event_mode: str) -> None:
    monkeypatch.setenv("OTEL_PYTHON_MLMON_CAPTURE_FEATURES", "true")
    monkeypatch.setenv("OTEL_PYTHON_MLMON_EVENT_MODE", event_mode)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, WIDTH))
    model = LogisticRegression(max_iter=200).fit(X, (X[:, 0] + X[:, 1] > 0).astype(int))
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(shutdown_on_exit=False)  # default LogRecordLimits: 128 attributes
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    kwargs = {**providers.kwargs(), "logger_provider": logger_provider}
    try:
        otel_mlmon.instrument_model(model, name="wide", version="3", **kwargs)
        ids = [f"row-{i}" for i in range(30)]
        with otel_mlmon.prediction_ids(ids=ids[:25]):
            model.predict_proba(X[:25])
        for i in range(25, 30):
            with otel_mlmon.prediction_ids(ids=[ids[i]]):
                model.predict(X[i: i + 1])
        otel_mlmon.instrumentation.force_flush()
        events = [r for r in logs.get_finished_logs() if r.log_record.event_name == semconv.EVENT_PREDICTIONS]
    finally:
        retire_telemetries(logger_provider)
    assert events and all(r.dropped_attributes == 0 for r in events)
    records = [r.log_record for r in events]
    assert sorted(column(records, semconv.ML_PREDICTION_ID)) == sorted(ids)
    for record in records:
        assert record.attributes[semconv.ML_MODEL_NAME] == "wide"
        assert record.attributes[semconv.ML_MODEL_VERSION] == "3"
        features = record.attributes[semconv.ML_FEATURES]
        assert len(features) == WIDTH
        assert not any(key.startswith(semconv.ML_FEATURE_PREFIX) for key in record.attributes)
        rows = [int(i.split("-")[1]) for i in record.attributes[semconv.ML_PREDICTION_ID]]
        for j in (0, 499, WIDTH - 1):
            np.testing.assert_array_equal(features[f"feature_{j}"], X[rows, j])


def test_a_narrow_model_keeps_one_attribute_per_feature(providers: Providers, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_MLMON_CAPTURE_FEATURES", "true")
    X = np.arange(12.0).reshape(4, 3)

    class Doubler:
        def predict(self, X: np.ndarray) -> np.ndarray:
            return X[:, 0] * 2

    otel_mlmon.instrument_model(Doubler(), name="narrow", task="regression", **providers.kwargs()).predict(X)
    (event,) = providers.events(semconv.EVENT_PREDICTIONS)
    assert semconv.ML_FEATURES not in event.attributes
    assert [list(event.attributes[f"{semconv.ML_FEATURE_PREFIX}feature_{j}"]) for j in range(3)] == X.T.tolist()
