"""What is observed at collection: ml.operation.duration leaves the call waiting and is recorded before each
collection, so every reader still sees every duration at once, through views, with exemplars pointing at the call's
span, and the queue stays bounded; ml.predictions rows of every telemetry on a meter provider are observed.

The flusher's periodic tick would record the waiting durations too (every 200 ms); these tests switch it off for
their telemetry so that what they show is the collection-time recording alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_mlmon
from otel_mlmon import semconv
from otel_mlmon.instrumentation import _api, _spans
from otel_mlmon.instrumentation._api import telemetry_for
from otel_mlmon.instrumentation._telemetry import Telemetry
from tests.conftest import Providers, eventually, retire_telemetries


class Doubler:
    def predict(self, X: np.ndarray) -> np.ndarray:
        return X[:, 0] * 2


class Failing:
    def predict(self, X: np.ndarray) -> np.ndarray:
        raise ValueError("bad row")


def _points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    if data is None:
        return []
    return [point for rm in data.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics
            if metric.name == name for point in metric.data.data_points]


@pytest.fixture
def setup() -> Iterator[dict[str, Any]]:
    """Tracer and meter providers with two readers (cumulative, delta) and a view on the duration histogram;
    the telemetry's flusher tick switched off."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    cumulative = InMemoryMetricReader()
    delta = InMemoryMetricReader(preferred_temporality={
        cls: AggregationTemporality.DELTA for cls in _all_instrument_classes()})
    view = View(instrument_name=semconv.ML_OPERATION_DURATION,
                aggregation=ExplicitBucketHistogramAggregation([0.5, 5.0]))
    meter_provider = MeterProvider([cumulative, delta], views=[view], shutdown_on_exit=False)
    kwargs = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
    telemetry = telemetry_for(**kwargs)
    telemetry.tick = lambda now: 0.2  # type: ignore[method-assign]  # the flusher leaves this telemetry alone
    yield {"kwargs": kwargs, "telemetry": telemetry, "spans": spans, "cumulative": cumulative, "delta": delta,
           "tracer_provider": tracer_provider}
    retire_telemetries(meter_provider)  # every telemetry of the test: they all share this meter provider


def _all_instrument_classes() -> list[type]:
    from opentelemetry.sdk.metrics import (
        Counter,
        Histogram,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )

    return [Counter, Histogram, ObservableCounter, ObservableGauge, ObservableUpDownCounter, UpDownCounter]


def _waiting(telemetry: Telemetry) -> int:
    return len(telemetry.spans._durations)


def test_every_reader_sees_every_duration_at_its_collection_through_views(setup: dict[str, Any]) -> None:
    model = otel_mlmon.instrument_model(Doubler(), name="d", task="regression", **setup["kwargs"])
    row = np.ones((1, 3))
    for _ in range(5):
        model.predict(row)
    assert _waiting(setup["telemetry"]) == 5  # the calls left them waiting: what follows is the collection's work

    for reader in (setup["cumulative"], setup["delta"]):  # no flush: a plain collection of each reader
        (point,) = _points(reader, semconv.ML_OPERATION_DURATION)
        assert point.count == 5
        assert list(point.explicit_bounds) == [0.5, 5.0]  # the view applies
        assert point.attributes[semconv.ML_MODEL_NAME] == "d"
    assert _waiting(setup["telemetry"]) == 0

    model.predict(row)
    (cumulative,) = _points(setup["cumulative"], semconv.ML_OPERATION_DURATION)
    (delta,) = _points(setup["delta"], semconv.ML_OPERATION_DURATION)
    assert (cumulative.count, delta.count) == (6, 1)  # each recorded once, in the interval of its call


def test_durations_are_those_the_calls_measured(setup: dict[str, Any]) -> None:
    model = otel_mlmon.instrument_model(Doubler(), name="d", task="regression", **setup["kwargs"])
    for _ in range(3):
        model.predict(np.ones((1, 3)))
    waiting = [elapsed for elapsed, *_ in setup["telemetry"].spans._durations]
    spans = setup["spans"].get_finished_spans()
    assert len(spans) == 3
    # Each measured the model call inside its span (the span also covers making itself current).
    assert all(0 < int(e * 1e9) <= s.end_time - s.start_time for s, e in zip(spans, waiting))
    (point,) = _points(setup["cumulative"], semconv.ML_OPERATION_DURATION)
    assert point.sum == pytest.approx(sum(waiting), rel=1e-12)
    assert (point.min, point.max) == (min(waiting), max(waiting))


def test_a_failed_call_keeps_its_error_type(setup: dict[str, Any]) -> None:
    model = otel_mlmon.instrument_model(Failing(), name="f", task="regression", **setup["kwargs"])
    with pytest.raises(ValueError, match="bad row"):
        model.predict(np.ones((1, 3)))
    (point,) = _points(setup["cumulative"], semconv.ML_OPERATION_DURATION)
    assert point.count == 1 and point.attributes[semconv.ERROR_TYPE] == "ValueError"


def test_exemplars_point_at_the_call_span(setup: dict[str, Any]) -> None:
    model = otel_mlmon.instrument_model(Doubler(), name="d", task="regression", **setup["kwargs"])
    tracer = setup["tracer_provider"].get_tracer("app")
    with tracer.start_as_current_span("request"):
        model.predict(np.ones((1, 3)))
    spans = {s.name: s for s in setup["spans"].get_finished_spans()}
    predict = spans["predict d"]
    assert predict.parent.span_id == spans["request"].context.span_id
    (point,) = _points(setup["cumulative"], semconv.ML_OPERATION_DURATION)
    (exemplar,) = point.exemplars
    assert (exemplar.trace_id, exemplar.span_id) == (predict.context.trace_id, predict.context.span_id)


def test_the_queue_is_bounded_callers_record_beyond_it(setup: dict[str, Any], monkeypatch) -> None:
    monkeypatch.setattr(_spans, "DURATION_LIMIT", 3)
    model = otel_mlmon.instrument_model(Doubler(), name="d", task="regression", **setup["kwargs"])
    for _ in range(10):
        model.predict(np.ones((1, 3)))
        assert _waiting(setup["telemetry"]) <= 3
    (point,) = _points(setup["cumulative"], semconv.ML_OPERATION_DURATION)
    assert point.count == 10  # nothing dropped: beyond the limit each call recorded its own


def test_the_flusher_records_them_when_nothing_collects(providers: Providers) -> None:
    """With the periodic tick left on and no reader collecting, the flusher records them within ~200 ms."""
    model = otel_mlmon.instrument_model(Doubler(), name="d", task="regression", **providers.kwargs())
    telemetry = telemetry_for(**providers.kwargs())
    for _ in range(4):
        model.predict(np.ones((1, 3)))
    eventually(lambda: _waiting(telemetry) == 0, timeout_s=5, interval_s=0.02, what="durations recorded")
    (point,) = _points(providers.metrics, semconv.ML_OPERATION_DURATION)
    assert point.count == 4


def test_a_forked_child_does_not_record_the_parent_s_waiting_durations(setup: dict[str, Any]) -> None:
    model = otel_mlmon.instrument_model(Doubler(), name="d", task="regression", **setup["kwargs"])
    for _ in range(3):
        model.predict(np.ones((1, 3)))
    pid = os.fork()
    if pid == 0:  # the child: the parent's three are the parent's to record
        os._exit(0 if _waiting(setup["telemetry"]) == 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _waiting(setup["telemetry"]) == 3
    (point,) = _points(setup["cumulative"], semconv.ML_OPERATION_DURATION)
    assert point.count == 3


def test_telemetries_sharing_a_meter_provider_are_all_observed(setup: dict[str, Any]) -> None:
    """A second telemetry on the same meter provider (here: another tracer provider), and one made again after
    another was closed: the SDK keeps one ml.predictions instrument per meter, so all are observed through it."""
    first = otel_mlmon.instrument_model(Doubler(), name="first", task="regression", **setup["kwargs"])
    other = {**setup["kwargs"], "tracer_provider": TracerProvider()}
    second = otel_mlmon.instrument_model(Doubler(), name="second", task="regression", **other)
    twin = otel_mlmon.instrument_model(Doubler(), name="first", task="regression", **other)  # same model name
    first.predict(np.ones((2, 3)))
    second.predict(np.ones((3, 3)))
    twin.predict(np.ones((4, 3)))
    rows = {p.attributes[semconv.ML_MODEL_NAME]: p.value for p in _points(setup["cumulative"], semconv.ML_PREDICTIONS)}
    calls = {p.attributes[semconv.ML_MODEL_NAME]: p.count
             for p in _points(setup["cumulative"], semconv.ML_OPERATION_DURATION)}
    assert rows == {"first": 2 + 4, "second": 3}  # one series per model, summed over the telemetries
    assert calls == {"first": 2, "second": 1}

    # Uninstrumented: closed and forgotten, so that a new telemetry for the same providers takes its place.
    _api._telemetries.pop(next(k for k in _api._telemetries if other["tracer_provider"] in k)).close()
    again = otel_mlmon.instrument_model(Doubler(), name="again", task="regression", **other)
    again.predict(np.ones((5, 3)))
    rows = {p.attributes[semconv.ML_MODEL_NAME]: p.value for p in _points(setup["cumulative"], semconv.ML_PREDICTIONS)}
    assert rows == {"first": 2 + 4, "second": 3, "again": 5}  # the closed one's counts stay: no counter reset
