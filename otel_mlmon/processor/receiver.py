"""The OTLP/HTTP receiver: ``POST /v1/logs`` and ``/v1/metrics`` (``/v1/traces`` accepted and ignored).

Per the OTLP specification: protobuf or JSON bodies, gzip or deflate content encoding, the size cap applied to
the *decompressed* body while decompressing (a gzip bomb never inflates past the cap), 400 with a
``google.rpc.Status`` body for bad data, 413 over the cap, 415 for another content type or encoding, 503 with
``Retry-After`` under backpressure, 200 with partial-success counts otherwise. The answer is sent only after the
sink has durably recorded the request.

Decompression, decoding and the sink's ``accept`` (which writes the store) run in a worker thread, never on the
event loop: ``/healthz`` and the other requests are served while a large request is worked on. ``export`` is the
one path from a decoded body to an outcome, shared with the gRPC receiver: the same counters, and an unexpected
exception is logged once per kind and answered 503 / UNAVAILABLE (retryable: the data may well be fine), never
500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from google.protobuf import json_format
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
# Requests decoded and recorded at once (the rest wait in no queue: 503 + Retry-After at once). An overloaded
# processor that let requests queue answered them after 30 s and more (clients gave up and retried, so the queue only
# grew) and took 50 s to stop on SIGTERM; with a cap it sheds load at once and clients back off as OTLP says.
MAX_IN_FLIGHT = 8
BUSY_RETRY_AFTER_S = 1

_logger = logging.getLogger("otel_mlmon.processor")
_lock = threading.Lock()  # counters are shared by the HTTP worker threads and the gRPC threads
_logged: set[tuple[str, str]] = set()


class Sink(Protocol):
    def accept_logs(self, decoded: Decoded, received_ns: int) -> None: ...

    def accept_metrics(self, decoded: Decoded, received_ns: int) -> None: ...


def sink_counters(sink: Any) -> dict[str, int]:
    """The counters a receiver of ``sink`` counts into: the sink's ``receiver_counters`` dict when it has one
    (the Processor's, which ``/healthz`` shows), so that the HTTP and gRPC receivers count together."""
    found = getattr(sink, "receiver_counters", None)
    return found if isinstance(found, dict) else {}


def count(counters: dict[str, int], name: str, n: int = 1) -> None:
    if n:
        with _lock:
            counters[name] = counters.get(name, 0) + n


def _log_once(stage: str, exc: BaseException) -> None:
    kind = (stage, type(exc).__name__)
    with _lock:
        if kind in _logged:
            return
        _logged.add(kind)
    _logger.error("%s raised %s; answered as unavailable (retryable), counted in rejected_requests_unexpected; "
                  "further %s from it are not logged", stage, type(exc).__name__, type(exc).__name__, exc_info=exc)


@dataclass(frozen=True)
class Outcome:
    """What became of one export request: ``ok`` (with ``decoded``), ``malformed``, ``backpressure`` or
    ``unexpected`` (an exception that is not the data's fault: retryable)."""

    kind: str
    message: str = ""
    decoded: Decoded | None = None


def export(decode: Callable[[], Decoded], accept: Callable[[Decoded, int], None], clock: Callable[[], int],
           counters: dict[str, int]) -> Outcome:
    """Decode a request and hand it to the sink; count the outcome. Never raises (but BaseException)."""
    stage = "decoding a request"
    try:
        decoded = decode()
        stage = "recording a request"
        accept(decoded, clock())
    except DecodeError as exc:
        count(counters, "rejected_requests_malformed")
        return Outcome("malformed", str(exc))
    except Backpressure as exc:
        count(counters, "rejected_requests_backpressure")
        return Outcome("backpressure", str(exc))
    except Exception as exc:  # the service never dies, nor answers 500, on data: log once per kind, retryable
        _log_once(stage, exc)
        count(counters, "rejected_requests_unexpected")
        return Outcome("unexpected", f"{stage} failed ({type(exc).__name__}); retry later")
    count(counters, "accepted_records", decoded.accepted)
    count(counters, "rejected_records", decoded.rejected_count)
    count(counters, "rejected_rows", sum(decoded.rejected_rows.values()))
    return Outcome("ok", decoded=decoded)


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
    try:
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
    except zlib.error as exc:
        raise DecodeError(f"cannot decompress the {encoding} body: {exc}") from None
    if not decompressor.eof:
        raise DecodeError(f"truncated {encoding} body")
    return bytes(out)


def _status(code: int, message: str, content_type: str) -> tuple[bytes, str]:
    if content_type == JSON:
        return json.dumps({"code": code, "message": message}).encode(), JSON
    return status_pb2.Status(code=code, message=message).SerializeToString(), PROTOBUF


class Receiver:
    """The aiohttp handlers; ``counters`` counts requests and records by outcome.

    Args:
        sink: where decoded requests go (the Processor).
        max_body: the cap on a body, compressed and decompressed.
        clock: the receive time given to the sink.
        counters: the dict to count into; by default the sink's ``receiver_counters`` (see ``sink_counters``).
        executor: the threads that decode and record requests; by default the event loop's default executor.
        max_in_flight: requests read, decoded and recorded at once; one more is answered 503 + Retry-After
            (``rejected_requests_busy``) without reading its body.
    """

    def __init__(self, sink: Sink, max_body: int = DEFAULT_MAX_BODY, clock: Callable[[], int] = time.time_ns,
                 counters: dict[str, int] | None = None, executor: Executor | None = None,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self._in_flight = 0  # changed on the event loop only
        self.sink = sink
        self.max_body = max_body
        self.clock = clock
        self.counters: dict[str, int] = counters if counters is not None else sink_counters(sink)
        self.executor = executor

    def _count(self, name: str, n: int = 1) -> None:
        count(self.counters, name, n)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/logs", self.logs), web.post("/v1/metrics", self.metrics),
                web.post("/v1/traces", self.traces)]

    def _refuse(self, counter: str, status: int, code: int, message: str, content_type: str,
                headers: dict[str, str] | None = None) -> web.Response:
        self._count(counter)
        body, kind = _status(code, message, content_type)
        return web.Response(status=status, body=body, content_type=kind, headers=headers)

    async def _body(self, request: web.Request) -> tuple[bytes, str, str] | web.Response:
        """The raw (still compressed) body, its content type and encoding, or the refusal."""
        content_type = request.content_type
        if content_type not in (PROTOBUF, JSON):
            self._count("rejected_requests_content_type")
            return web.Response(status=415, text=f"content type {content_type!r}: use {PROTOBUF} or {JSON}")
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        if encoding not in ("identity", "gzip", "deflate"):
            self._count("rejected_requests_encoding")
            return web.Response(status=415, text=f"content encoding {encoding!r}: use gzip, deflate or none")
        too_large = f"body over the {self.max_body}-byte cap"
        if request.content_length is not None and request.content_length > self.max_body:
            return self._refuse("rejected_requests_too_large", 413, RESOURCE_EXHAUSTED, too_large, content_type)
        chunks, size = [], 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > self.max_body:  # even compressed, the body is over the cap
                return self._refuse("rejected_requests_too_large", 413, RESOURCE_EXHAUSTED, too_large, content_type)
            chunks.append(chunk)
        return b"".join(chunks), content_type, encoding

    async def _export(self, request: web.Request, decode: Callable[[bytes, str], Decoded],
                      accept: Callable[[Decoded, int], None], response: Any, rejected_field: str) -> web.Response:
        if self._in_flight >= self.max_in_flight:
            return self._refuse("rejected_requests_busy", 503, UNAVAILABLE,
                                f"the processor is busy ({self._in_flight} requests in progress): retry after "
                                f"{BUSY_RETRY_AFTER_S} s", request.content_type,
                                headers={"Retry-After": str(BUSY_RETRY_AFTER_S)})
        self._in_flight += 1
        try:
            return await self._export_now(request, decode, accept, response, rejected_field)
        finally:
            self._in_flight -= 1

    async def _export_now(self, request: web.Request, decode: Callable[[bytes, str], Decoded],
                          accept: Callable[[Decoded, int], None], response: Any, rejected_field: str
                          ) -> web.Response:
        got = await self._body(request)
        if isinstance(got, web.Response):
            return got
        raw, content_type, encoding = got

        def work() -> Outcome | str:
            try:
                body = inflate(raw, encoding, self.max_body)
            except BodyTooLarge as exc:
                return str(exc)
            except DecodeError as exc:
                count(self.counters, "rejected_requests_malformed")
                return Outcome("malformed", str(exc))
            return export(lambda: decode(body, content_type), accept, self.clock, self.counters)

        outcome = await asyncio.get_running_loop().run_in_executor(self.executor, work)
        if isinstance(outcome, str):
            return self._refuse("rejected_requests_too_large", 413, RESOURCE_EXHAUSTED, outcome, content_type)
        if outcome.kind == "malformed":
            payload, kind = _status(INVALID_ARGUMENT, outcome.message, content_type)
            return web.Response(status=400, body=payload, content_type=kind)
        if outcome.kind in ("backpressure", "unexpected"):
            payload, kind = _status(UNAVAILABLE, outcome.message, content_type)
            return web.Response(status=503, body=payload, content_type=kind,
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        decoded = outcome.decoded
        assert decoded is not None
        if decoded.rejected_count:
            partial = response.partial_success
            setattr(partial, rejected_field, decoded.rejected_count)
            partial.error_message = decoded.error_message()
        if content_type == JSON:
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
        _, content_type, _ = got
        if content_type == JSON:
            return web.Response(status=200, text="{}", content_type=JSON)
        return web.Response(status=200, body=ExportTraceServiceResponse().SerializeToString(), content_type=PROTOBUF)
