"""Against a real OTLP/HTTP receiver on loopback: zero-code under `opentelemetry-instrument`, fork safety, and an
exporter endpoint that is down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from otel_mlmon import semconv
from tests.conftest import free_port
from tests.otlp_receiver import OtlpReceiver, attributes

APPS = Path(__file__).parent / "apps"
ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.integration


def _env(endpoint: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update({
        "OTEL_SERVICE_NAME": "zero-code-test",
        "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "1000", "OTEL_PYTHON_MLMON_EVENT_FLUSH_INTERVAL": "200",
        "PYTHONPATH": str(ROOT),
    })
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_zero_code_under_opentelemetry_instrument() -> None:
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    with OtlpReceiver() as receiver:
        printed = _run([str(instrument), sys.executable, str(APPS / "serve_sklearn.py")], _env(receiver.endpoint))
        rows = len(printed["scores"])
        assert printed["loaded"] == {"SklearnInstrumentor": True, "XGBoostInstrumentor": True,
                                     "LightGBMInstrumentor": True, "TorchInstrumentor": True}
        assert receiver.wait_for(lambda: len(receiver.logs(semconv.EVENT_PREDICTIONS)) > 0)
        spans = receiver.spans()
        assert [s.name for s in spans].count("predict_proba cancer") == 1
        assert [s.name for s in spans].count("predict cancer") == 10
        assert not any("StandardScaler" in s.name for s in spans)  # a step of the pipeline
        # Bare models whose predict comes from LinearClassifierMixin: once each, as the operation called (the
        # pipeline's own LogisticRegression step is not recorded).
        assert [s.name for s in spans if "cancer" not in s.name] == ["predict LogisticRegression",
                                                                     "predict LinearDiscriminantAnalysis"]
        assert [attributes(s)[semconv.ML_BATCH_SIZE] for s in spans if "cancer" not in s.name] == [5, 4]
        span_attributes = attributes(next(s for s in spans if s.name == "predict_proba cancer"))
        assert span_attributes[semconv.ML_BATCH_SIZE] == rows
        assert span_attributes[semconv.ML_MODEL_VERSION] == "7"
        assert span_attributes[semconv.ML_SYSTEM_NAME] == "sklearn"

        latest: dict[str, tuple[int, int]] = {}  # cumulative sums: the newest point per operation counts
        for metric in receiver.metrics(semconv.ML_PREDICTIONS):
            assert metric.sum.is_monotonic
            for point in metric.sum.data_points:
                if attributes(point)[semconv.ML_MODEL_NAME] != "cancer":
                    continue
                operation = attributes(point)[semconv.ML_OPERATION_NAME]
                latest[operation] = max(latest.get(operation, (0, 0)), (point.time_unix_nano, point.as_int))
        assert {operation: value for operation, (_, value) in latest.items()} == {"predict_proba": rows,
                                                                                   "predict": 10}
        calls: dict[str, tuple[int, int]] = {}  # one duration per call, whichever periodic export carried it
        for metric in receiver.metrics(semconv.ML_OPERATION_DURATION):
            for point in metric.histogram.data_points:
                if attributes(point)[semconv.ML_MODEL_NAME] != "cancer":
                    continue
                operation = attributes(point)[semconv.ML_OPERATION_NAME]
                calls[operation] = max(calls.get(operation, (0, 0)), (point.time_unix_nano, point.count))
        assert {operation: count for operation, (_, count) in calls.items()} == {"predict_proba": 1, "predict": 10}
        features = {attributes(p)[semconv.ML_FEATURE_NAME]
                    for m in receiver.metrics(semconv.ML_FEATURE_VALUE) for p in m.histogram.data_points
                    if attributes(p)[semconv.ML_MODEL_NAME] == "cancer"}
        assert "mean radius" in features and len(features) == 30

        everything = receiver.logs(semconv.EVENT_PREDICTIONS)
        for name, printed_labels in (("LogisticRegression", printed["bare"]), ("LinearDiscriminantAnalysis",
                                                                                 printed["lda"])):
            assert [v for e in everything if attributes(e)[semconv.ML_MODEL_NAME] == name
                    for v in attributes(e)[semconv.ML_PREDICTION_LABEL]] == printed_labels
        events = [e for e in everything if attributes(e)[semconv.ML_MODEL_NAME] == "cancer"]
        scores = [v for e in events for v in attributes(e).get(semconv.ML_PREDICTION_SCORE, [])]
        np.testing.assert_allclose(scores[:rows], printed["scores"])
        ids = [v for e in events for v in attributes(e)[semconv.ML_PREDICTION_ID]]
        assert len(ids) == rows + 10 and len(set(ids)) == rows + 10
        assert all(e.body.WhichOneof("value") is None for e in events)  # no body (the encoder sends an empty one)


def test_forked_workers_export_their_own_rows_exactly_once() -> None:
    with OtlpReceiver() as receiver:
        printed = _run([sys.executable, str(APPS / "fork_workers.py")],
                       _env(receiver.endpoint, OTEL_PYTHON_MLMON_EVENT_FLUSH_INTERVAL="60000"))
        assert printed["children"] == [0, 0]
        assert receiver.wait_for(lambda: sum(len(attributes(e)[semconv.ML_PREDICTION_ID])
                                             for e in receiver.logs(semconv.EVENT_PREDICTIONS)) >= 3 + 5 + 6 + 4)
        ids = [v for e in receiver.logs(semconv.EVENT_PREDICTIONS) for v in attributes(e)[semconv.ML_PREDICTION_ID]]
        assert len(ids) == 3 + 5 + 6 + 4 == len(set(ids))  # parent rows not re-sent by the children
        counts = sorted(p.count for m in receiver.metrics(semconv.ML_FEATURE_VALUE) for p in m.histogram.data_points
                        if attributes(p)[semconv.ML_FEATURE_NAME] == "feature_0")
        assert sum(counts) == 3 + 5 + 6 + 4


def test_forked_workers_flush_on_their_own_intervals() -> None:
    """A worker's flusher thread does not survive fork(): it starts again at the worker's first prediction, so
    events and sketches leave on their intervals, not only at a flush the worker may never reach."""
    with OtlpReceiver() as receiver:
        _run([sys.executable, str(APPS / "fork_workers.py")],
             _env(receiver.endpoint, CHILD_WAITS="3", OTEL_BLRP_SCHEDULE_DELAY="100"))
        ids = [v for e in receiver.logs(semconv.EVENT_PREDICTIONS) for v in attributes(e)[semconv.ML_PREDICTION_ID]]
        assert len(ids) == 3 + 5 + 6 + 4 == len(set(ids))  # the workers' 11 rows came from their own threads
        counts = sorted(p.count for m in receiver.metrics(semconv.ML_FEATURE_VALUE) for p in m.histogram.data_points
                        if attributes(p)[semconv.ML_FEATURE_NAME] == "feature_0")
        assert sum(counts) == 3 + 5 + 6 + 4


def test_exporter_endpoint_down_does_not_break_the_application() -> None:
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    env = _env(f"http://127.0.0.1:{free_port()}", OTEL_EXPORTER_OTLP_TIMEOUT="1")
    printed = _run([str(instrument), sys.executable, str(APPS / "serve_sklearn.py")], env)
    assert len(printed["scores"]) == 169 and len(printed["single"]) == 10
