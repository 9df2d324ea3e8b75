"""The telemetry of one set of providers: its instruments, its model recorders and their sketch export.

All instruments are created here, once, with their units and bucket advisories. The runtime (``_runtime``) keeps
the telemetries and ticks them from its flusher thread: ``tick`` flushes buffered events and exports sketches on
their intervals; ``force_flush()`` does both now.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry._logs import get_logger
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

from otel_mlmon import semconv
from otel_mlmon._version import __version__
from otel_mlmon.instrumentation import _guard
from otel_mlmon.instrumentation._events import PredictionBuffer
from otel_mlmon.instrumentation._export import build_metrics, resolve_exporter
from otel_mlmon.instrumentation._recorder import ColumnSpec, ModelRecorder
from otel_mlmon.instrumentation._rows import row_observer
from otel_mlmon.instrumentation._runtime import EXPORT_TIMEOUT_MILLIS, RUNTIME, ProviderKey
from otel_mlmon.instrumentation._segments import SegmentConfig
from otel_mlmon.instrumentation._settings import Settings
from otel_mlmon.instrumentation._spans import DURATION_YIELD_EVERY, SpanFinisher

EXPORT_GRACE_NS = 1_000_000_000  # an interval is exported this long after its end (at most a tenth of it), so
# that calls still running at its end add their rows first
SPAN_DRAIN_INTERVAL_S = 0.2


class Telemetry:
    """Tracer, instruments, logger, model recorders and sketch export for one set of providers."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None, logger_provider: Any = None,
                 sketch_exporter: MetricExporter | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        explicit = (tracer_provider, meter_provider, logger_provider, sketch_exporter)
        self.key: ProviderKey | None = None if explicit == (None, None, None, None) else explicit
        self.span_current = self.settings.span_mode == "current"
        self.meter_provider = meter_provider
        self.sketch_exporter = sketch_exporter
        self.tracer = trace.get_tracer(semconv.INSTRUMENTATION_SCOPE, __version__, tracer_provider)
        meter = metrics.get_meter(semconv.INSTRUMENTATION_SCOPE, __version__, meter_provider)
        self.duration = meter.create_histogram(
            semconv.ML_OPERATION_DURATION, unit=semconv.ML_OPERATION_DURATION_UNIT,
            description="Duration of model inference calls",
            explicit_bucket_boundaries_advisory=list(semconv.ML_OPERATION_DURATION_BUCKETS))
        # Rows are counted in plain integers on the hot path and observed at collection: a monotonic Sum on the
        # wire like a Counter's, without the SDK's per-call attribute hashing (see _rows).
        self._rows_lock = threading.Lock()
        self._row_observer = row_observer(meter_provider, meter)
        self._row_observer.add(self)
        self.errors = meter.create_counter(
            semconv.ML_INSTRUMENTATION_ERRORS, unit="{error}",
            description="Telemetry that otel-mlmon failed to produce and dropped, by error.type")
        self.logger = get_logger(semconv.INSTRUMENTATION_SCOPE, __version__, logger_provider=logger_provider)
        self._interval_ns = max(1, round(self.settings.sketch_export_interval_s * 1e9))
        self.buffer = PredictionBuffer(self.logger, self.settings.event_max_rows,
                                       self.settings.event_flush_interval_s, RUNTIME.flusher.wake, self._interval_ns)
        self.spans = SpanFinisher(self.tracer, self.duration, self.logger, self.settings.event_max_rows,
                                  RUNTIME.flusher.wake)
        self.finish = self.spans.finish
        self._recorders: dict[tuple[str, str], ModelRecorder] = {}
        self._registry_lock = threading.Lock()
        self._export_lock = threading.Lock()
        self._grace_ns = min(self._interval_ns // 10, EXPORT_GRACE_NS)
        self._next_export_ns = self._due_after(time.time_ns())
        self._sketching: bool | None = None
        self._error_listener: Callable[[str], None] = lambda kind: self.errors.add(
            1, {semconv.ERROR_TYPE: kind})
        _guard.add_listener(self._error_listener)
        RUNTIME.live.add(self)
        RUNTIME.flusher.ensure_started()
        RUNTIME.flusher.wake()  # its ticks start now, not when the flusher's longest sleep (5 s) ends

    # --- models --------------------------------------------------------------------------------------------
    def recorder(self, name: str, version: str, system: str, task: Callable[[], str | None] | str | None,
                 columns: Mapping[str, ColumnSpec] | None = None,
                 feature_names: tuple[str, ...] | None = None,
                 segmenting: SegmentConfig | None = None) -> ModelRecorder:
        """The recorder of a model (made at its first call). ``segmenting``: default, from the settings."""
        key = (name, version)
        found = self._recorders.get(key)
        if found is not None:
            return found
        with self._registry_lock:
            found = self._recorders.get(key)
            if found is None:
                if len(self._recorders) >= self.settings.max_models:
                    _guard.failure("too_many_models", message=(
                        f"more than {self.settings.max_models} models in this process; model {name!r} is "
                        f"recorded as {semconv.OVERFLOW_MODEL_NAME!r} (raise OTEL_PYTHON_MLMON_MAX_MODELS)"))
                    key = (semconv.OVERFLOW_MODEL_NAME, "")
                    found = self._recorders.get(key)
                if found is None:
                    resolved_task = task() if callable(task) else task
                    found = ModelRecorder(key[0], key[1], resolved_task, system, self.settings, columns,
                                          feature_names, segmenting if segmenting is not None
                                          else SegmentConfig.from_settings(self.settings))
                    self._recorders[key] = found
                    RUNTIME.register_exit_flush()
        return found

    def count_rows(self, operation: Any, rows: int) -> None:
        with self._rows_lock:
            operation.rows += rows

    def observe_rows(self) -> Iterable[Observation]:
        # Called by the SDK's collection (through _RowObserver) before it collects the synchronous instruments,
        # for every reader: the durations that calls left waiting are recorded now, so that this collection
        # sees them (see _spans).
        self.spans.record_durations()
        for recorder in list(self._recorders.values()):
            for operation in recorder.operations():
                if operation.rows:
                    yield Observation(operation.rows, operation.metric_attributes)

    def row_counts(self) -> list[Observation]:
        """What ``observe_rows`` reports, without recording the waiting durations."""
        return [Observation(operation.rows, operation.metric_attributes)
                for recorder in list(self._recorders.values()) for operation in recorder.operations()
                if operation.rows]

    def sketching(self) -> bool:
        """Whether feature sketches have somewhere to go (checked again at each export until they do)."""
        if self._sketching is None:
            self._sketching = self.settings.feature_sketches and resolve_exporter(
                self.sketch_exporter, self.meter_provider)[0] is not None
        return self._sketching

    # --- flushing ------------------------------------------------------------------------------------------
    def _due_after(self, now_ns: int) -> int:
        """When the interval holding ``now_ns`` is exported: its end on the Unix clock, plus the grace."""
        return (now_ns // self._interval_ns + 1) * self._interval_ns + self._grace_ns

    def tick(self, now: float) -> float:
        """Periodic work; returns the seconds until this telemetry needs the next tick."""
        self.spans.drain(yield_every=4)
        self.spans.record_durations(yield_every=DURATION_YIELD_EVERY)
        self.buffer.flush(only_due=True)
        now_ns = time.time_ns()
        if now_ns >= self._next_export_ns:
            self._next_export_ns = self._due_after(now_ns)
            self.export_sketches(closed_only=True)
            now_ns = time.time_ns()
        wait = max(self._next_export_ns - now_ns, 0) / 1e9
        return min(SPAN_DRAIN_INTERVAL_S, self.settings.event_flush_interval_s, wait)

    def export_sketches(self, timeout_millis: int = EXPORT_TIMEOUT_MILLIS, closed_only: bool = False) -> bool:
        """Export the sketches of the intervals that have ended (``closed_only``: the periodic export), or of all
        intervals (a flush); on failure keep each for the next export of its interval.

        One request per interval, oldest first: after an outage the intervals kept back leave one by one, so a long
        backlog never makes one request over a receiver's body cap (which would refuse, and lose, all of it). The
        first interval that fails is kept with every later one, for the next export."""
        with self._export_lock:
            exporter, resource = resolve_exporter(self.sketch_exporter, self.meter_provider)
            if exporter is None or not self.settings.feature_sketches:
                self._sketching = False
                return True
            self._sketching = True
            now_ns = time.time_ns()
            collected = []
            for recorder in list(self._recorders.values()):
                for k, state, end_ns in recorder.collect(now_ns, closed_only):
                    collected.append((recorder, k, state, end_ns))
            if not collected:
                return True
            intervals = sorted({k for _, k, _, _ in collected})
            for position, interval in enumerate(intervals):
                part = [item for item in collected if item[1] == interval]
                ok = False
                try:
                    data = build_metrics([(recorder, state, end_ns) for recorder, _, state, end_ns in part],
                                         resource, self.settings.category_top_k)
                    ok = data is None or exporter.export(data, timeout_millis=timeout_millis) is \
                        MetricExportResult.SUCCESS
                    if not ok:
                        _guard.failure("sketch_export", message="the sketch exporter reported a failure; the "
                                       "sketches are kept and sent with the next export of their interval")
                except Exception as exc:
                    _guard.failure("sketch_export", exc)
                if not ok:
                    later = set(intervals[position:])
                    for recorder, k, state, end_ns in collected:
                        if k in later:
                            recorder.restore([(k, state, end_ns)])
                    return False
            return True

    def flush_calls(self) -> None:
        """Hand to the SDK now what calls left waiting: deferred spans, durations, buffered events."""
        _guard.call("span", self.spans.drain)
        _guard.call("duration", self.spans.record_durations)
        _guard.call("event_flush", self.buffer.flush)

    def force_flush(self, timeout_millis: int = EXPORT_TIMEOUT_MILLIS) -> bool:
        self.flush_calls()
        return bool(_guard.call("sketch_export", self.export_sketches, timeout_millis))

    def after_fork(self) -> None:
        self._registry_lock = threading.Lock()
        self._rows_lock = threading.Lock()
        self._export_lock = threading.Lock()
        self.buffer.after_fork()
        self.spans.after_fork()
        for recorder in self._recorders.values():
            recorder.after_fork()

    def close(self) -> None:
        """Flush, stop taking part in periodic work and leave the runtime's registry (a telemetry made again for
        the same providers takes its place). Its rows stay observed: a counter that stops, not one that resets."""
        self.force_flush()
        _guard.remove_listener(self._error_listener)
        RUNTIME.forget(self)
        self._row_observer.retire(self)


_live = RUNTIME.live  # the runtime's set of live telemetries, under the name tests/test_cli.py reads
