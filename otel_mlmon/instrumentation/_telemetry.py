"""The telemetry objects of one set of providers, the model registry, and the background flusher.

All instruments are created here, once, with their units and bucket advisories. One daemon thread per process
flushes buffered events and exports sketches on their intervals; ``force_flush()`` does both now, and runs at
exit (registered after the SDK providers exist, so it runs before their own shutdown). After ``fork()`` a child
starts with empty buffers and new locks; its thread starts again at its first prediction.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
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
from otel_mlmon.instrumentation._settings import Settings
from otel_mlmon.instrumentation._spans import DURATION_YIELD_EVERY, SpanFinisher

EXPORT_TIMEOUT_MILLIS = 10_000
EXPORT_GRACE_NS = 1_000_000_000  # an interval is exported this long after its end (at most a tenth of it), so
# that calls still running at its end add their rows first
SPAN_DRAIN_INTERVAL_S = 0.2


class Telemetry:
    """Tracer, instruments, logger, model recorders and sketch export for one set of providers."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None, logger_provider: Any = None,
                 sketch_exporter: MetricExporter | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
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
        # wire like a Counter's, without the SDK's per-call attribute hashing (~10 us a call, measured). One
        # observable counter per meter provider, shared by its telemetries (see _RowObserver).
        self._rows_lock = threading.Lock()
        self._row_observer = _row_observer(meter_provider, meter)
        self._row_observer.add(self)
        self.errors = meter.create_counter(
            semconv.ML_INSTRUMENTATION_ERRORS, unit="{error}",
            description="Telemetry that otel-mlmon failed to produce and dropped, by error.type")
        self.logger = get_logger(semconv.INSTRUMENTATION_SCOPE, __version__, logger_provider=logger_provider)
        self._interval_ns = max(1, round(self.settings.sketch_export_interval_s * 1e9))
        self.buffer = PredictionBuffer(self.logger, self.settings.event_max_rows,
                                       self.settings.event_flush_interval_s, _flusher.wake, self._interval_ns)
        self.spans = SpanFinisher(self.tracer, self.duration, self.logger, self.settings.event_max_rows,
                                  _flusher.wake)
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
        _live.add(self)
        _flusher.ensure_started()

    # --- models --------------------------------------------------------------------------------------------
    def recorder(self, name: str, version: str, system: str, task: Callable[[], str | None] | str | None,
                 columns: Mapping[str, ColumnSpec] | None = None,
                 feature_names: tuple[str, ...] | None = None) -> ModelRecorder:
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
                                          feature_names)
                    self._recorders[key] = found
                    _register_exit_flush()
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
        intervals (a flush); on failure keep each for the next export of its interval."""
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
            ok = False
            try:
                data = build_metrics([(recorder, state, end_ns) for recorder, _, state, end_ns in collected],
                                     resource, self.settings.category_top_k)
                ok = data is None or exporter.export(data, timeout_millis=timeout_millis) is \
                    MetricExportResult.SUCCESS
                if not ok:
                    _guard.failure("sketch_export", message="the sketch exporter reported a failure; the "
                                   "sketches are kept and sent with the next export of their interval")
            except Exception as exc:
                _guard.failure("sketch_export", exc)
            if not ok:
                for recorder, k, state, end_ns in collected:
                    recorder.restore([(k, state, end_ns)])
            return ok

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
        """Flush and stop taking part in periodic work (uninstrument)."""
        self.force_flush()
        _guard.remove_listener(self._error_listener)
        _live.discard(self)  # its rows stay observed: a counter that stops, not one that resets


class _RowObserver:
    """The ``ml.predictions`` observable counter of one meter provider, observing every telemetry that uses it.

    The SDK keeps the first instrument of a name per meter and hands it back, without the new callbacks, to later
    ``create_observable_counter`` calls; so a second telemetry on the same meter provider (other tracer, logger
    or sketch exporter; or made again after ``close``) registering its own callback would never be observed."""

    def __init__(self, meter: Any) -> None:
        self._telemetries: weakref.WeakSet[Telemetry] = weakref.WeakSet()
        self.counter = meter.create_observable_counter(
            semconv.ML_PREDICTIONS, callbacks=[self._observe], unit=semconv.ML_PREDICTIONS_UNIT,
            description="Rows predicted")

    def add(self, telemetry: Telemetry) -> None:
        self._telemetries.add(telemetry)

    def _observe(self, options: Any) -> Iterable[Observation]:
        totals: dict[frozenset[Any], Observation] = {}  # the same model seen by two telemetries: one sum
        for telemetry in list(self._telemetries):
            try:
                observed = list(telemetry.observe_rows())
            except Exception as exc:  # one telemetry's failure must not hide the others' rows
                _guard.failure("rows", exc)
                continue
            for observation in observed:
                key = frozenset((observation.attributes or {}).items())
                before = totals.get(key)
                totals[key] = observation if before is None else Observation(
                    before.value + observation.value, observation.attributes)
        return list(totals.values())


_row_observers: weakref.WeakKeyDictionary[Any, _RowObserver] = weakref.WeakKeyDictionary()
_row_observers_strong: dict[int, tuple[Any, _RowObserver]] = {}  # providers that cannot be weakly referenced
_global_row_observer: _RowObserver | None = None
_row_observers_lock = threading.Lock()


def _row_observer(meter_provider: Any, meter: Any) -> _RowObserver:
    """The shared row observer of ``meter_provider`` (None: the global one), made with ``meter`` the first time."""
    global _global_row_observer
    with _row_observers_lock:
        if meter_provider is None or meter_provider is metrics.get_meter_provider():  # one global, named or not
            if _global_row_observer is None:
                _global_row_observer = _RowObserver(meter)
            return _global_row_observer
        try:
            found = _row_observers.get(meter_provider)
            if found is None:
                found = _row_observers[meter_provider] = _RowObserver(meter)
            return found
        except TypeError:  # not weakly referenceable: kept for the process's life
            entry = _row_observers_strong.get(id(meter_provider))
            if entry is None:
                entry = _row_observers_strong[id(meter_provider)] = (meter_provider, _RowObserver(meter))
            return entry[1]


class _Flusher:
    """One daemon thread per process that ticks every live Telemetry."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.stopped = False  # True in a forked child until its first prediction starts the thread again

    def ensure_started(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="otel-mlmon-flusher", daemon=True)
                self._thread.start()
            self.stopped = False

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        delay = 0.5
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            delay = 5.0
            now = time.monotonic()
            for telemetry in list(_live):
                wait = _guard.call("tick", telemetry.tick, now)
                if wait is not None:
                    delay = min(delay, wait)
            delay = max(delay, 0.05)

    def after_fork(self) -> None:
        self._thread = None
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self.stopped = True


_live: weakref.WeakSet[Telemetry] = weakref.WeakSet()
_flusher = _Flusher()
_default: Telemetry | None = None
_default_lock = threading.Lock()


def default_telemetry() -> Telemetry:
    """The telemetry of the global providers (zero-code and ``instrument_model`` without providers)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Telemetry()
    return _default


def force_flush(timeout_millis: int = EXPORT_TIMEOUT_MILLIS) -> bool:
    """Emit buffered events and export sketches of every live telemetry now."""
    ok = True
    for telemetry in list(_live):
        ok = telemetry.force_flush(timeout_millis) and ok
    return ok


def _after_fork_in_child() -> None:
    _flusher.after_fork()
    for telemetry in list(_live):
        telemetry.after_fork()


def _at_exit() -> None:
    force_flush(timeout_millis=5_000)


def _register_exit_flush() -> None:
    """(Re-)register the exit flush last, so that it runs before the SDK providers shut down (atexit is LIFO)
    even when the providers were created after otel-mlmon was imported. Called when a model is first seen."""
    atexit.unregister(_at_exit)
    atexit.register(_at_exit)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
