"""Finishing a call's span and duration, inline or later off the hot path.

A ``SpanRecord`` holds what the call measured (start time, duration, rows, the exception, the parent context).
In deferred mode the records wait in a bounded queue that the flusher drains (at least every 200 ms, at once
when 256 are waiting, and at ``force_flush``); the span is created then with the measured start and end times,
so what reaches the backend is the same as if it had been built inline. When the application produces records
faster than the flusher builds them and ``QUEUE_LIMIT`` are waiting, the caller builds its own span inline: the
queue stays bounded and nothing is dropped, and a sustained overload costs what the bare SDK would.

In both modes a call's ``ml.operation.duration`` is not recorded into the SDK histogram by the call itself: it
waits in a second queue, recorded before every collection of the meter provider (``Telemetry``'s observable
``ml.predictions`` callback runs ahead of the SDK's collection of the synchronous instruments, for every reader:
periodic, pull or in-memory) and by the flusher at least every 200 ms. So every reader still sees every duration,
through views and exemplar filters as usual, while a one-row call no longer pays the SDK's per-measurement
validation and hashing (~8 us a call in benchmark (d)). Each is recorded in the context of the call's span, so an
exemplar points at that span; its timestamp is that of the recording, not of the call.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_mlmon import semconv
from otel_mlmon.instrumentation import _guard
from otel_mlmon.instrumentation._events import emit_rows
from otel_mlmon.instrumentation._recorder import Operation

QUEUE_LIMIT = 2048
WAKE_AT = 256
DURATION_LIMIT = 8192  # durations waiting; beyond it callers record their own (the flusher is behind)
DURATION_WAKE_AT = 1024
DURATION_YIELD_EVERY = 64  # the flusher lets the application's threads run after that many recordings


@dataclass
class SpanRecord:
    operation: Operation
    parent: Any  # the context current at the call
    span: Any  # the live span in ``current`` mode, else None
    start_ns: int
    elapsed: float
    rows: int | None
    error: BaseException | None
    event: dict[str, list[Any]] | None = None  # per-call mode: the event's columns
    event_ns: int | None = None  # the event time when it is not the call's (``recorded_as``)
    extra: Mapping[str, Any] | None = None  # the model's own span attributes (``instrument_model(attributes=)``)
    event_base: Mapping[str, Any] | None = None  # the event's model attributes (default: name and version)


class SpanFinisher:
    """Turns records into spans, durations and per-call events; queues them in deferred mode."""

    def __init__(self, tracer: Any, duration: Any, logger: Any, event_max_rows: int,
                 wake: Callable[[], None]) -> None:
        self.tracer = tracer
        self.duration = duration
        self.logger = logger
        self.event_max_rows = event_max_rows
        self.wake = wake
        self._queue: deque[SpanRecord] = deque()
        self._lock = threading.Lock()
        self._durations: deque[tuple[float, Any, Any, Any]] = deque()  # (seconds, attributes, parent, span)

    def after_fork(self) -> None:
        self._queue = deque()
        self._lock = threading.Lock()
        self._durations = deque()  # the parent records its own

    def pending(self) -> int:
        return len(self._queue)

    def finish(self, record: SpanRecord) -> None:
        if record.span is not None:
            self.complete(record)
            return
        queue = self._queue
        if len(queue) >= QUEUE_LIMIT:
            self.complete(record)  # backpressure: the flusher is behind, build this one here
            return
        queue.append(record)
        if len(queue) == WAKE_AT:
            self.wake()

    def drain(self, yield_every: int = 0) -> None:
        """Build every queued span. ``yield_every``: let other threads run after that many (the flusher passes
        a small number so that a backlog never holds the GIL against the application for long)."""
        with self._lock:  # one drainer at a time keeps the spans in call order
            queue = self._queue
            done = 0
            while queue:
                _guard.call("span", self.complete, queue.popleft())
                done += 1
                if yield_every and done % yield_every == 0:
                    time.sleep(0)

    def record_durations(self, yield_every: int = 0) -> None:
        """Record every waiting duration into the SDK histogram, oldest first."""
        durations = self._durations
        record = self.duration.record
        done = 0
        while True:
            try:
                elapsed, attributes, parent, span = durations.popleft()  # atomic: each is recorded once
            except IndexError:
                return
            try:
                record(elapsed, attributes, trace.set_span_in_context(span, parent))
            except Exception as exc:
                _guard.failure("duration", exc)
            done += 1
            if yield_every and done % yield_every == 0:
                time.sleep(0)

    def complete(self, record: SpanRecord) -> None:
        operation = record.operation
        span = record.span
        if span is None:
            span_attributes = operation.span_attributes
            if record.extra:
                span_attributes = {**record.extra, **span_attributes}
            span = self.tracer.start_span(operation.span_name, context=record.parent, kind=SpanKind.INTERNAL,
                                          attributes=span_attributes, start_time=record.start_ns)
        attributes = operation.metric_attributes
        if record.rows is not None:
            span.set_attribute(semconv.ML_BATCH_SIZE, record.rows)
        if record.error is not None:
            error_type = type(record.error).__qualname__
            span.set_attribute(semconv.ERROR_TYPE, error_type)
            span.record_exception(record.error)
            span.set_status(Status(StatusCode.ERROR, f"{error_type}: {record.error}"))
            attributes = {**attributes, semconv.ERROR_TYPE: error_type}
        span.end(end_time=record.start_ns + int(record.elapsed * 1e9))
        durations = self._durations
        if len(durations) < DURATION_LIMIT:
            durations.append((record.elapsed, attributes, record.parent, span))
            if len(durations) == DURATION_WAKE_AT:
                self.wake()
        else:  # backpressure: nothing collects or the flusher is behind; record this one here
            self.duration.record(record.elapsed, attributes, trace.set_span_in_context(span, record.parent))
        if record.event is not None and record.rows is not None:
            base = record.event_base or {
                semconv.ML_MODEL_NAME: operation.metric_attributes[semconv.ML_MODEL_NAME],
                semconv.ML_MODEL_VERSION: operation.metric_attributes[semconv.ML_MODEL_VERSION]}
            emit_rows(self.logger, semconv.EVENT_PREDICTIONS, base, record.event, record.rows, self.event_max_rows,
                record.start_ns if record.event_ns is None else record.event_ns,
                context=trace.set_span_in_context(span))
