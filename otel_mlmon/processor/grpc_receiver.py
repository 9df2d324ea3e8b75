"""The OTLP/gRPC receiver: the logs and metrics services of opentelemetry-proto (traces accepted, ignored).

The services are registered with a pass-through request deserializer: a handler gets the raw message and parses
it itself, so that a malformed message answers INVALID_ARGUMENT (gRPC's own deserializer would answer INTERNAL).
Messages over ``max_message`` bytes are refused by gRPC itself (RESOURCE_EXHAUSTED); backpressure answers
UNAVAILABLE (retryable); unusable records are counted in the response's partial success; an unexpected exception
is logged once per kind and answered UNAVAILABLE. Outcomes are counted in the same counters as the HTTP
receiver's (``receiver.export``). A call returns only after the sink has durably recorded its data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from otel_mlmon.processor.decode import Decoded, DecodeError, logs_records, metrics_records
from otel_mlmon.processor.receiver import Sink, export, sink_counters

DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def _parse(raw: bytes, message_type: type) -> Any:
    message = message_type()
    try:
        message.ParseFromString(raw)
    except (ProtobufDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise DecodeError(f"not a valid OTLP {message_type.__name__}: {exc}") from None
    return message


class Servicer:
    """The Export handlers of the logs, metrics and trace services, over raw (unparsed) request bytes."""

    def __init__(self, sink: Sink, clock: Callable[[], int] = time.time_ns,
                 counters: dict[str, int] | None = None) -> None:
        self.sink, self.clock = sink, clock
        self.counters: dict[str, int] = counters if counters is not None else sink_counters(sink)

    def _export(self, raw: bytes, context: grpc.ServicerContext, request_type: type,
                records: Callable[[Any], Decoded], accept: Callable[[Decoded, int], None], response: Any,
                rejected_field: str) -> Any:
        outcome = export(lambda: records(_parse(raw, request_type)), accept, self.clock, self.counters)
        if outcome.kind == "malformed":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, outcome.message)
        if outcome.kind in ("backpressure", "unexpected"):
            context.abort(grpc.StatusCode.UNAVAILABLE, outcome.message)
        decoded = outcome.decoded
        assert decoded is not None
        if decoded.rejected_count:
            setattr(response.partial_success, rejected_field, decoded.rejected_count)
            response.partial_success.error_message = decoded.error_message()
        return response

    def logs(self, raw: bytes, context: grpc.ServicerContext) -> Any:
        return self._export(raw, context, logs_service_pb2.ExportLogsServiceRequest, logs_records,
                            self.sink.accept_logs, logs_service_pb2.ExportLogsServiceResponse(),
                            "rejected_log_records")

    def metrics(self, raw: bytes, context: grpc.ServicerContext) -> Any:
        return self._export(raw, context, metrics_service_pb2.ExportMetricsServiceRequest, metrics_records,
                            self.sink.accept_metrics, metrics_service_pb2.ExportMetricsServiceResponse(),
                            "rejected_data_points")

    def traces(self, raw: bytes, context: grpc.ServicerContext) -> Any:
        return trace_service_pb2.ExportTraceServiceResponse()

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """One generic handler per service; requests arrive as bytes (no ``request_deserializer``)."""
        def export_handler(method: Callable[[bytes, grpc.ServicerContext], Any]) -> Any:
            return {"Export": grpc.unary_unary_rpc_method_handler(
                method, request_deserializer=None, response_serializer=lambda message: message.SerializeToString())}

        return [grpc.method_handlers_generic_handler(LOGS_SERVICE, export_handler(self.logs)),
                grpc.method_handlers_generic_handler(METRICS_SERVICE, export_handler(self.metrics)),
                grpc.method_handlers_generic_handler(TRACE_SERVICE, export_handler(self.traces))]


def start(sink: Sink, endpoint: str, max_message: int = DEFAULT_MAX_MESSAGE, workers: int = 4,
          clock: Callable[[], int] = time.time_ns, *, credentials: grpc.ServerCredentials | None = None,
          interceptors: Sequence[grpc.ServerInterceptor] = (), counters: dict[str, int] | None = None
          ) -> tuple[grpc.Server, int]:
    """A started gRPC server on ``endpoint`` (``host:port``; port 0 picks one) and its port; over TLS with
    ``credentials``, each call passing ``interceptors`` first (the bearer token check: security.py).

    ``counters``: the dict outcomes are counted into; by default the sink's ``receiver_counters`` (the
    Processor's), shared with the HTTP receiver.
    """
    # grpc.so_reuseport 0: gRPC sets SO_REUSEPORT by default, so a second processor on the same port started
    # without an error and the kernel split the connections between the two (each store got part of the data).
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), interceptors=list(interceptors),
                         options=[("grpc.max_receive_message_length", max_message), ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(tuple(Servicer(sink, clock, counters).handlers()))
    try:
        port = server.add_secure_port(endpoint, credentials) if credentials is not None else \
            server.add_insecure_port(endpoint)
    except RuntimeError:  # grpcio raises where older versions returned 0
        port = 0
    if port == 0:
        raise ValueError(f"cannot listen for OTLP/gRPC on {endpoint!r}: the address is in use or not this "
                         "machine's (set --grpc-endpoint)")
    server.start()
    return server, port
