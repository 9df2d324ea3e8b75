"""The OTLP/gRPC receiver: the logs and metrics services of opentelemetry-proto (traces accepted, ignored).

Messages over ``max_message`` bytes are refused by gRPC itself (RESOURCE_EXHAUSTED); backpressure answers
UNAVAILABLE (retryable); unusable records are counted in the response's partial success. A call returns only after
the sink has durably recorded its data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from otel_mlmon.processor.decode import Decoded, logs_records, metrics_records
from otel_mlmon.processor.receiver import Sink
from otel_mlmon.processor.store import Backpressure

DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024


def _export(context: Any, decoded: Decoded, accept: Callable[[Decoded, int], None], clock: Callable[[], int],
            response: Any, rejected_field: str) -> Any:
    """Record the request (UNAVAILABLE under backpressure) and answer with its partial-success counts."""
    try:
        accept(decoded, clock())
    except Backpressure as exc:
        context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    if decoded.rejected_count:
        setattr(response.partial_success, rejected_field, decoded.rejected_count)
        response.partial_success.error_message = decoded.error_message()
    return response


class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, sink: Sink, clock: Callable[[], int]) -> None:
        self.sink, self.clock = sink, clock

    def Export(self, request: Any, context: Any) -> Any:
        return _export(context, logs_records(request), self.sink.accept_logs, self.clock,
                       logs_service_pb2.ExportLogsServiceResponse(), "rejected_log_records")


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, sink: Sink, clock: Callable[[], int]) -> None:
        self.sink, self.clock = sink, clock

    def Export(self, request: Any, context: Any) -> Any:
        return _export(context, metrics_records(request), self.sink.accept_metrics, self.clock,
                       metrics_service_pb2.ExportMetricsServiceResponse(), "rejected_data_points")


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request: Any, context: Any) -> Any:
        return trace_service_pb2.ExportTraceServiceResponse()


def start(sink: Sink, endpoint: str, max_message: int = DEFAULT_MAX_MESSAGE, workers: int = 4,
          clock: Callable[[], int] = time.time_ns, *, credentials: grpc.ServerCredentials | None = None,
          interceptors: Sequence[grpc.ServerInterceptor] = ()) -> tuple[grpc.Server, int]:
    """A started gRPC server on ``endpoint`` (``host:port``; port 0 picks one) and its port; over TLS with
    ``credentials``, each call passing ``interceptors`` first (the bearer token check: security.py)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), interceptors=list(interceptors),
                         options=[("grpc.max_receive_message_length", max_message)])
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(sink, clock), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(sink, clock), server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(), server)
    port = server.add_secure_port(endpoint, credentials) if credentials is not None else \
        server.add_insecure_port(endpoint)
    if port == 0:
        raise ValueError(f"cannot listen for OTLP/gRPC on {endpoint!r}")
    server.start()
    return server, port
