"""Fuzzing the processor's wire side: valid OTLP logs and metrics requests, as the instrumentation sends them,
mutated at the protobuf-field level and at the byte level, sent to the Processor's aiohttp app on loopback and to
its gRPC receiver. Every answer must be one the OTLP specification allows (200, 400, 413, 415, 503; gRPC OK,
INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE), with no unexpected exception behind any of them; after the
fuzz, the processor still stores and evaluates a valid request.

``MLMON_FUZZ_EXAMPLES`` sets the number of mutated requests (default 300, a few seconds); a long run:
``MLMON_FUZZ_EXAMPLES=100000 python -m pytest tests/processor/test_fuzz.py``.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from otel_mlmon import semconv
from otel_mlmon.engine.columns import profile_from_columns
from otel_mlmon.engine.windows import WindowSpec
from otel_mlmon.processor import grpc_receiver
from otel_mlmon.processor.server import build_app
from otel_mlmon.processor.service import Processor
from otel_mlmon.processor.store import Store
from tests.processor.test_decode import _otlp_json
from tests.processor.test_receivers_hostile import (
    MODEL,
    PROTOBUF,
    T0,
    any_value,
    feature,
    gauge_metric,
    histogram_metric,
    histogram_point,
    log_record,
    logs_request,
    metrics_request,
    number_point,
    serving,
    sum_metric,
    valid_labels,
    valid_prediction,
)

EXAMPLES = int(os.environ.get("MLMON_FUZZ_EXAMPLES", "300"))
HTTP_ALLOWED = {200, 400, 413, 415, 503}
GRPC_ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.UNAVAILABLE}
ROWS = 200  # rows of the window checked after the fuzz


# --- seeds: what the instrumentation sends -----------------------------------------------------------------------
def _sdk_seeds() -> list[Message]:
    """Requests encoded by the OTel SDK's own OTLP encoders from a really instrumented model: events (multiclass
    scores, labels) and feature sketches (numeric, categorical, missing counts, M2)."""
    import pandas as pd
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from sklearn.linear_model import LogisticRegression

    import otel_mlmon
    from otel_mlmon.instrumentation import force_flush
    from tests.conftest import MemorySketchExporter, retire_telemetries

    tracer_provider, logs = TracerProvider(), InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    sketches = MemorySketchExporter()
    kwargs = {"tracer_provider": tracer_provider, "meter_provider": MeterProvider([InMemoryMetricReader()],
                                                                                  shutdown_on_exit=False),
              "logger_provider": logger_provider, "sketch_exporter": sketches}
    try:
        rng = np.random.default_rng(0)
        frame = pd.DataFrame({"age": rng.normal(40, 10, 30), "plan": rng.choice(["a", "b", None], 30)})
        target = rng.integers(0, 3, 30)
        fitted = LogisticRegression(max_iter=500).fit(frame[["age"]], target)

        class Model:
            def predict_proba(self, X: Any) -> Any:
                return fitted.predict_proba(X[["age"]])

        model = otel_mlmon.instrument_model(Model(), name="seed", version="1", task="classification", **kwargs)
        with otel_mlmon.prediction_ids() as ids:
            model.predict_proba(frame)
        otel_mlmon.record_labels("seed", ids=ids.ids[:10], labels=target[:10], version="1",
                                 logger_provider=logger_provider)
        force_flush()
        return [encode_logs(logs.get_finished_logs()), *(encode_metrics(batch) for batch in sketches.batches)]
    finally:
        retire_telemetries(tracer_provider, logger_provider)


def _built_seeds() -> list[Message]:
    """What the SDK seeds lack: captured features, regression values, every kind of metric point."""
    regression = {**MODEL, semconv.ML_PREDICTION_ID: ["r0", "r1", "r2"], semconv.ML_PREDICTION_VALUE: [1.5, -2.0, 3.0],
                  f"{semconv.ML_FEATURE_PREFIX}age": [31.0, None, 40.5], f"{semconv.ML_FEATURE_PREFIX}plan":
                      ["gold", "basic", True]}
    return [
        logs_request(log_record(valid_prediction("p", rows=3)), log_record(regression),
                     log_record(valid_labels("p", rows=3), semconv.EVENT_LABELS)),
        metrics_request(
            histogram_metric(histogram_point(feature("age", **{semconv.ML_SKETCH_CENTER: 40.0,
                                                               semconv.ML_SKETCH_SCALE: 10.0,
                                                               semconv.ML_SKETCH_PRECISION: 7}), (30.0, 41.0, 55.5))),
            histogram_metric(histogram_point(MODEL), name=semconv.ML_PREDICTION_VALUE_METRIC),
            gauge_metric(semconv.ML_FEATURE_VALUE_M2, number_point(feature("age"), 12.5)),
            sum_metric(semconv.ML_FEATURE_CATEGORY_COUNT,
                       number_point(feature("plan", **{semconv.ML_FEATURE_CATEGORY: "gold"}), 3),
                       number_point(feature("plan", **{semconv.ML_FEATURE_CATEGORY: "basic"}), 2.0)),
            sum_metric(semconv.ML_FEATURE_MISSING,
                       number_point(feature("plan", **{semconv.ML_FEATURE_MISSING_REASON: "missing"}), 1))),
    ]


@pytest.fixture(scope="module")
def seeds() -> list[tuple[type, bytes]]:
    return [(type(seed), seed.SerializeToString()) for seed in (*_sdk_seeds(), *_built_seeds())]


# --- mutations -----------------------------------------------------------------------------------------------------
_NAMES = [semconv.EVENT_PREDICTIONS, semconv.EVENT_LABELS, semconv.ML_MODEL_NAME, semconv.ML_MODEL_VERSION,
          semconv.ML_PREDICTION_ID, semconv.ML_PREDICTION_LABEL, semconv.ML_PREDICTION_SCORE,
          semconv.ML_PREDICTION_SCORE_PREFIX + "1", semconv.ML_PREDICTION_VALUE, semconv.ML_LABEL_VALUE,
          semconv.ML_FEATURE_PREFIX + "age", semconv.ML_FEATURE_NAME, semconv.ML_FEATURE_CATEGORY,
          semconv.ML_FEATURE_MISSING_REASON, semconv.ML_SKETCH_CENTER, semconv.ML_SKETCH_SCALE,
          semconv.ML_SKETCH_PRECISION, semconv.ML_FEATURE_VALUE, semconv.ML_FEATURE_VALUE_M2,
          semconv.ML_FEATURE_CATEGORY_COUNT, semconv.ML_FEATURE_MISSING, semconv.ML_PREDICTION_VALUE_METRIC]
_INT_RANGES = {FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
               FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
               FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
               FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
               FieldDescriptor.CPPTYPE_ENUM: (-(2**31), 2**31 - 1)}
_EDGE_INTS = [0, 1, -1, 2, 7, 11, 2**31 - 1, 2**32 - 1, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), T0]
_EDGE_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 2.0**53, 1e-300]
_scalars = (st.none() | st.booleans() | st.sampled_from(_EDGE_INTS).filter(lambda v: -(2**63) <= v < 2**63)
            | st.integers(-(2**63), 2**63 - 1) | st.sampled_from(_EDGE_FLOATS) | st.floats()
            | st.sampled_from(_NAMES) | st.text(max_size=12) | st.binary(max_size=12))
_any_values = st.recursive(_scalars, lambda children: st.lists(children, max_size=5)
                           | st.dictionaries(st.sampled_from(_NAMES) | st.text(max_size=6), children, max_size=3),
                           max_leaves=12)


def _value(data: st.DataObject, field: FieldDescriptor) -> Any:
    if field.cpp_type in _INT_RANGES:
        low, high = _INT_RANGES[field.cpp_type]
        return data.draw(st.sampled_from([v for v in _EDGE_INTS if low <= v <= high]) | st.integers(low, high))
    if field.cpp_type in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return data.draw(st.sampled_from(_EDGE_FLOATS) | st.floats())
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return data.draw(st.booleans())
    if field.type == FieldDescriptor.TYPE_BYTES:
        return data.draw(st.binary(max_size=20))
    return data.draw(st.sampled_from(_NAMES) | st.text(max_size=20) | st.just("x" * 5000))


def _targets(message: Message) -> list[tuple[Message, FieldDescriptor, int | None]]:
    """The fields of a message tree: (parent, field, index of a repeated field's element or None). Inside a long
    repeated field only the first elements and the last are walked into (the rest are alike, and walking every
    AnyValue of every row array would cost more than sending the request)."""
    found: list[tuple[Message, FieldDescriptor, int | None]] = []
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        found.append((message, field, None))
        if field.is_repeated:
            last = len(value) - 1
            for index, item in enumerate(value):
                found.append((message, field, index))
                if field.message_type is not None and (index < 3 or index == last):
                    found.extend(_targets(item))
        elif field.message_type is not None and message.HasField(field.name):
            found.extend(_targets(value))
    return found


def _mutate(data: st.DataObject, message: Message) -> None:
    targets = _targets(message)
    parent, field, index = targets[data.draw(st.integers(0, len(targets) - 1))]
    container = getattr(parent, field.name)
    is_any = field.message_type is not None and field.message_type.full_name == "opentelemetry.proto.common.v1.AnyValue"
    if field.is_repeated and index is None:  # the list itself
        operation = data.draw(st.sampled_from(["clear", "grow", "repeat"]))
        if operation == "clear":
            parent.ClearField(field.name)
        elif field.message_type is None:
            container.extend([_value(data, field)] * (1 if operation == "grow" else data.draw(st.integers(2, 300))))
        elif len(container):
            item = container[data.draw(st.integers(0, len(container) - 1))]
            for _ in range(1 if operation == "grow" else data.draw(st.integers(2, 50))):
                container.add().CopyFrom(item)
        else:
            container.add()
    elif field.is_repeated:  # one element
        operation = data.draw(st.sampled_from(["delete", "set"]))
        if operation == "delete":
            del container[index]
        elif is_any:
            container[index].CopyFrom(any_value(data.draw(_any_values)))
        elif field.message_type is None:
            container[index] = _value(data, field)
        else:
            container[index].Clear()
    elif is_any:
        container.CopyFrom(any_value(data.draw(_any_values)))
    elif field.message_type is not None:
        parent.ClearField(field.name)
    else:
        setattr(parent, field.name, _value(data, field))


def _mangle(data: st.DataObject, body: bytes) -> bytes:
    """Byte-level damage: flips, insertions, deletions, truncation."""
    out = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        operation = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = data.draw(st.integers(0, max(len(out) - 1, 0)))
        if operation == "flip" and out:
            out[at] = data.draw(st.sampled_from([0x00, 0xFF, 0x80, 0x7F, 0x0A, 0x12, 0x1A]) | st.integers(0, 255))
        elif operation == "insert":
            out[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif operation == "delete":
            del out[at:at + data.draw(st.integers(1, 8))]
        else:
            del out[at:]
    return bytes(out)


# --- the processor under fuzz -----------------------------------------------------------------------------------
def _reference():
    rng = np.random.default_rng(0)
    profile, _ = profile_from_columns({"age": rng.normal(40, 10, 2000)}, WindowSpec(chunk_size=ROWS),
                                      model="fuzz-check", version="1")
    return profile


@pytest.fixture
def fuzzed(tmp_path: Path) -> Iterator[tuple[Processor, int]]:
    processor = Processor(Store(str(tmp_path / "processor.db")))
    processor.register(_reference())  # before the fuzz: its model is known whatever the fuzz sends
    server, port = grpc_receiver.start(processor, "127.0.0.1:0")
    try:
        yield processor, port
    finally:
        server.stop(grace=None)


def test_mutated_requests_never_fail_the_processor(fuzzed: tuple[Processor, int],
                                                   seeds: list[tuple[type, bytes]]) -> None:
    processor, port = fuzzed
    loop = asyncio.new_event_loop()
    client_context = serving(build_app(processor))
    client = loop.run_until_complete(client_context.__aenter__())
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    exports = {ExportLogsServiceRequest: ("/v1/logs", channel.unary_unary(
                   "/opentelemetry.proto.collector.logs.v1.LogsService/Export")),
               ExportMetricsServiceRequest: ("/v1/metrics", channel.unary_unary(
                   "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"))}
    seen: dict[Any, int] = {}

    async def post(path: str, body: bytes, content_type: str, encoding: str) -> int:
        headers = {"Content-Type": content_type, **({"Content-Encoding": encoding} if encoding else {})}
        answer = await client.post(path, data=body, headers=headers)
        await answer.read()
        return answer.status

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        request_type, raw = data.draw(st.sampled_from(seeds))
        message = request_type.FromString(raw)
        for _ in range(data.draw(st.integers(0, 4))):
            _mutate(data, message)
        encoding = data.draw(st.sampled_from(["protobuf", "json", "bytes", "grpc"]))
        path, grpc_export = exports[request_type]
        if encoding == "grpc":
            body = message.SerializeToString()
            if data.draw(st.booleans()):
                body = _mangle(data, body)
            try:
                grpc_export(body, timeout=30)
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
            seen[code] = seen.get(code, 0) + 1
            assert code in GRPC_ALLOWED, code
        else:
            if encoding == "json":
                body, content_type = _otlp_json(message), "application/json"
            else:
                body, content_type = message.SerializeToString(), PROTOBUF
            if encoding == "bytes" or data.draw(st.integers(0, 9)) == 0:
                body = _mangle(data, body)
            compression = data.draw(st.sampled_from(["", "", "gzip"]))
            if compression:
                body = gzip.compress(body, 1)
            status = loop.run_until_complete(post(path, body, content_type, compression))
            seen[status] = seen.get(status, 0) + 1
            assert status in HTTP_ALLOWED, status
        assert processor.counters().get("rejected_requests_unexpected", 0) == 0
        done = sum(seen.values())
        if done % 10_000 == 0:  # progress of a long run (-s shows it)
            print(f"{done} mutated requests: {seen}", flush=True)

    try:
        fuzz()
        print(f"fuzz answers over {EXAMPLES} examples: {seen}")
        processor.tick()  # whatever the fuzz stored, the tick runs
        _valid_request_is_stored_and_evaluated(processor, loop, client)
    finally:
        channel.close()
        loop.run_until_complete(client_context.__aexit__(None, None, None))
        loop.close()


def _valid_request_is_stored_and_evaluated(processor: Processor, loop: asyncio.AbstractEventLoop, client: Any) -> None:
    rng = np.random.default_rng(1)
    model = {semconv.ML_MODEL_NAME: "fuzz-check", semconv.ML_MODEL_VERSION: "1"}
    event = {**model, semconv.ML_PREDICTION_ID: [f"check-{i}" for i in range(ROWS)],
             semconv.ML_PREDICTION_SCORE: rng.random(ROWS).tolist(),
             f"{semconv.ML_FEATURE_PREFIX}age": rng.normal(40, 10, ROWS).tolist()}
    # two windows' worth, the second a minute later, so that the first closes however windows close
    later = {**event, semconv.ML_PREDICTION_ID: [f"later-{i}" for i in range(ROWS)]}
    body = logs_request(log_record(event, time_ns=T0), log_record(later, time_ns=T0 + 60 * 10**9)) \
        .SerializeToString()

    async def send() -> tuple[int, bytes]:
        answer = await client.post("/v1/logs", data=body, headers={"Content-Type": PROTOBUF})
        return answer.status, await answer.read()

    status, answer = loop.run_until_complete(send())
    assert status == 200, answer
    assert processor.counters()["predictions"] >= 2 * ROWS
    processor.tick()
    results = processor.store.results(model="fuzz-check", version="1", period="analysis")
    assert any(r["column"] == "age" and r["kind"] == "drift" for r in results), results[:3]


def test_any_value_builder_covers_every_kind() -> None:  # the fuzz's AnyValue mutations reach every kind
    kinds = {any_value(v).WhichOneof("value") for v in ["s", True, 1, 1.5, b"b", [1], {"k": 1}, None]}
    assert kinds == {"string_value", "bool_value", "int_value", "double_value", "bytes_value", "array_value",
                     "kvlist_value", None}
