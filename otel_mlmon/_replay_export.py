"""``mlmon replay``'s log exporter: it counts the rows the endpoint acknowledged, not the rows it sent.

The SDK's OTLP log exporters report only success or failure of a whole batch (and drop it after ~10 s of
retries), so a replay could not tell how many of its rows arrived. This exporter sends the same messages (the SDK's
own encoder, ``encode_logs``) over OTLP/HTTP or gRPC and reads each answer per the OTLP specification:

- HTTP 200 / gRPC OK: the records are acknowledged, less the ``partial_success.rejected_log_records``;
- HTTP 429, 502, 503, 504, a lost connection, gRPC UNAVAILABLE (and the other retryable codes): retried, honouring
  ``Retry-After`` (or gRPC ``RetryInfo``), until the endpoint has been failing for ``retry_for_s`` seconds;
- anything else (400, 401, 413, 415, 500, INVALID_ARGUMENT, …): not retried, the records count as rejected.

Rows are counted per event from its ``ml.prediction.id`` array, separately for ``ml.predictions`` and
``ml.labels``. A partial success names how many records were rejected, not which: when the records of the request
differ in rows, its halves are sent again until each answer is exact (the processor takes a prediction id or a
label it already holds as a duplicate, so nothing counts twice there). A request over ``max_request_bytes`` is
sent in halves as well.
"""

from __future__ import annotations

import email.utils
import gzip
import http.client
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

from otel_mlmon import semconv

_logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 3 << 20  # under the 4 MiB gRPC default message cap (and the processor's 16 MiB HTTP cap)
RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
# OTLP/gRPC: retryable status codes (RESOURCE_EXHAUSTED only with RetryInfo, checked apart).
_RETRYABLE_GRPC = ("CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS")
EVENTS = (semconv.EVENT_PREDICTIONS, semconv.EVENT_LABELS)


@dataclass
class Delivery:
    """Rows per event name (``ml.predictions``, ``ml.labels``): handed to the exporter, acknowledged, lost."""

    exported: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENTS, 0))
    acknowledged: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENTS, 0))
    errors: list[str] = field(default_factory=list)  # the first few reasons, for the user

    def note(self, message: str) -> None:
        if len(self.errors) < 5 and message not in self.errors:
            self.errors.append(message)


@dataclass(frozen=True)
class _Answer:
    """One request's outcome: records rejected (all of them when ``ok`` is False), retry hint, reason."""

    ok: bool
    rejected: int = 0
    retry: bool = False
    retry_after_s: float | None = None
    message: str = ""


def _rows(record: Any) -> tuple[str | None, int]:
    log_record = record.log_record
    name = getattr(log_record, "event_name", None)
    if name not in EVENTS:
        return None, 0
    ids = (log_record.attributes or {}).get(semconv.ML_PREDICTION_ID)
    return name, len(ids) if ids is not None and not isinstance(ids, str) else 0


class AcknowledgingLogExporter(LogRecordExporter):
    """Sends log batches over OTLP and counts the rows the endpoint acknowledged (see the module docstring).

    Args:
        endpoint: the OTLP/HTTP base URL (``http://host:4318``) or, with ``protocol="grpc"``, ``host:port``.
        protocol: ``http/protobuf`` or ``grpc``.
        retry_for_s: how long a failing endpoint is retried before the records are given up (counted lost).
        timeout_s: one attempt's timeout.
        headers: extra request headers (e.g. ``Authorization``).
    """

    def __init__(self, endpoint: str, protocol: str = "http/protobuf", retry_for_s: float = 60.0,
                 timeout_s: float = 10.0, headers: Mapping[str, str] | None = None,
                 max_request_bytes: int = MAX_REQUEST_BYTES) -> None:
        if protocol not in ("http/protobuf", "grpc"):
            raise ValueError(f"protocol must be http/protobuf or grpc, got {protocol!r}")
        if retry_for_s < 0:
            raise ValueError(f"retry_for_s must be >= 0, got {retry_for_s}")
        self.endpoint = endpoint
        self.protocol = protocol
        self.retry_for_s = retry_for_s
        self.timeout_s = timeout_s
        self.headers = dict(headers or {})
        self.max_request_bytes = max_request_bytes
        self.delivery = Delivery()
        self._lock = threading.Lock()
        self._failing_since: float | None = None  # monotonic time of the first failure of the current outage
        self._shutdown = False
        self._channel: Any = None
        self._stub: Any = None
        if protocol == "http/protobuf":
            self._url = endpoint.rstrip("/") + "/v1/logs"

    # --- LogRecordExporter ---------------------------------------------------------------------------------
    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        rows = [_rows(record) for record in batch]
        with self._lock:
            for name, count in rows:
                if name is not None:
                    self.delivery.exported[name] += count
        return LogRecordExportResult.SUCCESS if self._deliver(list(batch), rows) else LogRecordExportResult.FAILURE

    def _deliver(self, records: list[Any], rows: list[tuple[str | None, int]]) -> bool:
        """Send records (halves of them when the request would be too large, or when a partial success does not
        say which records of different sizes it rejected); True when all were acknowledged."""
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

        body = encode_logs(records).SerializeToString()
        if len(body) > self.max_request_bytes and len(records) > 1:
            return self._halves(records, rows)
        answer = self._send_with_retries(body)
        if answer.ok and 0 < answer.rejected < len(records) and len({count for _, count in rows}) > 1:
            # Which records were rejected is not said and their rows differ: ask again in halves (the processor
            # takes a prediction id or a label it already has as a duplicate, so nothing is counted twice).
            return self._halves(records, rows)
        with self._lock:
            self._account(rows, answer)
        return answer.ok and not answer.rejected

    def _halves(self, records: list[Any], rows: list[tuple[str | None, int]]) -> bool:
        middle = len(records) // 2
        first = self._deliver(records[:middle], rows[:middle])
        return self._deliver(records[middle:], rows[middle:]) and first

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self._shutdown = True
        if self._channel is not None:
            self._channel.close()

    # --- counting ------------------------------------------------------------------------------------------
    def _account(self, rows: list[tuple[str | None, int]], answer: _Answer) -> None:
        if not answer.ok:
            if answer.message:
                self.delivery.note(answer.message)
            return
        kept = list(rows)
        if answer.rejected:
            self.delivery.note(answer.message or f"the endpoint rejected {answer.rejected} of {len(rows)} records")
            if answer.rejected >= len(rows):
                return
            # Records of equal rows (else _deliver asked again in halves): any `rejected` of them were lost.
            kept = rows[answer.rejected:]
        for name, count in kept:
            if name is not None:
                self.delivery.acknowledged[name] += count

    # --- sending -------------------------------------------------------------------------------------------
    def _send_with_retries(self, body: bytes) -> _Answer:
        delay = 0.1
        while True:
            try:
                answer = self._send_http(body) if self.protocol == "http/protobuf" else self._send_grpc(body)
            except Exception as exc:  # an unexpected client failure: not retried, the records are lost
                answer = _Answer(ok=False, message=f"cannot send to {self.endpoint}: {exc!r}")
            now = time.monotonic()
            if not answer.retry:
                if answer.ok:
                    self._failing_since = None
                return answer
            if self._failing_since is None:
                self._failing_since = now
            left = self.retry_for_s - (now - self._failing_since)
            if left <= 0 or self._shutdown:
                return _Answer(ok=False, message=f"{answer.message} (gave up after retrying for "
                                                 f"{self.retry_for_s:g} s)")
            wait = answer.retry_after_s if answer.retry_after_s is not None else delay
            time.sleep(max(0.0, min(wait, left)))
            delay = min(delay * 2, 5.0)

    def _send_http(self, body: bytes) -> _Answer:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

        request = urllib.request.Request(self._url, data=body, method="POST",
                                         headers={"Content-Type": "application/x-protobuf", **self.headers})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                payload = answer.read()
                status = answer.status
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            message = f"{self.endpoint} answered {exc.code}: {_status_message(payload, exc.headers)}"
            if exc.code in RETRYABLE_HTTP:
                return _Answer(ok=False, retry=True, retry_after_s=_retry_after(exc.headers.get("Retry-After")),
                               message=message)
            return _Answer(ok=False, message=message)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return _Answer(ok=False, retry=True, message=f"{self.endpoint} is not reachable: {reason}")
        if status != 200:
            return _Answer(ok=False, message=f"{self.endpoint} answered {status}")
        response = ExportLogsServiceResponse()
        if payload:
            try:
                response.ParseFromString(payload)
            except Exception:  # a 200 with a body we cannot read: the records were taken
                return _Answer(ok=True)
        partial = response.partial_success
        return _Answer(ok=True, rejected=int(partial.rejected_log_records), message=partial.error_message)

    def _send_grpc(self, body: bytes) -> _Answer:
        import grpc
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceRequest,
            ExportLogsServiceResponse,
        )
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

        if self._stub is None:
            self._channel = grpc.insecure_channel(self.endpoint)
            self._stub = LogsServiceStub(self._channel)
        metadata = [(key.lower(), value) for key, value in self.headers.items()]
        try:
            response: ExportLogsServiceResponse = self._stub.Export(
                ExportLogsServiceRequest.FromString(body), timeout=self.timeout_s, metadata=metadata or None)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            name = code.name if code is not None else "UNKNOWN"
            message = f"{self.endpoint} answered {name}: {exc.details() if hasattr(exc, 'details') else exc}"
            retry_after = _grpc_retry_delay(exc)
            if name in _RETRYABLE_GRPC or (name == "RESOURCE_EXHAUSTED" and retry_after is not None):
                return _Answer(ok=False, retry=True, retry_after_s=retry_after, message=message)
            return _Answer(ok=False, message=message)
        partial = response.partial_success
        return _Answer(ok=True, rejected=int(partial.rejected_log_records), message=partial.error_message)


def _retry_after(value: str | None) -> float | None:
    """``Retry-After``: delay seconds or an HTTP date (RFC 9110 §10.2.3); None when absent or malformed."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_message(payload: bytes, headers: Any) -> str:
    """The message of a ``google.rpc.Status`` body (protobuf or JSON), else the body's start as text."""
    if headers is not None and headers.get("Content-Encoding") == "gzip":
        try:
            payload = gzip.decompress(payload)
        except OSError:
            pass
    try:
        from google.rpc import status_pb2

        status = status_pb2.Status.FromString(payload)
        if status.message:
            return str(status.message)
    except Exception:
        pass
    return payload[:300].decode("utf-8", "replace").strip() or "(no body)"


def _grpc_retry_delay(error: Any) -> float | None:
    """The ``RetryInfo`` delay in a gRPC error's status details, if any."""
    try:
        from google.rpc import error_details_pb2, status_pb2

        for key, value in error.trailing_metadata() or ():
            if key == "grpc-status-details-bin":
                status = status_pb2.Status.FromString(value)
                for detail in status.details:
                    if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                        info = error_details_pb2.RetryInfo()
                        detail.Unpack(info)
                        return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    except Exception:
        return None
    return None
