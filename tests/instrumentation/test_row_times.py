"""Each row of a buffered ml.predictions event keeps its predict call's time (``ml.prediction.time``), through the
real SDK: the processor orders rows as they were made, not by the time of the event that carried them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

import otel_mlmon
from otel_mlmon import semconv
from otel_mlmon.instrumentation._events import PredictionBuffer
from otel_mlmon.instrumentation._overrides import recorded_as
from tests.conftest import Providers, retire_telemetries

DAY_MS = 86_400_000
WIDTH = 1000


class Doubler:
    def predict(self, X: np.ndarray) -> np.ndarray:
        return X[:, 0] * 2


@pytest.fixture
def one_event(monkeypatch) -> Iterator[None]:
    """Buffered events that only a flush sends, in sketch intervals of a day (calls a few ms apart share one)."""
    monkeypatch.setenv("OTEL_PYTHON_MLMON_EVENT_MODE", "buffered")
    monkeypatch.setenv("OTEL_PYTHON_MLMON_SKETCH_EXPORT_INTERVAL", str(DAY_MS))
    monkeypatch.setenv("OTEL_PYTHON_MLMON_EVENT_FLUSH_INTERVAL", str(3_600_000))
    yield


def _row_times(event) -> list[int]:
    """Each row's time as a receiver reads it: the attribute, else the record's timestamp for every row."""
    rows = len(event.attributes[semconv.ML_PREDICTION_ID])
    times = event.attributes.get(semconv.ML_PREDICTION_TIME)
    return [event.timestamp] * rows if times is None else list(times)


def _calls(model, sizes: list[int]) -> list[tuple[list[str], int, int]]:
    """Make one call per size, each with its own ids; returns (ids, time before, time after) per call."""
    made = []
    for c, size in enumerate(sizes):
        ids = [f"c{c}r{r}" for r in range(size)]
        before = time.time_ns()
        with otel_mlmon.prediction_ids(ids=ids):
            model.predict(np.full((size, 2), float(c)))
        made.append((ids, before, time.time_ns()))
        time.sleep(0.002)  # calls clearly apart
    return made


def test_rows_of_buffered_calls_keep_their_own_call_times(providers: Providers, one_event) -> None:
    model = otel_mlmon.instrument_model(Doubler(), name="d", task="regression", **providers.kwargs())
    made = _calls(model, [3, 1, 5, 1, 2])
    (event,) = providers.events(semconv.EVENT_PREDICTIONS)  # one event: the rows of every call

    times = event.attributes[semconv.ML_PREDICTION_TIME]
    ids = list(event.attributes[semconv.ML_PREDICTION_ID])
    assert ids == [i for call_ids, _, _ in made for i in call_ids]
    assert len(times) == len(ids) and all(type(t) is int for t in times)
    at = dict(zip(ids, times, strict=True))
    call_times = []
    for call_ids, before, after in made:
        (call_time,) = {at[i] for i in call_ids}  # rows of one call share its time
        assert before <= call_time <= after
        call_times.append(call_time)
    assert call_times == sorted(set(call_times))  # distinct and in the order the calls were made
    assert event.timestamp == call_times[0]  # the record's timestamp stays its first call's time
    # Added before the model's name, version and ids, which stay last (the SDK evicts the oldest first).
    assert list(event.attributes)[-4:] == [semconv.ML_PREDICTION_TIME, semconv.ML_MODEL_NAME,
                                           semconv.ML_MODEL_VERSION, semconv.ML_PREDICTION_ID]


def test_the_times_are_an_int64_array_on_the_wire(providers: Providers, one_event) -> None:
    model = otel_mlmon.instrument_model(Doubler(), name="d", task="regression", **providers.kwargs())
    made = _calls(model, [2, 1])
    providers.events(semconv.EVENT_PREDICTIONS)  # flush
    request = encode_logs(providers.logs.get_finished_logs())
    (record,) = [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    (value,) = [a.value for a in record.attributes if a.key == semconv.ML_PREDICTION_TIME]
    assert value.WhichOneof("value") == "array_value"
    assert {v.WhichOneof("value") for v in value.array_value.values} == {"int_value"}
    times = [v.int_value for v in value.array_value.values]
    assert len(times) == 3 and times[0] == times[1] == record.time_unix_nano
    assert made[0][1] <= times[0] <= made[0][2] and made[1][1] <= times[2] <= made[1][2]


def test_only_an_event_whose_rows_differ_in_time_carries_them(providers: Providers, one_event,
                                                                 monkeypatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_MLMON_EVENT_MAX_ROWS", "4")
    model = otel_mlmon.instrument_model(Doubler(), name="d", task="regression", **providers.kwargs())
    ((_, before, after),) = _calls(model, [10])  # one call, split into events of 4, 4 and 2 rows
    events = providers.events(semconv.EVENT_PREDICTIONS)
    assert [len(e.attributes[semconv.ML_PREDICTION_ID]) for e in events] == [4, 4, 2]
    assert all(semconv.ML_PREDICTION_TIME not in e.attributes for e in events)  # the timestamp says it all
    (timestamp,) = {e.timestamp for e in events}
    assert before <= timestamp <= after

    made = _calls(model, [1, 2])  # two calls in one event of 3 rows
    (event,) = providers.events(semconv.EVENT_PREDICTIONS)[3:]
    times = list(event.attributes[semconv.ML_PREDICTION_TIME])
    assert times[0] == event.timestamp and times[1] == times[2] != times[0]
    assert made[0][1] <= times[0] <= made[0][2] and made[1][1] <= times[1] <= made[1][2]


def test_recorded_as_times_are_the_rows_times_and_their_sketch_intervals(providers: Providers, one_event) -> None:
    """Times you control: calls of several recorded_as blocks share one event, each row with its block's time;
    the sketches of the same calls land in the intervals (a day here) of those very times."""
    model = otel_mlmon.instrument_model(Doubler(), name="d", task="regression", **providers.kwargs())
    day = DAY_MS * 10**6
    start = 19_000 * day  # 2022-01-08 00:00 UTC
    blocks = [(start + 3 * 10**9, 2), (start, 1), (start + 3 * 10**9, 3), (start + day - 1, 1), (start + day, 2)]
    expected = []
    for c, (t, size) in enumerate(blocks):
        ids = [f"c{c}r{r}" for r in range(size)]
        with recorded_as(time_unix_nano=t), otel_mlmon.prediction_ids(ids=ids):
            model.predict(np.full((size, 2), float(c)))
        expected += [(i, t) for i in ids]
    first, second = sorted(providers.events(semconv.EVENT_PREDICTIONS), key=lambda e: e.timestamp)

    assert first.timestamp == start + 3 * 10**9  # its first call's time
    assert list(zip(first.attributes[semconv.ML_PREDICTION_ID], first.attributes[semconv.ML_PREDICTION_TIME],
                    strict=True)) == expected[:7]  # row order kept, an earlier time after a later one included
    assert second.timestamp == start + day and semconv.ML_PREDICTION_TIME not in second.attributes
    assert list(second.attributes[semconv.ML_PREDICTION_ID]) == [i for i, _ in expected[7:]]
    values = {p.start_time_unix_nano // day: p.count
              for p in providers.sketches.points(semconv.ML_PREDICTION_VALUE_METRIC)}
    assert values == {start // day: 7, start // day + 1: 2}  # the intervals of the rows' own times


def test_an_event_split_at_max_rows_starts_at_its_first_rows_time(providers: Providers) -> None:
    """Times you control: the buffer as the wrapper drives it, one (rows, time) per call, through the SDK."""
    buffer = PredictionBuffer(providers.logger_provider.get_logger("t"), max_rows=4, flush_interval_s=60,
                              interval_ns=60 * 10**9)
    base = {semconv.ML_MODEL_NAME: "m", semconv.ML_MODEL_VERSION: "1"}
    t0 = 1_700_000_000 * 10**9 - 1_700_000_000 * 10**9 % (60 * 10**9)  # the start of an interval
    calls = [(["a", "b"], t0 + 7), (["c", "d", "e", "f", "g", "h"], t0 + 9), (["i"], t0 + 9), (["j"], t0 + 3)]
    for ids, t in calls:
        buffer.add(base, {semconv.ML_PREDICTION_ID: ids}, len(ids), t)
    buffer.flush()
    events = [(r.log_record.timestamp, list(r.log_record.attributes[semconv.ML_PREDICTION_ID]),
               r.log_record.attributes.get(semconv.ML_PREDICTION_TIME)) for r in providers.logs.get_finished_logs()]
    assert events == [
        (t0 + 7, ["a", "b", "c", "d"], (t0 + 7, t0 + 7, t0 + 9, t0 + 9)),  # the first 8 rows filled one event...
        (t0 + 9, ["e", "f", "g", "h"], None),  # ...split at max_rows: these rows all share their record's time
        (t0 + 9, ["i", "j"], (t0 + 9, t0 + 3)),  # a later call may have started earlier: its own time still
    ]


def test_row_times_survive_a_1000_feature_event_under_default_limits(one_event, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_MLMON_CAPTURE_FEATURES", "true")
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(shutdown_on_exit=False)  # default LogRecordLimits: 128 attributes
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    model = otel_mlmon.instrument_model(Doubler(), name="wide", version="3", task="regression",
                                        logger_provider=logger_provider)
    try:
        made = []
        for c, size in enumerate([2, 1, 3]):
            ids = [f"c{c}r{r}" for r in range(size)]
            before = time.time_ns()
            with otel_mlmon.prediction_ids(ids=ids):
                model.predict(np.random.default_rng(c).normal(size=(size, WIDTH)))
            made.append((ids, before, time.time_ns()))
            time.sleep(0.002)
        otel_mlmon.instrumentation.force_flush()
        (record,) = [r for r in logs.get_finished_logs() if r.log_record.event_name == semconv.EVENT_PREDICTIONS]
    finally:
        retire_telemetries(logger_provider)
    assert record.dropped_attributes == 0
    event = record.log_record
    assert len(event.attributes[semconv.ML_FEATURES]) == WIDTH
    at = dict(zip(event.attributes[semconv.ML_PREDICTION_ID], _row_times(event), strict=True))
    assert semconv.ML_PREDICTION_TIME in event.attributes
    for ids, before, after in made:
        (call_time,) = {at[i] for i in ids}
        assert before <= call_time <= after
    assert event.attributes[semconv.ML_MODEL_NAME] == "wide" and event.attributes[semconv.ML_MODEL_VERSION] == "3"
