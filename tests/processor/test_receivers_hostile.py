"""Hostile values on the wire, through the real Processor behind its aiohttp app (and its gRPC receiver): each
unusable record is refused per record (200 with a partial-success count and a message) or the request answered
400, never 500; the valid record of the same request is stored, and the next request is served as usual.

The builders here (``logs_body``, ``metrics_body``, ``valid_prediction`` …) are also the fuzz test's seeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
)

from otel_mlmon import semconv
from otel_mlmon.processor import decode, grpc_receiver
from otel_mlmon.processor.server import build_app
from otel_mlmon.processor.service import Processor
from otel_mlmon.processor.store import Store
from otel_mlmon.sketch import NumericSketch

PROTOBUF = "application/x-protobuf"
T0 = 1_700_000_000 * 10**9  # event time of the valid records
MODEL = {semconv.ML_MODEL_NAME: "m", semconv.ML_MODEL_VERSION: "1"}


# --- builders: OTLP requests as the instrumentation sends them ------------------------------------------------
def any_value(value: Any) -> AnyValue:
    if value is None:
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    out = AnyValue()
    if isinstance(value, list):
        out.array_value.values.extend(any_value(v) for v in value)
    elif isinstance(value, dict):
        out.kvlist_value.values.extend(KeyValue(key=k, value=any_value(v)) for k, v in value.items())
    else:
        return AnyValue(string_value=value)
    return out


def key_values(attributes: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


def log_record(attributes: dict[str, Any], event: str = semconv.EVENT_PREDICTIONS, time_ns: int = T0) -> LogRecord:
    record = LogRecord(event_name=event, time_unix_nano=time_ns, observed_time_unix_nano=time_ns)
    record.attributes.extend(key_values(attributes))
    return record


def logs_request(*records: LogRecord) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.extend(records)
    return request


def logs_body(*records: LogRecord) -> bytes:
    return logs_request(*records).SerializeToString()


def valid_prediction(prefix: str = "v", rows: int = 2, **extra: Any) -> dict[str, Any]:
    """A binary classifier's event, as the instrumentation emits it (features captured)."""
    return {**MODEL, semconv.ML_PREDICTION_ID: [f"{prefix}{i}" for i in range(rows)],
            semconv.ML_PREDICTION_LABEL: [i % 2 for i in range(rows)],
            semconv.ML_PREDICTION_SCORE: [0.25 + 0.5 * (i % 2) for i in range(rows)],
            f"{semconv.ML_FEATURE_PREFIX}age": [30.0 + i for i in range(rows)], **extra}


def valid_labels(prefix: str = "v", rows: int = 2) -> dict[str, Any]:
    return {**MODEL, semconv.ML_PREDICTION_ID: [f"{prefix}{i}" for i in range(rows)],
            semconv.ML_LABEL_VALUE: [i % 2 for i in range(rows)]}


def histogram_point(attributes: dict[str, Any], values: Sequence[float] = (1.0, 2.0, 2.5), *,
                    time_ns: int = T0 + 60 * 10**9, start_ns: int = T0, **fields: Any) -> HistogramDataPoint:
    """A feature sketch point, as the instrumentation exports it (``fields`` override the point's fields)."""
    sketch = NumericSketch()
    sketch.update(list(values))
    bounds, counts = sketch.to_explicit()
    point = HistogramDataPoint(start_time_unix_nano=start_ns, time_unix_nano=time_ns, count=sketch.count,
                               sum=sketch.sum, min=sketch.min, max=sketch.max, explicit_bounds=bounds,
                               bucket_counts=counts)
    for name, value in fields.items():
        if isinstance(value, list):
            point.ClearField(name)
            getattr(point, name).extend(value)
        else:
            setattr(point, name, value)
    point.attributes.extend(key_values(attributes))
    return point


def number_point(attributes: dict[str, Any], value: int | float, *, time_ns: int = T0 + 60 * 10**9,
                 start_ns: int = T0) -> NumberDataPoint:
    point = NumberDataPoint(start_time_unix_nano=start_ns, time_unix_nano=time_ns)
    if isinstance(value, float):
        point.as_double = value
    else:
        point.as_int = value
    point.attributes.extend(key_values(attributes))
    return point


def histogram_metric(*points: HistogramDataPoint, name: str = semconv.ML_FEATURE_VALUE) -> Metric:
    metric = Metric(name=name)
    metric.histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    metric.histogram.data_points.extend(points)
    return metric


def sum_metric(name: str, *points: NumberDataPoint) -> Metric:
    metric = Metric(name=name)
    metric.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    metric.sum.is_monotonic = True
    metric.sum.data_points.extend(points)
    return metric


def gauge_metric(name: str, *points: NumberDataPoint) -> Metric:
    metric = Metric(name=name)
    metric.gauge.data_points.extend(points)
    return metric


def metrics_request(*metrics: Metric) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    request.resource_metrics.add().scope_metrics.add().metrics.extend(metrics)
    return request


def metrics_body(*metrics: Metric) -> bytes:
    return metrics_request(*metrics).SerializeToString()


def feature(name: str = "age", **more: Any) -> dict[str, Any]:
    return {**MODEL, semconv.ML_FEATURE_NAME: name, **more}


def valid_sketch() -> Metric:
    return histogram_metric(histogram_point(feature("income")))


# --- the processor on a real aiohttp server --------------------------------------------------------------------
Request = tuple[str, bytes, str] | tuple[str, bytes, str, dict[str, str]]


@contextlib.asynccontextmanager
async def serving(application: web.Application) -> AsyncIterator[TestClient]:
    """A client of ``application`` served on loopback as ``serve`` does: the receiver inflates bodies itself."""
    server = TestServer(application)
    await server.start_server(auto_decompress=False)
    async with TestClient(server) as client:
        yield client


def post_all(processor: Processor, requests: Sequence[Request]) -> list[tuple[int, bytes]]:
    """Each request POSTed in turn to the processor's app on a loopback server: (status, body) of each."""
    async def main() -> list[tuple[int, bytes]]:
        async with serving(build_app(processor)) as client:
            answers = []
            for path, body, content_type, *headers in requests:
                answer = await client.post(path, data=body,
                                           headers={"Content-Type": content_type, **(headers[0] if headers else {})})
                answers.append((answer.status, await answer.read()))
            return answers

    return asyncio.run(main())


@pytest.fixture
def processor(tmp_path: Path) -> Processor:
    return Processor(Store(str(tmp_path / "processor.db")))


def _rejected(answer: tuple[int, bytes], response_type: type, field: str) -> tuple[int, str]:
    status, body = answer
    assert status == 200, (status, body[:300])
    response = response_type.FromString(body)
    return getattr(response.partial_success, field), response.partial_success.error_message


def _stored(processor: Processor) -> dict[str, int]:
    counters = processor.counters()
    return {name: counters.get(name, 0) for name in ("predictions", "labels_joined", "labels_orphaned",
                                                      "sketch_points")}


# --- logs ------------------------------------------------------------------------------------------------------
HOSTILE_LOGS: dict[str, tuple[LogRecord, str]] = {
    "label event with bytes labels": (
        log_record({**valid_labels("b"), semconv.ML_LABEL_VALUE: [b"\xffyes", b"no"]}, semconv.EVENT_LABELS), ""),
    "bytes feature values": (log_record(valid_prediction("b", **{f"{semconv.ML_FEATURE_PREFIX}age": [b"1", b"x"]})),
                             ""),
    "label values that are arrays": (
        log_record({**valid_labels("a"), semconv.ML_LABEL_VALUE: [[1], {"k": 2}]}, semconv.EVENT_LABELS),
        "array or a map"),
    "feature values that are maps": (
        log_record(valid_prediction("a", **{f"{semconv.ML_FEATURE_PREFIX}age": [{"k": 1}, 2.0]})), "array or a map"),
    "model name as a list": (log_record(valid_prediction("l", **{semconv.ML_MODEL_NAME: ["m"]})), "ml.model.name"),
    "model name as an int": (log_record(valid_prediction("i", **{semconv.ML_MODEL_NAME: 7})), "ml.model.name"),
    "version as a list": (log_record(valid_prediction("l", **{semconv.ML_MODEL_VERSION: ["1"]})),
                          "ml.model.version"),
    "ids that are bytes": (log_record(valid_prediction("x", **{semconv.ML_PREDICTION_ID: [b"a", b"b"]})),
                           "not a non-empty string"),
    "ids that are ints": (log_record(valid_prediction("x", **{semconv.ML_PREDICTION_ID: [1, 2]})),
                          "not a non-empty string"),
    "ids that are arrays": (log_record({**valid_labels("x"), semconv.ML_PREDICTION_ID: [["a"], ["b"]]},
                                       semconv.EVENT_LABELS), "not a non-empty string"),
    "scores that are strings": (log_record(valid_prediction("s", **{semconv.ML_PREDICTION_SCORE: ["0.5", "0.1"]})),
                                "not numbers"),
    "log time of 2**63": (log_record(valid_prediction("t"), time_ns=2**63), "2**63"),
    "log time of 2**64 - 1": (log_record(valid_labels("t"), semconv.EVENT_LABELS, time_ns=2**64 - 1), "2**63"),
    "NaN labels": (log_record({**valid_labels("n"), semconv.ML_LABEL_VALUE: [float("nan"), float("inf")]},
                              semconv.EVENT_LABELS), "every label is missing or not finite"),
}


@pytest.mark.parametrize("case", list(HOSTILE_LOGS))
def test_hostile_log_record_is_refused_alone(processor: Processor, case: str) -> None:
    hostile, reason = HOSTILE_LOGS[case]
    body = logs_body(hostile, log_record(valid_prediction("ok")))
    answers = post_all(processor, [("/v1/logs", body, PROTOBUF),
                                   ("/v1/logs", logs_body(log_record(valid_prediction("next"))), PROTOBUF)])
    rejected, message = _rejected(answers[0], ExportLogsServiceResponse, "rejected_log_records")
    stored = _stored(processor)
    if reason:  # refused, with the reason in the partial-success message
        assert rejected == 1 and reason in message, message
        assert stored["predictions"] == 4 and stored["labels_orphaned"] == 0  # the valid record, and the next one
    else:  # usable once read: bytes are read as UTF-8, as the categorical sketch counts them
        assert rejected == 0, message
        assert stored["predictions"] + stored["labels_orphaned"] == 6
    assert answers[1][0] == 200


def test_bytes_are_read_as_utf8_text(processor: Processor) -> None:
    body = logs_body(log_record(valid_prediction("b", **{f"{semconv.ML_FEATURE_PREFIX}plan": [b"gold", b"\xff"]})))
    decoded = decode.decode_logs(body, PROTOBUF)
    assert decoded.predictions[0].features["plan"] == ["gold", "\ufffd"]
    assert post_all(processor, [("/v1/logs", body, PROTOBUF)])[0][0] == 200


def test_rows_with_missing_or_non_finite_labels_are_dropped(processor: Processor) -> None:
    labels = {**valid_labels("r", rows=4), semconv.ML_LABEL_VALUE: [1, float("nan"), None, 0]}
    decoded = decode.decode_logs(logs_body(log_record(labels, semconv.EVENT_LABELS)), PROTOBUF)
    (batch,) = decoded.labels
    assert batch.ids == ["r0", "r3"] and batch.labels == [1, 0]
    assert decoded.rejected_rows == {"label rows whose label is missing or not finite": 2}


def test_events_over_the_row_cap_are_refused(processor: Processor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "MAX_ROWS_PER_EVENT", 100)
    body = logs_body(log_record(valid_prediction("big", rows=101)), log_record(valid_prediction("ok", rows=100)))
    rejected, message = _rejected(post_all(processor, [("/v1/logs", body, PROTOBUF)])[0], ExportLogsServiceResponse,
                                  "rejected_log_records")
    assert rejected == 1 and "more than 100 ids" in message
    assert _stored(processor)["predictions"] == 100


def test_unpaired_surrogates_in_json_are_a_bad_request(processor: Processor) -> None:
    """Strings are UTF-8 on the wire: a JSON body with a lone surrogate is not valid OTLP (400, Status body)."""
    document = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"eventName": semconv.EVENT_PREDICTIONS, "timeUnixNano": str(T0), "attributes": [
            {"key": semconv.ML_MODEL_NAME, "value": {"stringValue": "m\ud800"}},
            {"key": semconv.ML_PREDICTION_ID, "value": {"arrayValue": {"values": [{"stringValue": "a\udfff"}]}}}]}
    ]}]}]}
    (answer,) = post_all(processor, [("/v1/logs", json.dumps(document).encode(), "application/json")])
    assert answer[0] == 400 and json.loads(answer[1])["code"] == 3


# --- metrics ---------------------------------------------------------------------------------------------------
HOSTILE_METRICS: dict[str, tuple[Metric, str]] = {
    "precision inf": (histogram_metric(histogram_point(feature(**{semconv.ML_SKETCH_PRECISION: float("inf")}))),
                      "ml.sketch.precision"),
    "precision huge": (histogram_metric(histogram_point(feature(**{semconv.ML_SKETCH_PRECISION: 10**18}))),
                       "ml.sketch.precision"),
    "precision as a string": (histogram_metric(histogram_point(feature(**{semconv.ML_SKETCH_PRECISION: "7"}))),
                              "ml.sketch.precision"),
    "center NaN": (histogram_metric(histogram_point(feature(**{semconv.ML_SKETCH_CENTER: float("nan")}))),
                   "ml.sketch.center"),
    "center as bytes": (histogram_metric(histogram_point(feature(**{semconv.ML_SKETCH_CENTER: b"1.5"}))),
                        "ml.sketch.center"),
    "scale inf": (histogram_metric(histogram_point(feature(**{semconv.ML_SKETCH_SCALE: float("inf")}))),
                  "ml.sketch.scale"),
    "scale subnormal": (histogram_metric(histogram_point(feature(**{semconv.ML_SKETCH_SCALE: 5e-324}))),
                        "ml.sketch.scale"),
    "model name as a list": (histogram_metric(histogram_point(feature(**{semconv.ML_MODEL_NAME: ["m"]}))),
                             "ml.model.name"),
    "feature name as a list": (histogram_metric(histogram_point(feature(["age"]))), "ml.feature.name"),
    "m2 point of a model named by a list": (
        gauge_metric(semconv.ML_FEATURE_VALUE_M2, number_point({**feature(), semconv.ML_MODEL_NAME: ["m"]}, 1.0)),
        "ml.model.name"),
    "count of 2**64 - 1": (histogram_metric(histogram_point(feature(), count=2**64 - 1, explicit_bounds=[1.0, 2.0],
                                                            bucket_counts=[0, 2**64 - 1, 0])), "count"),
    "bucket counts that overflow int64 together": (
        histogram_metric(histogram_point(feature(), count=2**64 - 2, explicit_bounds=[1.0, 2.0, 3.0],
                                         bucket_counts=[0, 2**63 - 1, 2**63 - 1, 0])), "count"),
    "empty bucket counts": (histogram_metric(histogram_point(feature(), count=0, explicit_bounds=[],
                                                             bucket_counts=[])), "bucket counts"),
    "mismatched bucket counts": (histogram_metric(histogram_point(feature(), bucket_counts=[0, 3])),
                                 "bucket counts"),
    "bounds that decrease": (histogram_metric(histogram_point(feature(), explicit_bounds=[3.0, 2.0, 1.0],
                                                              bucket_counts=[0, 2, 1, 0])), "increasing"),
    "sum NaN": (histogram_metric(histogram_point(feature(), sum=float("nan"))), "sum"),
    "time of 2**64 - 1": (histogram_metric(histogram_point(feature(), time_ns=2**64 - 1)), "2**63"),
    "time of 2**64 - 1, empty counts": (
        histogram_metric(histogram_point(feature(), time_ns=2**64 - 1, count=0, sum=0.0, explicit_bounds=[],
                                         bucket_counts=[])), "2**63"),
    "start after end": (histogram_metric(histogram_point(feature(), start_ns=T0 + 61 * 10**9)), "start time"),
    "category count NaN": (sum_metric(semconv.ML_FEATURE_CATEGORY_COUNT, number_point(
        feature("plan", **{semconv.ML_FEATURE_CATEGORY: "gold"}), float("nan"))), "count"),
    "category count inf": (sum_metric(semconv.ML_FEATURE_CATEGORY_COUNT, number_point(
        feature("plan", **{semconv.ML_FEATURE_CATEGORY: "gold"}), float("inf"))), "count"),
    "category count 2**63 - 1": (sum_metric(semconv.ML_FEATURE_CATEGORY_COUNT, number_point(
        feature("plan", **{semconv.ML_FEATURE_CATEGORY: "gold"}), 2**63 - 1)), "count"),
    "category as a list": (sum_metric(semconv.ML_FEATURE_CATEGORY_COUNT, number_point(
        feature("plan", **{semconv.ML_FEATURE_CATEGORY: ["gold"]}), 3)), "array or a map"),
    "category of a feature named by a list": (sum_metric(semconv.ML_FEATURE_CATEGORY_COUNT, number_point(
        feature(["plan"], **{semconv.ML_FEATURE_CATEGORY: "gold"}), 3)), "ml.feature.name"),
    "category start after end": (sum_metric(semconv.ML_FEATURE_CATEGORY_COUNT, number_point(
        feature("plan", **{semconv.ML_FEATURE_CATEGORY: "gold"}), 3, start_ns=T0 + 61 * 10**9)), "start time"),
    "missing count NaN": (sum_metric(semconv.ML_FEATURE_MISSING, number_point(
        feature("plan", **{semconv.ML_FEATURE_MISSING_REASON: "missing"}), float("nan"))), "count"),
    "missing count of a model named by an int": (sum_metric(semconv.ML_FEATURE_MISSING, number_point(
        {**feature("plan"), semconv.ML_MODEL_NAME: 3}, 1)), "ml.model.name"),
}


@pytest.mark.parametrize("case", list(HOSTILE_METRICS))
def test_hostile_metric_point_is_refused_alone(processor: Processor, case: str) -> None:
    hostile, reason = HOSTILE_METRICS[case]
    answers = post_all(processor, [("/v1/metrics", metrics_body(hostile, valid_sketch()), PROTOBUF),
                                   ("/v1/metrics", metrics_body(valid_sketch()), PROTOBUF)])
    rejected, message = _rejected(answers[0], ExportMetricsServiceResponse, "rejected_data_points")
    assert rejected == 1 and reason in message, message
    assert answers[1][0] == 200
    assert _stored(processor)["sketch_points"] == 2  # the valid point of the request, and of the next one


def test_sketch_buckets_are_bounded_per_request(processor: Processor, monkeypatch: pytest.MonkeyPatch) -> None:
    """A point whose bounds span the whole float range rebuilds a dense sketch of millions of buckets: the
    request's budget refuses the points past it (a 16 MiB request of those would need terabytes)."""
    monkeypatch.setattr(decode, "MAX_SKETCH_BUCKETS", 100_000)
    wide = histogram_point(feature(**{semconv.ML_SKETCH_PRECISION: 10}), count=2, sum=1e300, min=1e-300, max=1e300,
                           explicit_bounds=[1e-300, 2e-300, 9e299, 1e300], bucket_counts=[0, 1, 0, 1, 0])
    body = metrics_body(histogram_metric(wide), valid_sketch())
    rejected, message = _rejected(post_all(processor, [("/v1/metrics", body, PROTOBUF)])[0],
                                  ExportMetricsServiceResponse, "rejected_data_points")
    assert rejected == 1 and "buckets" in message
    assert _stored(processor)["sketch_points"] == 1


# --- the receivers themselves -----------------------------------------------------------------------------------
class Exploding:
    """A sink whose store fails in a way that is not the data's fault (a bug, say)."""

    def __init__(self) -> None:
        self.receiver_counters: dict[str, int] = {}

    def accept_logs(self, decoded: Any, received_ns: int) -> None:
        raise KeyError("bug")

    def accept_metrics(self, decoded: Any, received_ns: int) -> None:
        raise ZeroDivisionError("bug")


def test_unexpected_exception_is_503_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    from otel_mlmon.processor import receiver as receiver_module
    from otel_mlmon.processor.receiver import Receiver

    receiver_module._logged.clear()
    sink = Exploding()
    application = web.Application()
    application.add_routes(Receiver(sink).routes())

    async def main() -> list[tuple[int, str, bytes]]:
        async with serving(application) as client:
            out = []
            for _ in range(3):
                answer = await client.post("/v1/logs", data=logs_body(log_record(valid_prediction())),
                                           headers={"Content-Type": PROTOBUF})
                out.append((answer.status, answer.headers.get("Retry-After", ""), await answer.read()))
            return out

    with caplog.at_level(logging.ERROR, "otel_mlmon.processor"):
        answers = asyncio.run(main())
    assert [(status, retry) for status, retry, _ in answers] == [(503, "5")] * 3
    assert status_pb2.Status.FromString(answers[0][2]).code == 14  # UNAVAILABLE: retryable
    assert len([r for r in caplog.records if "KeyError" in r.getMessage()]) == 1
    assert sink.receiver_counters["rejected_requests_unexpected"] == 3


def test_grpc_malformed_is_invalid_argument_and_counted_with_http(processor: Processor) -> None:
    server, port = grpc_receiver.start(processor, "127.0.0.1:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            raw = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
            with pytest.raises(grpc.RpcError) as failed:
                raw(b"\xff\xff\xff\xff", timeout=10)
            assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            metrics = channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                                          response_deserializer=ExportMetricsServiceResponse.FromString)
            answer = metrics(metrics_body(HOSTILE_METRICS["time of 2**64 - 1"][0], valid_sketch()), timeout=10)
            assert answer.partial_success.rejected_data_points == 1
            logs = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                                       response_deserializer=ExportLogsServiceResponse.FromString)
            assert logs(logs_body(log_record(valid_prediction())), timeout=10).partial_success.rejected_log_records \
                == 0
    finally:
        server.stop(grace=None)
    # an HTTP request on top: one set of counters, as /healthz shows them
    post_all(processor, [("/v1/logs", b"\x00garbage", PROTOBUF)])
    counters = processor.counters()
    assert counters["rejected_requests_malformed"] == 2  # one over gRPC, one over HTTP
    assert counters["accepted_records"] == 2 and counters["rejected_records"] == 1
    assert _stored(processor)["sketch_points"] == 1 and _stored(processor)["predictions"] == 2


def test_grpc_unexpected_exception_is_unavailable() -> None:
    sink = Exploding()
    server, port = grpc_receiver.start(sink, "127.0.0.1:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")
            for _ in range(2):
                with pytest.raises(grpc.RpcError) as failed:
                    export(metrics_body(valid_sketch()), timeout=10)
                assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(grace=None)
    assert sink.receiver_counters["rejected_requests_unexpected"] == 2


def test_healthz_answers_while_a_large_request_is_decoded_and_stored(processor: Processor) -> None:
    """Decoding and recording run off the event loop: /healthz, sent while a 50k-row request is being worked on,
    is answered before it (on the loop, /healthz waited for the whole request)."""
    rows = 50_000
    event = {**MODEL, semconv.ML_PREDICTION_ID: [f"big{i}" for i in range(rows)],
             semconv.ML_PREDICTION_SCORE: [0.5] * rows}
    big = gzip.compress(logs_body(log_record(event)), 1)
    order: list[str] = []

    async def main() -> None:
        async with serving(build_app(processor)) as client:
            async def send() -> None:
                answer = await client.post("/v1/logs", data=big,
                                           headers={"Content-Type": PROTOBUF, "Content-Encoding": "gzip"})
                assert answer.status == 200
                order.append("big")

            async def health() -> None:
                await asyncio.sleep(0.05)  # the big request is uploaded (0.5 MB on loopback) and worked on
                answer = await client.get("/healthz")
                assert answer.status == 200
                order.append("healthz")

            await asyncio.gather(send(), health())

    asyncio.run(main())
    assert order == ["healthz", "big"]
    assert _stored(processor)["predictions"] == rows


def test_a_busy_processor_sheds_requests_at_once_and_takes_them_again() -> None:
    """With ``max_in_flight`` requests in progress, one more is answered 503 + Retry-After with a google.rpc.Status
    at once (not queued for as long as the others take), counted; once one finishes, requests are taken again."""
    import concurrent.futures
    import threading

    from otel_mlmon.processor.receiver import Receiver

    release, started = threading.Event(), threading.Event()

    class SlowSink:
        receiver_counters: dict[str, int] = {}

        def accept_logs(self, decoded: Any, received_ns: int) -> None:
            started.set()
            assert release.wait(30)

        def accept_metrics(self, decoded: Any, received_ns: int) -> None:
            raise AssertionError("no metrics are sent")

    receiver = Receiver(SlowSink(), executor=concurrent.futures.ThreadPoolExecutor(4), max_in_flight=1)
    application = web.Application()
    application.add_routes(receiver.routes())
    body = ExportLogsServiceRequest().SerializeToString()
    headers = {"Content-Type": "application/x-protobuf"}

    async def main() -> tuple[int, int, bytes, str | None, int, int]:
        async with serving(application) as client:
            first = asyncio.ensure_future(client.post("/v1/logs", data=body, headers=headers))
            while not started.is_set():
                await asyncio.sleep(0.01)
            busy = await client.post("/v1/logs", data=body, headers=headers)
            busy_body = await busy.read()
            release.set()
            done = await first
            again = await client.post("/v1/logs", data=body, headers=headers)
            return (busy.status, done.status, busy_body, busy.headers.get("Retry-After"), again.status,
                    receiver.counters.get("rejected_requests_busy", 0))

    busy, done, payload, retry_after, again, counted = asyncio.run(main())
    assert (busy, done, again, retry_after, counted) == (503, 200, 200, "1", 1)
    assert status_pb2.Status.FromString(payload).code == 14  # UNAVAILABLE: retryable per OTLP
    # (the 503 came while the first request still held its slot: it is released only after the answer)
