"""``mlmon replay``: a dataset's predictions and labels sent through the public instrumentation API over OTLP.

The analysis file carries the model's outputs (prediction, scores or value); a stand-in model returns them, so
the telemetry is exactly what an instrumented service sends: ``ml.predictions`` events (with the feature values:
replay captures features, so the processor's windows equal ``mlmon evaluate`` on the same file), sketches,
spans. Labels (``--labels`` or the file's target column) follow after ``--label-delay`` seconds, optionally
shuffled and thinned to ``--label-fraction``. ``--rate`` caps rows per second: the demo's driver and the load
generator.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


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

    def __post_init__(self) -> None:
        if self.protocol not in ("http/protobuf", "grpc"):
            raise ValueError(f"--protocol must be http/protobuf or grpc, got {self.protocol!r}")
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"--label-fraction must be in (0, 1], got {self.label_fraction}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"--rate must be positive, got {self.rate}")
        if self.label_delay < 0 or self.batch_rows < 1:
            raise ValueError("--label-delay must be >= 0 and the batch size positive")
        if self.service is not None and not self.service.startswith(("http://", "https://")):
            raise ValueError(f"--service must be an http(s) URL, got {self.service!r}")


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


def _providers(options: ReplayOptions) -> tuple[Any, Any, Any]:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if options.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        logs: Any = OTLPLogExporter(endpoint=options.endpoint, insecure=True)
        metrics: Any = OTLPMetricExporter(endpoint=options.endpoint, insecure=True)
        spans: Any = OTLPSpanExporter(endpoint=options.endpoint, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

        base = options.endpoint.rstrip("/")
        logs, metrics, spans = HttpLogs(f"{base}/v1/logs"), HttpMetrics(f"{base}/v1/metrics"), HttpSpans(
            f"{base}/v1/traces")
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(logs, max_queue_size=65536))
    meter_provider = MeterProvider([PeriodicExportingMetricReader(metrics, export_interval_millis=5000)])
    return tracer_provider, meter_provider, logger_provider


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


def replay(path: str, columns: Any, model_name: str, version: str, options: ReplayOptions,
           labels_path: str | None = None, progress: Callable[[int], None] | None = None,
           model_file: str | None = None) -> dict[str, int]:
    """Send a file's predictions, then its labels; returns the rows and labels sent.

    With ``model_file`` (a pickled model, trusted input) the model itself predicts on the file's features
    (``predict_proba`` when it has it, else ``predict``); with ``options.service`` the rows go to a model service
    that is instrumented itself (only the labels are sent from here); otherwise the file's outputs are replayed."""
    from otel_mlmon.batch.reader import DataError, DataFile
    from otel_mlmon.batch.runner import _check_columns, _classes, _infer_task

    data = DataFile(path)
    types = _check_columns(data, columns, need_target=False)
    if not columns.id_column:
        raise DataError("replay needs --id-column: labels join predictions by id")
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
    tracer_provider, meter_provider, logger_provider = _providers(options)
    try:
        return _send(data, columns, features, task, classes, model_name, version, options, labels_path, progress,
                     real, (tracer_provider, meter_provider, logger_provider))
    finally:
        from otel_mlmon.instrumentation._api import telemetry_for

        # Flush what was recorded and retire this telemetry, also when sending failed half-way: nothing is
        # left for an exit-time flush, and no exporter keeps retrying after we return.
        telemetry_for(tracer_provider, meter_provider, logger_provider).close()
        for provider in (logger_provider, meter_provider, tracer_provider):
            provider.shutdown()


def _send(data: Any, columns: Any, features: list[str], task: str, classes: list[Any], model_name: str,
          version: str, options: ReplayOptions, labels_path: str | None, progress: Callable[[int], None] | None,
          real: Any, providers: tuple[Any, Any, Any]) -> dict[str, int]:
    import pandas as pd

    import otel_mlmon
    from otel_mlmon.batch.runner import load_labels
    from otel_mlmon.instrumentation import force_flush
    from otel_mlmon.sketch import category_key

    tracer_provider, meter_provider, logger_provider = providers
    stand_in = _Outputs()
    classification = task == "classification"
    order = sorted(columns.score_columns) if columns.score_columns else classes
    if classification and (columns.score_column or columns.score_columns):
        stand_in.classes_ = np.array(order, dtype=object)
    previous = os.environ.get("OTEL_PYTHON_MLMON_CAPTURE_FEATURES")
    os.environ["OTEL_PYTHON_MLMON_CAPTURE_FEATURES"] = "true"  # read when the telemetry is made, just below
    try:
        model = otel_mlmon.instrument_model(real if real is not None else stand_in, name=model_name,
                                            version=version, task=task if real is None else None,
                                            feature_names=features, tracer_provider=tracer_provider,
                                            meter_provider=meter_provider, logger_provider=logger_provider)
    finally:
        if previous is None:
            os.environ.pop("OTEL_PYTHON_MLMON_CAPTURE_FEATURES", None)
        else:
            os.environ["OTEL_PYTHON_MLMON_CAPTURE_FEATURES"] = previous
    sent = 0
    started = time.monotonic()
    truth: dict[str, Any] = {}
    for batch in data.batches():
        n = len(batch[columns.id_column])
        for begin in range(0, n, options.batch_rows):
            part = {k: v[begin: begin + options.batch_rows] for k, v in batch.items()}
            frame = pd.DataFrame({name: part[name] for name in features})
            ids = [str(v) for v in part[columns.id_column].tolist()]
            if options.service is not None:
                _post_rows(options.service, ids, frame)
            else:
                with otel_mlmon.prediction_ids(ids=ids):
                    if real is not None:
                        (model.predict_proba if hasattr(model, "predict_proba") else model.predict)(frame)
                    elif columns.score_columns:
                        stand_in.current = np.column_stack([part[columns.score_columns[c]] for c in order])
                        model.predict_proba(frame)
                    elif columns.score_column and classification:
                        score = part[columns.score_column]
                        stand_in.current = np.column_stack([1 - score, score])
                        model.predict_proba(frame)
                    else:
                        stand_in.current = part[columns.prediction_column]
                        model.predict(frame)
            if columns.target_column and columns.target_column in part:
                for pid, value in zip(ids, part[columns.target_column].tolist()):
                    if value is not None and category_key(value) is not None:
                        truth[pid] = value
            sent += len(ids)
            if progress is not None:
                progress(len(ids))
            if options.rate:
                ahead = sent / options.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    force_flush()
    logger_provider.force_flush()
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
    return {"rows": sent, "labels": len(chosen)}
