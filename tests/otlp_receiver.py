"""A minimal, real OTLP/HTTP receiver for tests: decodes protobuf (optionally gzip) requests on loopback.

It speaks the wire protocol exactly as a Collector would receive it (``opentelemetry-proto`` messages), so tests
see what the exporters really sent. Not a mock of our code: our code never talks to it except over HTTP.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

_MESSAGES = {"/v1/traces": ExportTraceServiceRequest, "/v1/metrics": ExportMetricsServiceRequest,
             "/v1/logs": ExportLogsServiceRequest}


class OtlpReceiver:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: dict[str, list[Any]] = {path: [] for path in _MESSAGES}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                message_type = _MESSAGES.get(self.path)
                if message_type is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                message = message_type()
                message.ParseFromString(body)
                if receiver.status == 200:
                    with receiver._lock:
                        receiver.requests[self.path].append(message)
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- reading what arrived ------------------------------------------------------------------------------
    def spans(self) -> list[Any]:
        with self._lock:
            return [span for request in self.requests["/v1/traces"] for rs in request.resource_spans
                    for ss in rs.scope_spans for span in ss.spans]

    def metrics(self, name: str | None = None) -> list[Any]:
        with self._lock:
            found = [metric for request in self.requests["/v1/metrics"] for rm in request.resource_metrics
                     for sm in rm.scope_metrics for metric in sm.metrics]
        return [m for m in found if name is None or m.name == name]

    def logs(self, event_name: str | None = None) -> list[Any]:
        with self._lock:
            found = [record for request in self.requests["/v1/logs"] for rl in request.resource_logs
                     for sl in rl.scope_logs for record in sl.log_records]
        return [r for r in found if event_name is None or r.event_name == event_name]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.05)
        return condition()


def any_value(value: AnyValue) -> Any:
    """A protobuf AnyValue as a Python value (arrays as lists)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return None if kind is None else getattr(value, kind)


def attributes(item: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in item.attributes}
