"""Fixtures of the integration tests with model platforms: a real otel-mlmon processor on loopback (labels sent to
it with ``record_labels``), and a recording tee in front of it for applications in other processes."""

from __future__ import annotations

import asyncio
import gzip
import importlib
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import eventually, free_port

# `make test` runs this folder in scripts/integrations-venv.sh's venv with MLMON_REQUIRE_INTEGRATIONS=1: there a
# missing MLflow or MLServer is a failure, not a skip (elsewhere the tests skip when their extra is not installed).
if os.environ.get("MLMON_REQUIRE_INTEGRATIONS") == "1":
    for _package in ("mlflow", "mlserver", "mlserver_sklearn"):
        importlib.import_module(_package)


@dataclass
class RunningProcessor:
    processor: Any  # otel_mlmon.processor.service.Processor
    url: str  # OTLP/HTTP base URL, e.g. http://127.0.0.1:4318

    def send_labels(self, model: str, version: str, ids: list[str], labels: list[Any]) -> None:
        """``otel_mlmon.record_labels`` over OTLP/HTTP to this processor."""
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

        import otel_mlmon

        provider = LoggerProvider(shutdown_on_exit=False)
        provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(f"{self.url}/v1/logs")))
        try:
            otel_mlmon.record_labels(model, ids=ids, labels=labels, version=version, logger_provider=provider)
        finally:
            provider.shutdown()

    def joined(self, model: str, version: str) -> dict[str, Any]:
        """Prediction id -> the label joined to it, for the stored predictions of ``model``/``version``."""
        return {row.id: row.truth for row in self.processor.store.rows(model, version)}


@pytest.fixture
def processor(tmp_path: Path) -> Iterator[RunningProcessor]:
    from otel_mlmon.processor.server import serve
    from otel_mlmon.processor.service import Processor
    from otel_mlmon.processor.store import Store

    service = Processor(Store(str(tmp_path / "processor.db")), bootstrap_windows=0)
    port = free_port()
    loop, stop = asyncio.new_event_loop(), asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(service, "127.0.0.1", port, 0.1, stop),),
                              daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    eventually(lambda: urllib.request.urlopen(f"{url}/healthz", timeout=1).read(), 30, "processor /healthz",
               interval_s=0.05)
    yield RunningProcessor(service, url)
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


class RecordingTee:
    """An OTLP/HTTP endpoint that decodes and keeps every request, then forwards it unchanged to the processor and
    answers what the processor answered: a test sees exactly what an application in another process sent, and
    the processor gets it too (it ignores traces)."""

    def __init__(self, upstream: str) -> None:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        messages = {"/v1/traces": ExportTraceServiceRequest, "/v1/metrics": ExportMetricsServiceRequest,
                    "/v1/logs": ExportLogsServiceRequest}
        self.requests: dict[str, list[Any]] = {path: [] for path in messages}
        lock = threading.Lock()
        tee = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                plain = gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body
                if self.path in messages:
                    message = messages[self.path]()
                    message.ParseFromString(plain)
                    with lock:
                        tee.requests[self.path].append(message)
                forward = urllib.request.Request(upstream + self.path, plain, {
                    "Content-Type": self.headers.get("Content-Type", "application/x-protobuf")})
                try:
                    with urllib.request.urlopen(forward, timeout=30) as answer:
                        status, payload = answer.status, answer.read()
                except urllib.error.HTTPError as refused:
                    status, payload = refused.code, refused.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def spans(self) -> list[Any]:
        return [span for request in list(self.requests["/v1/traces"]) for rs in request.resource_spans
                for ss in rs.scope_spans for span in ss.spans]

    def metric_points(self, name: str) -> list[Any]:
        points = []
        for request in list(self.requests["/v1/metrics"]):
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if metric.name == name:
                            data = getattr(metric, metric.WhichOneof("data"))
                            points.extend(data.data_points)
        return points

    def events(self, name: str) -> list[Any]:
        return [record for request in list(self.requests["/v1/logs"]) for rl in request.resource_logs
                for sl in rl.scope_logs for record in sl.log_records if record.event_name == name]


@pytest.fixture
def tee(processor: RunningProcessor) -> Iterator[RecordingTee]:
    made = RecordingTee(processor.url)
    yield made
    made.close()
