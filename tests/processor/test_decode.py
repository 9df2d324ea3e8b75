"""Decoding what the instrumentation really sends, encoded by the OTel SDK's own OTLP encoders."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import otel_mlmon
from otel_mlmon import semconv
from otel_mlmon.instrumentation import force_flush
from otel_mlmon.processor.decode import DecodeError, MissingCounts, _value, decode_logs, decode_metrics
from otel_mlmon.sketch import NumericSketch
from tests.conftest import Providers


def _otlp_json(message) -> bytes:
    """OTLP/JSON as an SDK or Collector sends it: protobuf JSON mapping, trace and span ids in hex."""
    document = json_format.MessageToDict(message)

    def hexify(node):
        if isinstance(node, dict):
            return {k: (base64.b64decode(v).hex() if k in ("traceId", "spanId") else hexify(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [hexify(v) for v in node]
        return node

    return json.dumps(hexify(document)).encode()


@pytest.fixture
def emitted(providers: Providers):
    X, y = load_iris(return_X_y=True)
    model = otel_mlmon.instrument_model(LogisticRegression(max_iter=1000).fit(X, y), name="iris", version="2",
                                        **providers.kwargs())
    with otel_mlmon.prediction_ids() as p:
        proba = model.predict_proba(X)
    otel_mlmon.record_labels("iris", ids=p.ids[:50], labels=y[:50], version="2",
                             logger_provider=providers.logger_provider)
    force_flush()
    return providers, X, proba, p.ids, y


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_events_round_trip(emitted, encoding) -> None:
    providers, _, proba, ids, y = emitted
    request = encode_logs(providers.logs.get_finished_logs())
    body = request.SerializeToString() if encoding == "protobuf" else _otlp_json(request)
    content_type = "application/x-protobuf" if encoding == "protobuf" else "application/json"
    decoded = decode_logs(body, content_type)
    assert decoded.rejected_count == 0 and decoded.accepted == len(decoded.predictions) + len(decoded.labels)
    assert [i for b in decoded.predictions for i in b.ids] == ids
    batch = decoded.predictions[0]
    assert (batch.model, batch.version) == ("iris", "2") and batch.time_unix_nano > 0
    np.testing.assert_allclose([s for b in decoded.predictions for s in b.scores["2"]], proba[:, 2])
    assert [v for b in decoded.predictions for v in b.labels] == proba.argmax(1).tolist()
    (labels,) = decoded.labels
    assert labels.ids == ids[:50] and labels.labels == y[:50].tolist()


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_sketches_round_trip_exactly(emitted, encoding) -> None:
    providers, X, *_ = emitted
    (data,) = providers.sketches.batches
    request = encode_metrics(data)
    body = request.SerializeToString() if encoding == "protobuf" else _otlp_json(request)
    decoded = decode_metrics(body, "application/x-protobuf" if encoding == "protobuf" else "application/json")
    assert decoded.rejected_count == 0
    features = {p.column: p for p in decoded.sketches if p.column.startswith("feature_")}
    assert sorted(features) == [f"feature_{j}" for j in range(4)]
    for j in range(4):
        direct = NumericSketch()
        direct.update(X[:, j])
        assert features[f"feature_{j}"].sketch == direct  # buckets, count, min, max, mean and M2
        assert features[f"feature_{j}"].model == "iris" and features[f"feature_{j}"].version == "2"


def _log_request(attributes: dict, event: str = semconv.EVENT_PREDICTIONS) -> bytes:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def any_value(value) -> AnyValue:
        if isinstance(value, list):
            out = AnyValue()
            out.array_value.values.extend(any_value(v) for v in value)
            return out
        if isinstance(value, float):
            return AnyValue(double_value=value)
        if isinstance(value, int):
            return AnyValue(int_value=value)
        return AnyValue(string_value=value)

    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.event_name = event
    record.time_unix_nano = 1
    record.attributes.extend(KeyValue(key=k, value=any_value(v)) for k, v in attributes.items())
    return request.SerializeToString()


@pytest.mark.parametrize(("attributes", "event", "reason"), [
    ({semconv.ML_MODEL_NAME: "m"}, semconv.EVENT_PREDICTIONS, "without ids"),
    ({semconv.ML_PREDICTION_ID: ["a"]}, semconv.EVENT_PREDICTIONS, "without ml.model.name"),
    ({semconv.ML_MODEL_NAME: "m", semconv.ML_PREDICTION_ID: ["a", "b"], semconv.ML_PREDICTION_LABEL: [1]},
     semconv.EVENT_PREDICTIONS, "label array does not match"),
    ({semconv.ML_MODEL_NAME: "m", semconv.ML_PREDICTION_ID: ["a"], semconv.ML_PREDICTION_SCORE: [float("nan")]},
     semconv.EVENT_PREDICTIONS, "every row has a non-finite output"),
    ({semconv.ML_MODEL_NAME: "m", semconv.ML_PREDICTION_ID: ["a"], semconv.ML_PREDICTION_VALUE: ["x"]},
     semconv.EVENT_PREDICTIONS, "not numbers"),
    ({semconv.ML_MODEL_NAME: "m", semconv.ML_PREDICTION_ID: ["a"], semconv.ML_LABEL_VALUE: [1, 2]},
     semconv.EVENT_LABELS, "do not pair up"),
])
def test_unusable_records_are_counted_not_raised(attributes, event, reason) -> None:
    decoded = decode_logs(_log_request(attributes, event), "application/x-protobuf")
    assert decoded.rejected_count == 1 and reason in decoded.error_message()
    assert decoded.predictions == [] and decoded.labels == []


def test_rows_with_non_finite_outputs_are_dropped_and_counted() -> None:
    attributes = {semconv.ML_MODEL_NAME: "m", semconv.ML_PREDICTION_ID: ["a", "b", "c"],
                  semconv.ML_PREDICTION_VALUE: [1.0, float("inf"), 3.0], semconv.ML_PREDICTION_LABEL: ["x", "y", "z"]}
    decoded = decode_logs(_log_request(attributes), "application/x-protobuf")
    (batch,) = decoded.predictions
    assert batch.ids == ["a", "c"] and batch.values == [1.0, 3.0] and batch.labels == ["x", "z"]
    assert decoded.rejected_count == 0 and decoded.rejected_rows["prediction rows with a non-finite output"] == 1


def test_other_log_records_are_ignored() -> None:
    decoded = decode_logs(_log_request({"http.route": "/"}, event="app.started"), "application/x-protobuf")
    assert (decoded.accepted, decoded.rejected_count) == (0, 0)


@pytest.mark.parametrize(("body", "content_type"), [
    (b"\xff\xff\xff\xff", "application/x-protobuf"), (b"{not json", "application/json"),
    (b"[1, 2]", "application/json"), (b'{"resourceLogs": 7}', "application/json"),
    (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}', "application/json"),
])
def test_malformed_bodies_raise_decode_error(body, content_type) -> None:
    with pytest.raises(DecodeError):
        decode_logs(body, content_type)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512), st.sampled_from(["application/x-protobuf", "application/json"]))
def test_fuzz_any_bytes_decode_or_raise_decode_error(body, content_type) -> None:
    for decode in (decode_logs, decode_metrics):
        try:
            decoded = decode(body, content_type)
        except DecodeError:
            continue
        assert decoded.rejected_count >= 0


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=12), children, max_size=4), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["resourceLogs", "resourceMetrics", "scopeLogs", "logRecords",
                                        "attributes", "eventName", "traceId"]), json_values, max_size=3))
def test_fuzz_json_documents_decode_or_raise_decode_error(document) -> None:
    body = json.dumps(document).encode()
    for decode in (decode_logs, decode_metrics):
        try:
            decode(body, "application/json")
        except DecodeError:
            pass


def test_categories_missing_counts_and_regression_outputs_round_trip(providers: Providers) -> None:
    import pandas as pd

    class Doubler:
        def predict(self, X):
            return X["size"].to_numpy() * 2

    model = otel_mlmon.instrument_model(Doubler(), name="echo", task="regression", **providers.kwargs())
    frame = pd.DataFrame({"plan": ["a", "b", "a", None], "size": [1.0, np.nan, 3.0, -4.0]})
    model.predict(frame)
    force_flush()
    decoded = decode_metrics(encode_metrics(providers.sketches.batches[0]).SerializeToString(),
                             "application/x-protobuf")
    assert decoded.rejected_count == 0
    by_column = {p.column: p.sketch for p in decoded.sketches if not isinstance(p.sketch, MissingCounts)}
    assert by_column["plan"].counts == {"a": 2, "b": 1}
    assert by_column[semconv.ML_PREDICTION_VALUE].count == 3  # the NaN output is not a value
    missing = [(p.model, p.version, p.column, p.sketch.reason, p.sketch.count) for p in decoded.sketches
               if isinstance(p.sketch, MissingCounts)]
    assert sorted(missing) == [("echo", "", "plan", "missing", 1), ("echo", "", "size", "missing", 1)]
    assert all(p.start_unix_nano < p.time_unix_nano for p in decoded.sketches)  # each in its export interval
    size = NumericSketch()
    size.update(frame["size"].to_numpy())
    assert by_column["size"].buckets()[1].tolist() == size.buckets()[1].tolist()


def test_wide_features_map_and_row_times_are_read() -> None:
    """A wide model's features come in one ``ml.features`` map; rows of several buffered calls carry their own
    times (``ml.prediction.time``), kept per row in the record's one batch (partial success counts records)."""
    from tests.processor.test_receivers_hostile import log_record, logs_body

    attributes = {semconv.ML_MODEL_NAME: "m", semconv.ML_PREDICTION_ID: ["a", "b", "c"],
                  semconv.ML_PREDICTION_VALUE: [1.0, 2.0, 3.0], semconv.ML_PREDICTION_TIME: [5, 7, 5],
                  semconv.ML_FEATURES: {"age": [30, 40, 50], "plan": ["x", "y", b"z"], "short": [1]}}
    decoded = decode_logs(logs_body(log_record(attributes, time_ns=5)), "application/x-protobuf")
    assert decoded.accepted == 1 and decoded.rejected_count == 0
    assert [(b.row_times(), b.ids, b.values, b.features) for b in decoded.predictions] == [
        ([5, 7, 5], ["a", "b", "c"], [1.0, 2.0, 3.0], {"age": [30, 40, 50], "plan": ["x", "y", "z"]})]
    bad = {**attributes, semconv.ML_PREDICTION_TIME: [5, -1, 5]}
    decoded = decode_logs(logs_body(log_record(bad, time_ns=5)), "application/x-protobuf")
    assert decoded.rejected_count == 1 and "ml.prediction.time" in decoded.error_message()


def _slow_value(value):
    """The general reading of an AnyValue, item by item by its kind: the reference for the array fast path."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_slow_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _slow_value(kv.value) for kv in value.kvlist_value.values}
    return None if kind is None else getattr(value, kind)


_ITEM = st.one_of(st.text(max_size=3).map(lambda v: AnyValue(string_value=v)),
                  st.sampled_from([0.0, -0.0, 1.5]).map(lambda v: AnyValue(double_value=v)),
                  st.sampled_from([0, 1, -(2**63)]).map(lambda v: AnyValue(int_value=v)),
                  st.booleans().map(lambda v: AnyValue(bool_value=v)),
                  st.just(AnyValue()))


@settings(max_examples=300, deadline=None)
@given(st.lists(_ITEM, max_size=8))
def test_arrays_read_as_their_items_whatever_the_mix_of_kinds(items) -> None:
    """Arrays of one kind take a fast path that reads each item's field of that kind; an item of another kind
    (or an empty string, a zero, an unset value) must still be read as what it is."""
    value = AnyValue(array_value=ArrayValue(values=items))
    got = _value(value)
    want = _slow_value(value)
    assert got == want and [type(v) for v in got] == [type(v) for v in want]
