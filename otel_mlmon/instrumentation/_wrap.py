"""The one wrapper factory and its guard: what happens around every instrumented model call.

Order of work in a wrapper: call through at once when instrumentation is suppressed or a call of ours is already
in progress (one user-level call = one operation: a ``predict`` that calls ``decision_function``, a Pipeline that
calls its estimator, are recorded once); start the span (guarded); the user's call, alone in its ``try``; then
metrics, sketches and events, each guarded on its own. The user's exception is re-raised untouched and the
return value is the very object the model returned.

Which instances are recorded: those configured by ``instrument_model`` (attribute ``_otel_mlmon``), and every
instance of a framework whose zero-code instrumentor is active. Zero-code names default to the class name unless
the model carries ``otel_mlmon_name`` / ``otel_mlmon_version`` attributes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind

from otel_mlmon import semconv
from otel_mlmon.instrumentation import _guard, _ids, _overrides
from otel_mlmon.instrumentation._inputs import InputBatch
from otel_mlmon.instrumentation._outputs import OutputBatch, read_output
from otel_mlmon.instrumentation._recorder import ColumnSpec, ModelRecorder
from otel_mlmon.instrumentation._spans import SpanRecord
from otel_mlmon.instrumentation._telemetry import Telemetry, _flusher, default_telemetry

CONFIG_ATTRIBUTE = "_otel_mlmon"
NAME_ATTRIBUTE = "otel_mlmon_name"
VERSION_ATTRIBUTE = "otel_mlmon_version"
INPUT_KEYWORDS = ("X", "data", "input", "x")

_ACTIVE: ContextVar[bool] = ContextVar("otel_mlmon_active", default=False)

try:  # what is_instrumentation_enabled() reads, looked up in a context we fetched once anyway
    from opentelemetry.instrumentation.utils import (
        _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS,
    )
    from opentelemetry.instrumentation.utils import (
        _SUPPRESS_INSTRUMENTATION_KEY_PLAIN as _SUPPRESS_PLAIN,
    )
except ImportError:  # pragma: no cover - a future opentelemetry-instrumentation without them
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled

    def _suppressed(context: Any) -> bool:
        return not is_instrumentation_enabled()
else:
    def _suppressed(context: Any) -> bool:
        return bool(context.get(_SUPPRESS) or context.get(_SUPPRESS_PLAIN))


_zero_code: dict[str, Telemetry | None] = {}  # system -> telemetry of its instrumentor (None: global)


@dataclass
class ModelConfig:
    """What ``instrument_model`` set on a model. Pickles without its runtime telemetry."""

    name: str
    version: str = ""
    task: str | None = None
    feature_names: tuple[str, ...] | None = None
    columns: Mapping[str, ColumnSpec] = field(default_factory=dict)
    telemetry: Telemetry | None = None
    recorder: ModelRecorder | None = None  # resolved at the first call
    decision_threshold: float | None = None  # binary classifiers: label = positive class when score >= it

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["telemetry"] = state["recorder"] = None
        return state


def enable_zero_code(system: str, telemetry: Telemetry | None = None) -> None:
    _zero_code[system] = telemetry


def disable_zero_code(system: str) -> None:
    _zero_code.pop(system, None)


def suppressing(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Wrapper for ``fit`` and the like: nothing is recorded inside it (fit may call predict)."""
    token = _ACTIVE.set(True)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _ACTIVE.reset(token)


def make_wrapper(operation: str, output_kind: str, system: str,
                 task_of: Callable[[Any], str | None] | None = None,
                 recordable: Callable[[Any], bool] | None = None) -> Callable[..., Any]:
    """A wrapt wrapper recording ``operation`` of models of ``system``.

    Args:
        operation: ``ml.operation.name``.
        output_kind: what the method returns (see ``_outputs``).
        system: ``ml.system.name``.
        task_of: the task of a model when ``instrument_model`` did not say.
        recordable: False for calls that are not inference (a torch module in training mode).
    """

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _ACTIVE.get():
            return wrapped(*args, **kwargs)
        parent = otel_context.get_current()
        if _suppressed(parent):
            return wrapped(*args, **kwargs)
        call = _begin(operation, output_kind, system, task_of, recordable, instance, parent)
        if call is None:
            return wrapped(*args, **kwargs)
        token = _ACTIVE.set(True)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _ACTIVE.reset(token)
            call.fail(exc)
            raise
        _ACTIVE.reset(token)
        call.succeed(result, instance, args, kwargs)
        return result

    return wrapper


def _begin(operation: str, output_kind: str, system: str, task_of: Callable[[Any], str | None] | None,
           recordable: Callable[[Any], bool] | None, instance: Any, parent: Any) -> _Call | None:
    try:
        if instance is None or (recordable is not None and not recordable(instance)):
            return None
        config = getattr(instance, "__dict__", {}).get(CONFIG_ATTRIBUTE)
        threshold = None
        if config is None:
            if system not in _zero_code:
                return None
            telemetry = _zero_code[system] or default_telemetry()
            name = str(getattr(instance, NAME_ATTRIBUTE, None) or type(instance).__name__)
            version = str(getattr(instance, VERSION_ATTRIBUTE, None) or "")
            recorder = telemetry.recorder(name, version, system, lambda: task_of(instance) if task_of else None)
        else:
            telemetry = config.telemetry or default_telemetry()
            threshold = config.decision_threshold
            recorder = config.recorder
            if recorder is None:
                task = config.task

                def resolve_task() -> str | None:
                    return task or (task_of(instance) if task_of else None)

                recorder = config.recorder = telemetry.recorder(config.name, config.version, system, resolve_task,
                                                                config.columns, config.feature_names)
        if _flusher.stopped:  # a forked child's first prediction (gunicorn --preload workers)
            _flusher.ensure_started()
        return _Call(telemetry, recorder, operation, output_kind, parent, threshold)
    except Exception as exc:
        _guard.failure("start", exc)
        return None


class _Call:
    """Telemetry of one call in progress.

    By default the span is started before the call and is the current span during it. With
    ``OTEL_PYTHON_MLMON_SPAN_MODE=deferred`` it is built after the call, off the hot path, from the exact start
    time and duration measured around it, with the context current at the call as its parent.
    """

    __slots__ = ("context_token", "operation", "output_kind", "parent", "recorder", "span", "start", "start_ns",
                 "telemetry", "threshold")

    def __init__(self, telemetry: Telemetry, recorder: ModelRecorder, operation: str, output_kind: str,
                 parent: Any, threshold: float | None = None) -> None:
        self.telemetry = telemetry
        self.recorder = recorder
        self.output_kind = output_kind
        self.threshold = threshold
        self.operation = recorder.operation(operation)
        self.span = None
        self.context_token = None
        self.parent = parent  # the context current at the call
        if telemetry.span_current:
            self.span = telemetry.tracer.start_span(self.operation.span_name, context=parent,
                                                    kind=SpanKind.INTERNAL, attributes=self.operation.span_attributes)
            self.context_token = otel_context.attach(trace.set_span_in_context(self.span, parent))
        self.start_ns = time.time_ns()
        self.start = time.perf_counter()

    def _elapsed(self) -> float:
        elapsed = time.perf_counter() - self.start
        if self.context_token is not None:
            otel_context.detach(self.context_token)
        return elapsed

    def _record(self, elapsed: float, rows: int | None, error: BaseException | None) -> SpanRecord:
        return SpanRecord(self.operation, self.parent, self.span, self.start_ns, elapsed, rows, error)

    def fail(self, exc: BaseException) -> None:
        try:
            self.telemetry.finish(self._record(self._elapsed(), None, exc))
        except Exception as own:
            _guard.failure("span", own)

    def succeed(self, result: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # Each part guarded on its own (inline try blocks: this runs on every call, a helper frame per part costs
        # more than the part itself for one row).
        try:
            elapsed = self._elapsed()
        except Exception as exc:
            _guard.failure("span", exc)
            return
        telemetry, recorder = self.telemetry, self.recorder
        x = args[0] if args else next((kwargs[k] for k in INPUT_KEYWORDS if k in kwargs), None)
        try:
            batch: InputBatch | None = recorder.read_input(x, instance)
        except Exception as exc:
            _guard.failure("input", exc)
            batch = None
        try:
            outputs: OutputBatch | None = read_output(result, self.output_kind, recorder.task, instance,
                                                      self.threshold)
        except Exception as exc:
            _guard.failure("output", exc)
            outputs = None
        rows = batch.rows if batch is not None and batch.rows is not None else (
            outputs.rows if outputs is not None else None)
        record = self._record(elapsed, rows, None)
        event_ns = self.start_ns
        override = _overrides.CURRENT.get()
        if override is not None and rows is not None:
            try:
                if override.time_unix_nano is not None:
                    event_ns = record.event_ns = override.time_unix_nano
                if override.labels is not None:
                    outputs = _override_labels(outputs, override.labels, rows)
            except Exception as exc:
                _guard.failure("override", exc)
        if rows is not None:
            telemetry.count_rows(self.operation, rows)
            if telemetry.sketching():
                if batch is not None:
                    try:
                        recorder.record_inputs(batch, event_ns)
                    except Exception as exc:
                        _guard.failure("sketch", exc)
                if outputs is not None:
                    try:
                        recorder.record_outputs(outputs, event_ns)
                    except Exception as exc:
                        _guard.failure("sketch", exc)
            try:
                self._event(rows, outputs, batch, record)
            except Exception as exc:
                _guard.failure("event", exc)
        try:
            telemetry.finish(record)
        except Exception as exc:
            _guard.failure("span", exc)

    def _event(self, rows: int, outputs: OutputBatch | None, batch: InputBatch | None, record: SpanRecord) -> None:
        telemetry = self.telemetry
        found: list[str | None] | None = batch.ids if batch is not None else None
        if found is None and telemetry.settings.id_baggage_key is not None:
            value = baggage.get_baggage(telemetry.settings.id_baggage_key, self.parent)
            if value is not None and str(value):
                found = [str(value)] if rows == 1 else [f"{value}-{i}" for i in range(rows)]
        columns: dict[str, list[Any]] = {semconv.ML_PREDICTION_ID: _ids.assign(rows, found)}
        if outputs is not None and outputs.rows == rows:
            columns.update(outputs.event_attributes())
        if telemetry.settings.capture_features and batch is not None and batch.rows == rows:
            if batch.numeric is not None:
                for j, name in enumerate(batch.numeric_names):
                    columns[semconv.ML_FEATURE_PREFIX + name] = batch.numeric[:, j].tolist()
            for name, values in batch.categorical.items():
                columns[semconv.ML_FEATURE_PREFIX + name] = [None if v is None else str(v) for v in
                                                               values.tolist()]
        if telemetry.settings.event_mode == "per_call":
            record.event = columns  # emitted with the span, in its context
        else:
            telemetry.buffer.add(self.recorder.point_attributes, columns, rows,
                                 self.start_ns if record.event_ns is None else record.event_ns)


def _override_labels(outputs: OutputBatch | None, labels: list[Any], rows: int) -> OutputBatch | None:
    """The call's outputs with the predicted labels of a ``recorded_as`` block, when they are one per row."""
    if len(labels) != rows:
        _guard.failure("override_labels_mismatch", message=(
            f"recorded_as() holds {len(labels)} labels but the model was called on {rows} rows; the labels "
            "derived from the model's output were recorded for that call"))
        return outputs
    if outputs is None or outputs.rows != rows:
        return OutputBatch(rows, labels=labels)
    return OutputBatch(rows, labels=labels, classes=outputs.classes, scores=outputs.scores, values=outputs.values)
