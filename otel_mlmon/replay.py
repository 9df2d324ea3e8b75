"""``mlmon replay``: a dataset's predictions and labels sent through the public instrumentation API over OTLP.

The analysis file carries the model's outputs; a stand-in model returns them, so the telemetry is what an
instrumented service sends, with the file's own answers and times:

- **Outputs**: the predicted labels of ``--prediction-column`` and the scores of ``--score-column`` /
  ``--score-columns`` (or the values of a regression's prediction column), exactly as the file has them: the
  label is never derived from a score. Without a prediction column a classifier's label is the highest score's
  class.
- **Event time**: with ``--timestamp-column`` each row's event time (its ``ml.predictions`` event's timestamp, or
  its entry of ``ml.prediction.time`` when the event holds rows of several calls) is the file's timestamp, to the
  microsecond as ``mlmon evaluate`` reads it; consecutive rows of one timestamp share one call. A file whose
  timestamps are not sorted is sent in (timestamp, id) order (stable), read whole into memory for that. Without a
  timestamp column, rows are sent in file order and a call's rows get the send time plus the position of the
  call's first row in nanoseconds; a call holds only rows whose ids increase, so the processor's
  (event time, prediction id) order is the file's order.
- **Ids**: the ``--id-column``, else the row number in the file zero-padded to one width (``000``, ``001``, …), so
  that id order is file order.
- **Features**: captured in the events (the processor's row windows are exact, as ``mlmon evaluate``'s); feature
  sketches are off unless ``--feature-sketches`` (their points then lie in the sketch intervals of the file's
  times, sent when replay ends).
- **Segments and fairness**: ``--segment-by C`` gives each row ``ml.segment`` (the value of column C, bounded by
  ``--max-segments`` as the instrumentation bounds it: the first values seen, the rest ``__other__``, none
  ``__missing__``), on the events and, with ``--feature-sketches``, on sketch points made per segment;
  ``--sensitive-column C`` gives each row ``ml.fairness.group`` on the events (C is then not a feature). The values
  are handed to the instrumentation beside the model's input (``recorded_as(columns=...)``), so a ``--model-file``
  model never sees a column it was not fitted on.

Labels (``--labels`` or the file's target column) follow after ``--label-delay`` seconds, optionally shuffled and
thinned to ``--label-fraction``. ``--rate`` caps rows per second: the demo's driver and the load generator.

Delivery is counted, not assumed: events go through ``AcknowledgingLogExporter``, which counts the rows the endpoint
acknowledged (HTTP 200 / gRPC OK less partial-success rejections) and retries throttling and outages for
``retry_for_s`` seconds; ``ReplayResult`` says how many predictions and labels were not delivered.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from otel_mlmon import environment_variables as env
from otel_mlmon.batch.reader import DataError, DataFile, epoch_seconds, is_numeric_type

MAX_EVENT_BYTES = 1 << 20  # an event's rows are capped so that one event stays about this size on the wire
BYTES_PER_VALUE = 16  # a rough upper size of one array value on the wire (a double, or a short string)


@dataclass
class ReplayOptions:
    endpoint: str
    protocol: str = "http/protobuf"
    batch_rows: int = 100
    rate: float | None = None
    label_delay: float = 0.0
    label_shuffle: bool = False
    label_fraction: float = 1.0
    seed: int = 0
    service: str | None = None  # a model service's base URL: rows go to its POST /predict instead
    retry_for: float = 60.0  # seconds a failing endpoint is retried before rows are given up
    max_segments: int | None = None  # segments kept (counting __other__) with columns.segment_by; None: 10
    feature_sketches: bool = False  # also send feature sketches (per segment with columns.segment_by)

    def __post_init__(self) -> None:
        if self.protocol not in ("http/protobuf", "grpc"):
            raise ValueError(f"--protocol must be http/protobuf or grpc, got {self.protocol!r}")
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"--label-fraction must be in (0, 1], got {self.label_fraction}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"--rate must be positive, got {self.rate}")
        if self.label_delay < 0 or self.batch_rows < 1:
            raise ValueError("--label-delay must be >= 0 and the batch size positive")
        if not self.retry_for >= 0:
            raise ValueError(f"--retry-for must be >= 0 seconds, got {self.retry_for}")
        if self.service is not None and not self.service.startswith(("http://", "https://")):
            raise ValueError(f"--service must be an http(s) URL, got {self.service!r}")
        if self.max_segments is not None and self.max_segments < 2:
            raise ValueError(f"--max-segments must be at least 2, got {self.max_segments}")
        if self.protocol == "http/protobuf" and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"--endpoint must be the OTLP/HTTP base URL, as http://127.0.0.1:4318, got "
                             f"{self.endpoint!r} (or give --protocol grpc for host:port)")
        if self.protocol == "grpc":
            if self.endpoint.startswith("http://"):  # the OTel SDK's form of a plaintext gRPC endpoint
                self.endpoint = self.endpoint.removeprefix("http://").rstrip("/")
            host, _, port = self.endpoint.rpartition(":")
            if not host or not port.isdigit() or "/" in self.endpoint:
                raise ValueError(f"--endpoint with --protocol grpc must be host:port (or http://host:port), as "
                                 f"127.0.0.1:4317, got {self.endpoint!r}")


@dataclass
class ReplayResult:
    """Predictions and labels sent, and how many of them the endpoint acknowledged."""

    rows: int = 0
    rows_acknowledged: int = 0
    labels: int = 0
    labels_acknowledged: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def rows_lost(self) -> int:
        return max(0, self.rows - self.rows_acknowledged)

    @property
    def labels_lost(self) -> int:
        return max(0, self.labels - self.labels_acknowledged)

    @property
    def delivered(self) -> bool:
        return not self.rows_lost and not self.labels_lost


def _check_reachable(url: str) -> None:
    """A TCP connection to the model service, or the error that ``_post_rows`` would give for it."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "", port), timeout=10):
            pass
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"the model service at {url} is not reachable: {exc}") from None


def _post_rows(url: str, ids: list[str], frame: Any) -> None:
    """Sends rows to a model service (examples/model_service.py's protocol); a refused batch is an error."""
    import json
    import math
    import urllib.error
    import urllib.request

    def plain(value: Any) -> Any:
        value = value.item() if hasattr(value, "item") else value
        return None if isinstance(value, float) and not math.isfinite(value) else value

    columns = {name: [plain(v) for v in frame[name].tolist()] for name in frame.columns}
    request = urllib.request.Request(url.rstrip("/") + "/predict", method="POST",
                                     data=json.dumps({"ids": ids, "columns": columns}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()
    except urllib.error.HTTPError as exc:
        raise ConnectionError(f"the model service at {url} answered {exc.code}: {exc.read()[:300]!r}") from None
    except OSError as exc:
        raise ConnectionError(f"the model service at {url} is not reachable: {exc}") from None


def _providers(options: ReplayOptions, attributes: int) -> tuple[Any, Any, Any, Any]:
    """Tracer, meter and logger providers, and the acknowledging log exporter behind the logger provider.

    ``attributes``: the most attributes one event carries; the logger's attribute limit is raised to it (the SDK's
    default of 128 would evict the model name and the ids of a wide model's events)."""
    from opentelemetry.sdk._logs import LoggerProvider, LogRecordLimits
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from otel_mlmon._replay_export import AcknowledgingLogExporter

    # Spans and metrics are not counted: their exporters give up within the retry time (at most their 10 s).
    timeout = max(1.0, min(10.0, options.retry_for))
    if options.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        metrics: Any = OTLPMetricExporter(endpoint=options.endpoint, insecure=True, timeout=timeout)
        spans: Any = OTLPSpanExporter(endpoint=options.endpoint, insecure=True, timeout=timeout)
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

        base = options.endpoint.rstrip("/")
        metrics = HttpMetrics(f"{base}/v1/metrics", timeout=timeout)
        spans = HttpSpans(f"{base}/v1/traces", timeout=timeout)
    from opentelemetry.util.re import parse_env_headers

    # Headers (e.g. a processor's bearer token) from the standard variables, as the SDK's exporters take them.
    headers = parse_env_headers(os.environ.get("OTEL_EXPORTER_OTLP_LOGS_HEADERS")
                                or os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", ""), liberal=True)
    logs = AcknowledgingLogExporter(options.endpoint, options.protocol, retry_for_s=options.retry_for,
                                    headers=headers)
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    limits = LogRecordLimits(max_log_record_attributes=max(128, attributes))
    logger_provider = LoggerProvider(log_record_limits=limits)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(logs, max_queue_size=65536))
    meter_provider = MeterProvider([PeriodicExportingMetricReader(metrics, export_interval_millis=5000)])
    return tracer_provider, meter_provider, logger_provider, logs


class _Outputs:
    """A stand-in model: returns the outputs the file holds for the rows it is asked about."""

    def __init__(self) -> None:
        self.current: np.ndarray | None = None
        self.classes_: np.ndarray | None = None

    def predict(self, X: Any) -> np.ndarray:
        assert self.current is not None
        return self.current

    def predict_proba(self, X: Any) -> np.ndarray:
        assert self.current is not None
        return self.current


# --- the file's rows, in the order they are sent -------------------------------------------------------------

def _event_times(values: np.ndarray, path: str, name: str) -> np.ndarray:
    """A timestamp column as int64 ns since the epoch, to the microsecond (``mlmon evaluate``'s precision)."""
    seconds = epoch_seconds(values, path, name)
    bad = ~np.isfinite(seconds) | (seconds < 0) | (seconds >= 9.2e9)
    if bad.any():
        row = int(np.argmax(bad))
        what = "an empty value" if np.isnan(seconds[row]) else f"the value {values[row]!r}"
        raise DataError(f"{path}: timestamp column {name!r} has {what}; replay needs a time on every row, "
                        "between 1970 and 2262")
    return np.round(seconds * 1e6).astype(np.int64) * 1000


def _id_strings(batch: dict[str, np.ndarray], id_column: str | None, first_row: int, width: int) -> list[str]:
    if id_column is None:
        return [f"{i:0{width}d}" for i in range(first_row, first_row + len(next(iter(batch.values()))))]
    ids = [str(v) for v in batch[id_column].tolist()]
    for i, value in enumerate(batch[id_column].tolist()):
        if value is None or (isinstance(value, float) and value != value) or value == "":
            raise DataError(f"id column {id_column!r} has no value in row {first_row + i}: every row needs an id")
    return ids


@dataclass
class _Part:
    """Rows sent together: columns, ids, and the event time of each row (None: the send time)."""

    columns: dict[str, np.ndarray]
    ids: list[str]
    times: np.ndarray | None
    first: int  # position of the first row in the sent order


def _in_order(data: Any, columns: Any) -> Iterator[_Part]:
    """The file's rows in the order they are sent: file order, or (timestamp, id) order when the file's
    timestamps are not sorted (then the whole file is read into memory)."""
    id_column, time_column = columns.id_column, columns.timestamp_column
    width = len(str(max(data.num_rows() - 1, 0))) if id_column is None else 0
    if time_column is not None:
        previous = None
        sorted_ = True
        for batch in data.batches([time_column]):
            times = _event_times(batch[time_column], data.path, time_column)
            if times.size and ((previous is not None and times[0] < previous) or bool((np.diff(times) < 0).any())):
                sorted_ = False
                break
            if times.size:
                previous = times[-1]
        if not sorted_:
            yield _sorted(data, columns, width)
            return
    first = 0
    for batch in data.batches():
        n = len(next(iter(batch.values())))
        ids = _id_strings(batch, id_column, first, width)
        event_times = _event_times(batch[time_column], data.path, time_column) if time_column else None
        yield _Part(batch, ids, event_times, first)
        first += n


def _sorted(data: Any, columns: Any, width: int) -> _Part:
    batches = list(data.batches())
    whole = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]} if batches else {}
    ids: list[str] = []
    for batch in batches:
        ids += _id_strings(batch, columns.id_column, len(ids), width)
    times = _event_times(whole[columns.timestamp_column], data.path, columns.timestamp_column)
    order = np.array(sorted(range(len(ids)), key=lambda i: (int(times[i]), ids[i])), dtype=np.int64)
    return _Part({name: values[order] for name, values in whole.items()}, [ids[i] for i in order.tolist()],
                 times[order], 0)


def _calls(part: _Part, batch_rows: int, own_times: bool = True) -> list[tuple[int, int]]:
    """[begin, end) of each call: rows of one timestamp; without times, rows whose ids increase (when replay gives
    the times: ``own_times``; a model service gives its own, and takes calls of ``batch_rows``)."""
    n = len(part.ids)
    if n == 0:
        return []
    if part.times is not None:
        breaks = np.flatnonzero(part.times[1:] != part.times[:-1]) + 1
    elif not own_times:
        breaks = np.zeros(0, dtype=np.int64)
    else:
        ids = part.ids
        breaks = np.array([i for i in range(1, n) if ids[i] <= ids[i - 1]], dtype=np.int64)
    out = []
    for begin, end in zip([0, *breaks.tolist()], [*breaks.tolist(), n]):
        out += [(b, min(b + batch_rows, end)) for b in range(begin, end, batch_rows)]
    return out


# --- replay --------------------------------------------------------------------------------------------------

def replay(path: str, columns: Any, model_name: str, version: str, options: ReplayOptions,
           labels_path: str | None = None, progress: Callable[[int], None] | None = None,
           model_file: str | None = None) -> ReplayResult:
    """Send a file's predictions, then its labels; returns what was sent and what the endpoint acknowledged.

    With ``model_file`` (a pickled model, trusted input) the model itself predicts on the file's features
    (``predict_proba`` when it has it, else ``predict``) at the file's event times; with ``options.service`` the
    rows go to a model service that is instrumented itself (only the labels are sent from here; the service's
    rows count as acknowledged when it answered, and carry the service's times); otherwise the file's outputs
    are replayed.

    Raises:
        DataError: a missing column, a row without an id or time, a prediction column with an empty value.
        ValueError: options that do not go together (``labels_path`` without an id column).
        ConnectionError: the model service is down or refuses rows.
    """
    from otel_mlmon.batch.runner import _check_columns, _classes, _infer_task

    data = DataFile(path)
    types = _check_columns(data, columns, need_target=False)
    if labels_path and not columns.id_column:
        raise ValueError("--labels needs --id-column: the labels file's ids join the predictions")
    grouped = [flag for flag, name in (("--segment-by", columns.segment_by),
                                       ("--sensitive-column", columns.sensitive_column)) if name]
    if options.max_segments is not None and not columns.segment_by:
        raise ValueError("--max-segments bounds the segments of --segment-by: give --segment-by too")
    if grouped and options.service is not None:
        raise ValueError(f"{' and '.join(grouped)} apply to the predictions replay records itself; with --service "
                         "the model service's own settings (OTEL_PYTHON_MLMON_SEGMENT_COLUMN, "
                         "OTEL_PYTHON_MLMON_SENSITIVE_COLUMN) decide")
    task = _infer_task(columns, types)
    classes = _classes(data, columns, task)
    features = columns.features if columns.features is not None else [
        n for n in types if n not in columns.not_features()]
    real: Any = None
    if model_file is not None:
        import pickle

        try:
            with open(model_file, "rb") as handle:
                real = pickle.load(handle)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
            raise DataError(f"{model_file}: cannot load a pickled model: {exc}") from None
    if options.service is not None:
        _check_reachable(options.service)  # before any exporter exists: a wrong URL fails at once
    per_row = len(features) + max(len(classes), 1) + 4  # features, scores, label, id: attributes of one event
    tracer_provider, meter_provider, logger_provider, exporter = _providers(options, per_row + 8)
    result = ReplayResult()
    labels_sent = False
    try:
        labels_sent = _send(data, types, columns, features, task, classes, model_name, version, options,
                            labels_path, progress, real, (tracer_provider, meter_provider, logger_provider),
                            per_row, result)
    finally:
        from otel_mlmon.instrumentation._api import telemetry_for

        # Flush what was recorded and retire this telemetry, also when sending failed half-way: nothing is
        # left for an exit-time flush, and no exporter keeps retrying after we return. The log provider's flush
        # returns once every batch was answered or given up: the counts below are final.
        telemetry_for(tracer_provider, meter_provider, logger_provider).close()
        if labels_sent:
            telemetry_for(logger_provider=logger_provider).close()
        logger_provider.force_flush()
        for provider in (logger_provider, meter_provider, tracer_provider):
            provider.shutdown()
    from otel_mlmon import semconv

    delivery = exporter.delivery
    if options.service is None:
        result.rows_acknowledged = delivery.acknowledged[semconv.EVENT_PREDICTIONS]
    result.labels_acknowledged = delivery.acknowledged[semconv.EVENT_LABELS]
    result.errors = list(delivery.errors)
    return result


def _send(data: Any, types: dict[str, Any], columns: Any, features: list[str], task: str, classes: list[Any],
          model_name: str, version: str, options: ReplayOptions, labels_path: str | None,
          progress: Callable[[int], None] | None, real: Any, providers: tuple[Any, Any, Any], per_row: int,
          result: ReplayResult) -> bool:
    """Sends the rows, then the labels (counted in ``result`` as they go); True once labels were recorded."""
    import pandas as pd

    import otel_mlmon
    from otel_mlmon.batch.runner import load_labels
    from otel_mlmon.instrumentation import force_flush
    from otel_mlmon.instrumentation._overrides import recorded_as
    from otel_mlmon.sketch import category_key

    tracer_provider, meter_provider, logger_provider = providers
    stand_in = _Outputs()
    classification = task == "classification"
    order = sorted(columns.score_columns) if columns.score_columns else classes
    if classification and (columns.score_column or columns.score_columns):
        stand_in.classes_ = np.array(order, dtype=object)
    prediction = columns.prediction_column
    integer_labels = bool(prediction and classification and is_numeric_type(types[prediction])
                          and str(types[prediction]).startswith(("int", "uint")))
    event_rows = int(min(4096, max(16, MAX_EVENT_BYTES // (BYTES_PER_VALUE * per_row))))
    settings = {env.OTEL_PYTHON_MLMON_CAPTURE_FEATURES: "true",  # exact row windows in the processor
                env.OTEL_PYTHON_MLMON_FEATURE_SKETCHES: "true" if options.feature_sketches else "false",
                env.OTEL_PYTHON_MLMON_EVENT_MAX_ROWS: str(event_rows)}  # events of a wide model stay small
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)  # read when the telemetry is made, just below
    try:
        model = otel_mlmon.instrument_model(real if real is not None else stand_in, name=model_name,
                                            version=version, task=task if real is None else None,
                                            feature_names=features, tracer_provider=tracer_provider,
                                            meter_provider=meter_provider, logger_provider=logger_provider,
                                            segment_by=columns.segment_by, max_segments=options.max_segments,
                                            sensitive_column=columns.sensitive_column)
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    grouping = [name for name in (columns.segment_by, columns.sensitive_column) if name]
    started = time.monotonic()
    send_ns = time.time_ns()
    truth: dict[str, Any] = {}
    for part in _in_order(data, columns):
        for begin, end in _calls(part, options.batch_rows, own_times=options.service is None):
            rows = {k: v[begin:end] for k, v in part.columns.items()}
            ids = part.ids[begin:end]
            frame = pd.DataFrame({name: rows[name] for name in features})
            if options.service is not None:
                _post_rows(options.service, ids, frame)
                result.rows_acknowledged += len(ids)
            else:
                at = int(part.times[begin]) if part.times is not None else send_ns + part.first + begin
                labels = None
                if real is None and prediction and classification:
                    labels = _labels(rows[prediction], integer_labels, data.path, prediction, part.first + begin)
                given = {name: rows[name].tolist() for name in grouping} if grouping else None
                with otel_mlmon.prediction_ids(ids=ids), recorded_as(time_unix_nano=at, labels=labels,
                                                                     columns=given):
                    if real is not None:
                        (model.predict_proba if hasattr(model, "predict_proba") else model.predict)(frame)
                    elif columns.score_columns:
                        stand_in.current = np.column_stack([rows[columns.score_columns[c]] for c in order])
                        model.predict_proba(frame)
                    elif columns.score_column and classification:
                        score = rows[columns.score_column]
                        stand_in.current = np.column_stack([1 - score, score])
                        model.predict_proba(frame)
                    else:
                        if prediction is None:
                            raise DataError("replay needs the model's outputs: --prediction-column, "
                                            "--score-column or --score-columns (or --model-file)")
                        stand_in.current = rows[prediction]
                        model.predict(frame)
            if columns.target_column and columns.target_column in rows:
                for pid, value in zip(ids, rows[columns.target_column].tolist()):
                    if value is not None and category_key(value) is not None:
                        truth[pid] = value
            result.rows += len(ids)
            if progress is not None:
                progress(len(ids))
            if options.rate:
                ahead = result.rows / options.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    force_flush()
    if labels_path:
        truth = load_labels(labels_path, columns)
    chosen = list(truth.items())
    rng = random.Random(options.seed)
    if options.label_fraction < 1:
        chosen = rng.sample(chosen, round(len(chosen) * options.label_fraction))
    if options.label_shuffle:
        rng.shuffle(chosen)
    time.sleep(options.label_delay)
    for begin in range(0, len(chosen), 1000):
        part_labels = chosen[begin: begin + 1000]
        otel_mlmon.record_labels(model_name, ids=[k for k, _ in part_labels],
                                 labels=[v.item() if hasattr(v, "item") else v for _, v in part_labels],
                                 version=version, logger_provider=logger_provider)
        result.labels += len(part_labels)
    return bool(chosen)


def _labels(values: np.ndarray, integers: bool, path: str, name: str, first_row: int) -> list[Any]:
    """A prediction column's values as the predicted labels of one call (ints stay ints)."""
    from otel_mlmon.sketch import category_key

    items = values.tolist()
    for i, value in enumerate(items):
        if category_key(value) is None:
            raise DataError(f"{path}: prediction column {name!r} has no value in a row (sent row {first_row + i});"
                            " every replayed row needs its predicted label")
    return [int(v) for v in items] if integers else items
