"""Decoding OTLP requests (protobuf or JSON) into otel-mlmon's records: columnar, not per-row objects.

From ``/v1/logs``: ``ml.predictions`` events become ``PredictionBatch`` (ids, outputs, captured features as
arrays) and ``ml.labels`` events ``LabelBatch``; every other log record is ignored. From ``/v1/metrics``: the
``ml.feature.*`` and ``ml.prediction.value`` points become sketches (``SketchPoint``), rebuilt exactly from the
bucketing parameters on the point; every other metric is ignored. What cannot be used is counted per reason in
``rejected`` (the OTLP partial-success count), never raised: a malformed *request* raises ``DecodeError``.
"""

from __future__ import annotations

import base64
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otel_mlmon import semconv
from otel_mlmon.sketch import CategoricalSketch, NumericSketch


class DecodeError(ValueError):
    """The request body is not a valid OTLP message of the expected kind (HTTP 400 / INVALID_ARGUMENT)."""


@dataclass
class PredictionBatch:
    model: str
    version: str
    time_unix_nano: int
    ids: list[str]
    labels: list[Any] | None = None
    scores: dict[str, list[float]] = field(default_factory=dict)  # class -> scores (binary: the positive class)
    values: list[float] | None = None
    features: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class LabelBatch:
    model: str
    version: str
    time_unix_nano: int
    ids: list[str]
    labels: list[Any]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class SketchPoint:
    """One exported sketch of one column (a feature, or the regression output ``ml.prediction.value``)."""

    model: str
    version: str
    column: str
    start_unix_nano: int
    time_unix_nano: int
    sketch: NumericSketch | CategoricalSketch


@dataclass
class Decoded:
    predictions: list[PredictionBatch] = field(default_factory=list)
    labels: list[LabelBatch] = field(default_factory=list)
    sketches: list[SketchPoint] = field(default_factory=list)
    missing: list[tuple[str, str, str, str, int]] = field(default_factory=list)  # model, version, column, reason, n
    rejected: Counter[str] = field(default_factory=Counter)  # reason -> records (log records or data points)
    rejected_rows: Counter[str] = field(default_factory=Counter)  # reason -> rows dropped from accepted records
    accepted: int = 0

    @property
    def rejected_count(self) -> int:
        return sum(self.rejected.values())

    def error_message(self) -> str:
        return "; ".join(f"{n} {reason}" for reason, n in sorted(self.rejected.items()))


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    if kind is None:
        return None
    return getattr(value, kind)


def _attributes(item: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in item.attributes}


_HEX_FIELDS = {"traceId", "spanId", "parentSpanId"}


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON carries trace and span ids as hex; protobuf's JSON mapping expects base64 for bytes."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in _HEX_FIELDS and isinstance(value, str):
                try:
                    value = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                except ValueError:
                    raise DecodeError(f"{key} {value!r} is not hex") from None
            out[key] = _hex_ids_to_base64(value)
        return out
    if isinstance(node, list):
        return [_hex_ids_to_base64(v) for v in node]
    return node


def parse(body: bytes, message_type: type, content_type: str) -> Any:
    """An OTLP request message from a body in ``application/x-protobuf`` or ``application/json``."""
    message = message_type()
    try:
        if content_type == "application/json":
            document = json.loads(body.decode("utf-8"))
            if not isinstance(document, dict):
                raise DecodeError("an OTLP/JSON request is a JSON object")
            json_format.ParseDict(_hex_ids_to_base64(document), message, ignore_unknown_fields=True)
        else:
            message.ParseFromString(body)
    except DecodeError:
        raise
    except (ProtobufDecodeError, json_format.ParseError, UnicodeDecodeError, json.JSONDecodeError, ValueError,
            TypeError, RecursionError) as exc:
        kind = "JSON" if content_type == "application/json" else "protobuf"
        raise DecodeError(f"not a valid OTLP {message_type.__name__} in {kind}: {exc}") from None
    return message


def _string_ids(raw: Any) -> list[str] | None:
    if not isinstance(raw, list) or not raw:
        return None
    ids = []
    for item in raw:
        if item is None or item == "":
            return None
        ids.append(str(item))
    return ids


def _numbers(raw: Any, rows: int) -> list[float] | None:
    """An array attribute of ``rows`` numbers (NaN and infinities included), or None."""
    if not isinstance(raw, list) or len(raw) != rows:
        return None
    try:
        return [float(v) for v in raw]
    except (TypeError, ValueError):
        return None


def _prediction(attributes: dict[str, Any], time_unix_nano: int, decoded: Decoded) -> None:
    model = attributes.get(semconv.ML_MODEL_NAME)
    version = attributes.get(semconv.ML_MODEL_VERSION, "")
    ids = _string_ids(attributes.get(semconv.ML_PREDICTION_ID))
    if not isinstance(model, str) or not model or ids is None:
        decoded.rejected["prediction event without model name or ids"] += 1
        return
    rows = len(ids)
    labels = attributes.get(semconv.ML_PREDICTION_LABEL)
    if labels is not None and (not isinstance(labels, list) or len(labels) != rows):
        decoded.rejected["prediction event whose label array does not match its ids"] += 1
        return
    scores: dict[str, list[float]] = {}
    values: list[float] | None = None
    features: dict[str, list[Any]] = {}
    for key, raw in attributes.items():
        if key == semconv.ML_PREDICTION_SCORE or key.startswith(semconv.ML_PREDICTION_SCORE_PREFIX):
            numbers = _numbers(raw, rows)
            if numbers is None:
                decoded.rejected["prediction event with scores that are not numbers aligned with its ids"] += 1
                return
            scores["" if key == semconv.ML_PREDICTION_SCORE else key[len(semconv.ML_PREDICTION_SCORE_PREFIX):]] = \
                numbers
        elif key == semconv.ML_PREDICTION_VALUE:
            values = _numbers(raw, rows)
            if values is None:
                decoded.rejected["prediction event with values that are not numbers aligned with its ids"] += 1
                return
        elif key.startswith(semconv.ML_FEATURE_PREFIX) and isinstance(raw, list) and len(raw) == rows:
            features[key[len(semconv.ML_FEATURE_PREFIX):]] = raw
    # A row whose output is NaN or infinite cannot be scored: it is dropped (and counted), the others kept.
    keep = [all(math.isfinite(column[i]) for column in (*scores.values(), *([values] if values else [])))
            for i in range(rows)]
    if not all(keep):
        decoded.rejected_rows["prediction rows with a non-finite output"] += rows - sum(keep)
        if not any(keep):
            decoded.rejected["prediction event whose every row has a non-finite output"] += 1
            return

        def kept(column: list[Any]) -> list[Any]:
            return [v for v, k in zip(column, keep) if k]

        ids, labels = kept(ids), kept(labels) if labels is not None else None
        scores = {c: kept(v) for c, v in scores.items()}
        values = kept(values) if values is not None else None
        features = {c: kept(v) for c, v in features.items()}
    decoded.predictions.append(PredictionBatch(model, str(version or ""), time_unix_nano, ids, labels, scores, values,
                                               features))
    decoded.accepted += 1


def _labels(attributes: dict[str, Any], time_unix_nano: int, decoded: Decoded) -> None:
    model = attributes.get(semconv.ML_MODEL_NAME)
    ids = _string_ids(attributes.get(semconv.ML_PREDICTION_ID))
    labels = attributes.get(semconv.ML_LABEL_VALUE)
    if not isinstance(model, str) or not model or ids is None or not isinstance(labels, list) \
            or len(labels) != len(ids) or any(v is None for v in labels):
        decoded.rejected["label event without model name, or with ids and labels that do not pair up"] += 1
        return
    decoded.labels.append(LabelBatch(model, str(attributes.get(semconv.ML_MODEL_VERSION, "") or ""),
                                     time_unix_nano, ids, labels))
    decoded.accepted += 1


def decode_logs(body: bytes, content_type: str) -> Decoded:
    return logs_records(parse(body, ExportLogsServiceRequest, content_type))


def logs_records(request: ExportLogsServiceRequest) -> Decoded:
    """The records of a parsed logs request (the gRPC receiver's entry)."""
    decoded = Decoded()
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                if record.event_name == semconv.EVENT_PREDICTIONS:
                    _prediction(_attributes(record), record.time_unix_nano or record.observed_time_unix_nano,
                                decoded)
                elif record.event_name == semconv.EVENT_LABELS:
                    _labels(_attributes(record), record.time_unix_nano or record.observed_time_unix_nano, decoded)
    return decoded


def _numeric_sketch(point: Any, attributes: dict[str, Any], m2: float) -> NumericSketch:
    return NumericSketch.from_explicit(
        list(point.explicit_bounds), list(point.bucket_counts), count=int(point.count), total=float(point.sum),
        minimum=float(point.min) if point.HasField("min") else None,
        maximum=float(point.max) if point.HasField("max") else None, m2=m2,
        center=float(attributes.get(semconv.ML_SKETCH_CENTER, 0.0)),
        scale=float(attributes.get(semconv.ML_SKETCH_SCALE, 1.0)),
        precision=int(attributes.get(semconv.ML_SKETCH_PRECISION, 7)))


def decode_metrics(body: bytes, content_type: str) -> Decoded:
    return metrics_records(parse(body, ExportMetricsServiceRequest, content_type))


def metrics_records(request: ExportMetricsServiceRequest) -> Decoded:
    """The records of a parsed metrics request (the gRPC receiver's entry)."""
    decoded = Decoded()
    metrics = [metric for resource_metrics in request.resource_metrics
               for scope_metrics in resource_metrics.scope_metrics for metric in scope_metrics.metrics]
    # The M2 gauge completes the moments of the histogram point with the same attributes and end time (a gauge's
    # start time is not always carried).
    m2: dict[tuple[Any, ...], float] = {}
    for metric in metrics:
        if metric.name == semconv.ML_FEATURE_VALUE_M2 and metric.WhichOneof("data") == "gauge":
            for point in metric.gauge.data_points:
                attributes = _attributes(point)
                key = (attributes.get(semconv.ML_MODEL_NAME), attributes.get(semconv.ML_MODEL_VERSION, ""),
                       attributes.get(semconv.ML_FEATURE_NAME), point.time_unix_nano)
                if math.isfinite(point.as_double) and point.as_double >= 0:
                    m2[key] = point.as_double
                decoded.accepted += 1
    categories: dict[tuple[Any, ...], SketchPoint] = {}
    for metric in metrics:
        name = metric.name
        if name in (semconv.ML_FEATURE_VALUE, semconv.ML_PREDICTION_VALUE_METRIC) and \
                metric.WhichOneof("data") == "histogram":
            for point in metric.histogram.data_points:
                attributes = _attributes(point)
                model = attributes.get(semconv.ML_MODEL_NAME)
                column = attributes.get(semconv.ML_FEATURE_NAME, semconv.ML_PREDICTION_VALUE) \
                    if name == semconv.ML_FEATURE_VALUE else semconv.ML_PREDICTION_VALUE
                key = (model, attributes.get(semconv.ML_MODEL_VERSION, ""), attributes.get(semconv.ML_FEATURE_NAME),
                       point.time_unix_nano)
                try:
                    sketch = _numeric_sketch(point, attributes, m2.get(key, 0.0))
                except (ValueError, TypeError) as exc:
                    decoded.rejected[f"sketch point that does not rebuild ({exc})"] += 1
                    continue
                if not isinstance(model, str) or not model:
                    decoded.rejected["sketch point without model name"] += 1
                    continue
                decoded.sketches.append(SketchPoint(model, str(attributes.get(semconv.ML_MODEL_VERSION, "")),
                                                    str(column), point.start_time_unix_nano,
                                                    point.time_unix_nano, sketch))
                decoded.accepted += 1
        elif name == semconv.ML_FEATURE_CATEGORY_COUNT and metric.WhichOneof("data") == "sum":
            for point in metric.sum.data_points:
                attributes = _attributes(point)
                model = attributes.get(semconv.ML_MODEL_NAME)
                feature = attributes.get(semconv.ML_FEATURE_NAME)
                category = attributes.get(semconv.ML_FEATURE_CATEGORY)
                count = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
                if not isinstance(model, str) or not model or feature is None or category is None \
                        or count < 0:
                    decoded.rejected["category point without model, feature or category"] += 1
                    continue
                version = str(attributes.get(semconv.ML_MODEL_VERSION, ""))
                group = (model, version, feature, point.start_time_unix_nano, point.time_unix_nano)
                entry = categories.get(group)
                if entry is None:
                    entry = categories[group] = SketchPoint(model, version, str(feature),
                                                          point.start_time_unix_nano, point.time_unix_nano,
                                                          CategoricalSketch())
                    decoded.sketches.append(entry)
                assert isinstance(entry.sketch, CategoricalSketch)
                entry.sketch.add(str(category), int(count))
                decoded.accepted += 1
        elif name == semconv.ML_FEATURE_MISSING and metric.WhichOneof("data") == "sum":
            for point in metric.sum.data_points:
                attributes = _attributes(point)
                count = point.as_int if point.WhichOneof("value") == "as_int" else int(point.as_double)
                decoded.missing.append((str(attributes.get(semconv.ML_MODEL_NAME, "")),
                                        str(attributes.get(semconv.ML_MODEL_VERSION, "")),
                                        str(attributes.get(semconv.ML_FEATURE_NAME, "")),
                                        str(attributes.get(semconv.ML_FEATURE_MISSING_REASON, "")), count))
                decoded.accepted += 1
    return decoded

