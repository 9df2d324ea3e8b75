"""The OTLP/HTTP receiver: ``POST /v1/logs`` and ``/v1/metrics`` (``/v1/traces`` accepted and ignored).

Per the OTLP specification: protobuf or JSON bodies, gzip or deflate content encoding, the size cap applied to
the *decompressed* body while decompressing (a gzip bomb never inflates past the cap), 400 with a
``google.rpc.Status`` body for bad data, 413 over the cap, 415 for another content type or encoding, 503 with
``Retry-After`` under backpressure, 200 with partial-success counts otherwise. The answer is sent only after the
sink has durably recorded the request.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_mlmon.processor.decode import Decoded, DecodeError, decode_logs, decode_metrics
from otel_mlmon.processor.store import Backpressure

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE = 3, 8, 14
DEFAULT_MAX_BODY = 16 * 1024 * 1024
RETRY_AFTER_S = 5


class Sink(Protocol):
    def accept_logs(self, decoded: Decoded, received_ns: int) -> None: ...

    def accept_metrics(self, decoded: Decoded, received_ns: int) -> None: ...


class BodyTooLarge(Exception):
    pass


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The decompressed body, never more than ``limit`` bytes of it produced (else ``BodyTooLarge``)."""
    if encoding in ("", "identity"):
        if len(body) > limit:
            raise BodyTooLarge(f"body of {len(body)} bytes is over the {limit}-byte cap")
        return body
    decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)
    out = bytearray()
    pending = body
    while pending:
        chunk = decompressor.decompress(pending, limit + 1 - len(out))
        out += chunk
        if len(out) > limit:
            raise BodyTooLarge(f"body inflates past the {limit}-byte cap")
        pending = decompressor.unconsumed_tail
        if not chunk and not pending:
            break
        if decompressor.eof:
            break
    if not decompressor.eof:
        raise DecodeError(f"truncated {encoding} body")
    return bytes(out)


def _status(code: int, message: str, content_type: str) -> tuple[bytes, str]:
    if content_type == JSON:
        return json.dumps({"code": code, "message": message}).encode(), JSON
    return status_pb2.Status(code=code, message=message).SerializeToString(), PROTOBUF


class Receiver:
    """The aiohttp handlers; ``counters`` counts requests and records by outcome."""

    def __init__(self, sink: Sink, max_body: int = DEFAULT_MAX_BODY,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.sink = sink
        self.max_body = max_body
        self.clock = clock
        self.counters: dict[str, int] = {}

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/logs", self.logs), web.post("/v1/metrics", self.metrics),
                web.post("/v1/traces", self.traces)]

    async def _body(self, request: web.Request) -> tuple[bytes, str] | web.Response:
        content_type = request.content_type
        if content_type not in (PROTOBUF, JSON):
            self._count("rejected_requests_content_type")
            return web.Response(status=415, text=f"content type {content_type!r}: use {PROTOBUF} or {JSON}")
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        if encoding not in ("identity", "gzip", "deflate"):
            self._count("rejected_requests_encoding")
            return web.Response(status=415, text=f"content encoding {encoding!r}: use gzip, deflate or none")
        if request.content_length is not None and request.content_length > self.max_body:
            self._count("rejected_requests_too_large")
            body, kind = _status(RESOURCE_EXHAUSTED, f"body over the {self.max_body}-byte cap", content_type)
            return web.Response(status=413, body=body, content_type=kind)
        chunks, size = [], 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > self.max_body:  # even compressed, the body is over the cap
                self._count("rejected_requests_too_large")
                body, kind = _status(RESOURCE_EXHAUSTED, f"body over the {self.max_body}-byte cap", content_type)
                return web.Response(status=413, body=body, content_type=kind)
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            return inflate(raw, encoding, self.max_body), content_type
        except BodyTooLarge as exc:
            self._count("rejected_requests_too_large")
            body, kind = _status(RESOURCE_EXHAUSTED, str(exc), content_type)
            return web.Response(status=413, body=body, content_type=kind)
        except (zlib.error, DecodeError) as exc:
            self._count("rejected_requests_malformed")
            body, kind = _status(INVALID_ARGUMENT, f"cannot decompress the {encoding} body: {exc}", content_type)
            return web.Response(status=400, body=body, content_type=kind)

    async def _export(self, request: web.Request, decode: Callable[[bytes, str], Decoded],
                      accept: Callable[[Decoded, int], None], response: Any, rejected_field: str) -> web.Response:
        got = await self._body(request)
        if isinstance(got, web.Response):
            return got
        body, content_type = got
        try:
            decoded = decode(body, content_type)
        except DecodeError as exc:
            self._count("rejected_requests_malformed")
            payload, kind = _status(INVALID_ARGUMENT, str(exc), content_type)
            return web.Response(status=400, body=payload, content_type=kind)
        try:
            accept(decoded, self.clock())
        except Backpressure as exc:
            self._count("rejected_requests_backpressure")
            payload, kind = _status(UNAVAILABLE, str(exc), content_type)
            return web.Response(status=503, body=payload, content_type=kind,
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        self._count("accepted_records", decoded.accepted)
        self._count("rejected_records", decoded.rejected_count)
        if decoded.rejected_count:
            partial = response.partial_success
            setattr(partial, rejected_field, decoded.rejected_count)
            partial.error_message = decoded.error_message()
        if content_type == JSON:
            from google.protobuf import json_format

            return web.Response(status=200, text=json_format.MessageToJson(response), content_type=JSON)
        return web.Response(status=200, body=response.SerializeToString(), content_type=PROTOBUF)

    async def logs(self, request: web.Request) -> web.Response:
        return await self._export(request, decode_logs, self.sink.accept_logs, ExportLogsServiceResponse(),
                                  "rejected_log_records")

    async def metrics(self, request: web.Request) -> web.Response:
        return await self._export(request, decode_metrics, self.sink.accept_metrics, ExportMetricsServiceResponse(),
                                  "rejected_data_points")

    async def traces(self, request: web.Request) -> web.Response:
        got = await self._body(request)
        if isinstance(got, web.Response):
            return got
        _, content_type = got
        if content_type == JSON:
            return web.Response(status=200, text="{}", content_type=JSON)
        return web.Response(status=200, body=ExportTraceServiceResponse().SerializeToString(), content_type=PROTOBUF)
