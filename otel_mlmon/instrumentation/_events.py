"""``ml.predictions`` and ``ml.labels`` events: the one place that emits OTLP log records.

``opentelemetry._logs`` is still underscore-private; everything that touches it is here. Events carry their rows
as columnar array attributes. In buffered mode rows of several calls of one model share an event, flushed at
``event_max_rows`` rows, every ``event_flush_interval_s`` and at exit, each row keeping its call's time
(``ml.prediction.time``, when the calls' times differ); in per-call mode each call emits its own event inside the
call's span context, its timestamp the call's time.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry._logs import Logger, SeverityNumber
from opentelemetry.context import Context

from otel_mlmon import semconv


def emit(logger: Logger, name: str, attributes: Mapping[str, Any], timestamp_ns: int | None = None,
         context: Context | None = None) -> None:
    """Emit one event: a log record with an EventName and no body."""
    now = time.time_ns()
    logger.emit(timestamp=now if timestamp_ns is None else timestamp_ns, observed_timestamp=now, context=context,
                severity_number=SeverityNumber.INFO, attributes=dict(attributes), event_name=name)


def emit_rows(logger: Logger, name: str, base: Mapping[str, Any], columns: Mapping[str, Sequence[Any]],
              rows: int, max_rows: int, timestamp_ns: int | None = None, context: Context | None = None,
              row_times: Sequence[int] | None = None) -> None:
    """Emit ``rows`` rows of columns as events of at most ``max_rows`` rows each.

    Captured features (``ml.feature.<name>`` columns) go one attribute each while the event has at most
    ``semconv.CAPTURE_PER_KEY_LIMIT`` attributes; a wider event carries them in one ``ml.features`` map attribute
    (name -> array), so that the SDK's attribute count limit (128 by default) never drops any of them. The model
    name and version and the ids are added last: the SDK evicts the oldest attributes first, so whatever limit the
    application set, those that join labels stay.

    ``row_times`` (one event time per row, ns since the epoch; rows of several calls) makes each event's timestamp
    the time of its first row, and gives an event whose rows do not all share that time an
    ``ml.prediction.time`` attribute (the rows' times), just before the model name, version and ids.
    """
    prefix = semconv.ML_FEATURE_PREFIX
    packed = len(base) + len(columns) + (row_times is not None) > semconv.CAPTURE_PER_KEY_LIMIT
    for begin in range(0, rows, max_rows):
        end = min(begin + max_rows, rows)
        attributes: dict[str, Any] = {}
        features: dict[str, list[Any]] = {}
        for key, values in columns.items():
            if packed and key.startswith(prefix):
                features[key[len(prefix):]] = list(values[begin:end])
            elif key != semconv.ML_PREDICTION_ID:
                attributes[key] = list(values[begin:end])
        if features:
            attributes[semconv.ML_FEATURES] = features
        timestamp = timestamp_ns
        if row_times is not None:
            times = list(row_times[begin:end])
            timestamp = times[0]
            if times.count(timestamp) != len(times):
                attributes[semconv.ML_PREDICTION_TIME] = times
        attributes.update(base)
        if semconv.ML_PREDICTION_ID in columns:
            attributes[semconv.ML_PREDICTION_ID] = list(columns[semconv.ML_PREDICTION_ID][begin:end])
        emit(logger, name, attributes, timestamp, context)


@dataclass
class _Pending:
    base: dict[str, Any]
    columns: dict[str, list[Any]]
    time_ns: int | None = None  # the event's timestamp: its first call's time (None: when it was made)
    rows: int = 0
    first_ns: int = field(default_factory=time.time_ns)  # when it was made (for the flush interval)
    calls: list[tuple[int, int]] = field(default_factory=list)  # (rows, time) of each call, in row order

    def row_times(self) -> list[int] | None:
        """The event time of each row, or None when every row has the time of the first call."""
        calls = self.calls
        first = calls[0][1] if calls else None
        if all(t == first for _, t in calls):
            return None
        if self.rows == len(calls):  # single-row calls (the serving case)
            return [t for _, t in calls]
        times: list[int] = []
        for rows, t in calls:
            if rows == 1:
                times.append(t)
            else:
                times += [t] * rows
        return times


READY_LIMIT = 8  # full events waiting for the flusher before the caller emits them itself


class PredictionBuffer:
    """Rows waiting for their ``ml.predictions`` event, per (model, version, time slot, set of columns).

    An event's timestamp is the time of its first call; when its rows come from calls of different times, it also
    carries each row's call time (``ml.prediction.time``), so the receiver orders rows as they were made. A call
    costs one append here, expanded to rows on the flusher thread. Rows share an event only when their calls fall
    in the same interval of the Unix clock (``interval_ns``, the sketch export interval), so an event never spans a
    boundary of the sketch exports. A call's time is the one its sketches were recorded at: its start, or the time
    of an enclosing ``recorded_as`` block.

    An event that fills up (``max_rows``) is handed to the flusher thread (``wake``) rather than emitted by the
    call that filled it: emitting a 4096-row event costs ~2 ms in the SDK (it validates every value), which would
    land on one unlucky prediction. When the flusher is behind and more than ``READY_LIMIT`` full events wait,
    the caller emits them itself: memory stays bounded and nothing is dropped.
    """

    def __init__(self, logger: Logger, max_rows: int, flush_interval_s: float,
                 wake: Callable[[], None] | None = None, interval_ns: int = 60 * 10**9) -> None:
        self.logger = logger
        self.max_rows = max_rows
        self.flush_interval_s = flush_interval_s
        self.wake = wake
        self.interval_ns = interval_ns
        self._lock = threading.Lock()
        self._pending: dict[tuple[Any, ...], _Pending] = {}
        self._ready: deque[_Pending] = deque()

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._pending = {}
        self._ready = deque()

    def add(self, base: Mapping[str, Any], columns: Mapping[str, list[Any]], rows: int,
            time_ns: int | None = None) -> None:
        """Buffer one call's rows. ``time_ns``: the call's time (default: now), which its rows keep."""
        if time_ns is None:
            time_ns = time.time_ns()
        key: tuple[Any, ...] = (base.get(semconv.ML_MODEL_NAME), base.get(semconv.ML_MODEL_VERSION),
                                time_ns // self.interval_ns, *columns)
        if len(base) > 2:  # a model's own attributes: rows share an event only with rows of the same ones
            key += (tuple(base.items()),)
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = _Pending(dict(base), {k: [] for k in columns}, time_ns)
            for k, values in columns.items():
                pending.columns[k].extend(values)
            pending.calls.append((rows, time_ns))  # one append per call; expanded to rows on the flusher
            pending.rows += rows
            if pending.rows < self.max_rows:
                return
            self._ready.append(self._pending.pop(key))
            behind = self.wake is None or len(self._ready) > READY_LIMIT
        if behind:
            self._emit_ready()
        else:
            self.wake()  # type: ignore[misc]

    def flush(self, only_due: bool = False) -> None:
        """Emit full events, then pending rows (only those older than the flush interval when ``only_due``)."""
        self._emit_ready()
        deadline = time.time_ns() - int(self.flush_interval_s * 1e9)
        with self._lock:
            keys = [k for k, p in self._pending.items() if not only_due or p.first_ns <= deadline]
            ready = [self._pending.pop(k) for k in keys]
        for item in ready:
            self._emit(item)

    def _emit_ready(self) -> None:
        ready = self._ready
        while True:
            try:
                item = ready.popleft()  # atomic: the flusher and a caller never emit the same event twice
            except IndexError:
                return
            self._emit(item)

    def _emit(self, item: _Pending) -> None:
        emit_rows(self.logger, semconv.EVENT_PREDICTIONS, item.base, item.columns, item.rows, self.max_rows,
                  item.first_ns if item.time_ns is None else item.time_ns, row_times=item.row_times())
