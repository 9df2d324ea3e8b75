"""The telemetry of one instrumented call in progress: its span, then its rows, sketches and event.

Each part after the user's call is guarded on its own (inline ``try`` blocks: this runs on every call, and a helper
frame per part costs more than the part itself for one row). Nothing here raises into the application.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind

from otel_mlmon import semconv
from otel_mlmon.instrumentation import _guard, _ids, _overrides
from otel_mlmon.instrumentation._inputs import InputBatch
from otel_mlmon.instrumentation._outputs import OutputBatch, read_output
from otel_mlmon.instrumentation._recorder import ModelRecorder
from otel_mlmon.instrumentation._segments import MISSING
from otel_mlmon.instrumentation._spans import SpanRecord
from otel_mlmon.instrumentation._telemetry import Telemetry

INPUT_KEYWORDS = ("X", "data", "input", "x")


class Call:
    """Telemetry of one call in progress.

    By default the span is started before the call and is the current span during it. With
    ``OTEL_PYTHON_MLMON_SPAN_MODE=deferred`` it is built after the call, off the hot path, from the exact start
    time and duration measured around it, with the context current at the call as its parent.
    """

    __slots__ = ("context_token", "event_base", "extra", "operation", "output_kind", "parent", "recorder", "span",
                 "start", "start_ns", "telemetry", "threshold")

    def __init__(self, telemetry: Telemetry, recorder: ModelRecorder, operation: str, output_kind: str,
                 parent: Any, threshold: float | None = None, extra: Mapping[str, Any] | None = None,
                 event_base: Mapping[str, Any] | None = None) -> None:
        self.telemetry = telemetry
        self.recorder = recorder
        self.output_kind = output_kind
        self.threshold = threshold
        self.extra = extra  # the model's own span and event attributes (``instrument_model(attributes=)``)
        self.event_base = recorder.point_attributes if event_base is None else event_base
        self.operation = recorder.operation(operation)
        self.span = None
        self.context_token = None
        self.parent = parent  # the context current at the call
        if telemetry.span_current:
            attributes = self.operation.span_attributes
            if extra:
                attributes = {**extra, **attributes}
            self.span = telemetry.tracer.start_span(self.operation.span_name, context=parent,
                                                    kind=SpanKind.INTERNAL, attributes=attributes)
            self.context_token = otel_context.attach(trace.set_span_in_context(self.span, parent))
        self.start_ns = time.time_ns()
        self.start = time.perf_counter()

    def _elapsed(self) -> float:
        elapsed = time.perf_counter() - self.start
        if self.context_token is not None:
            otel_context.detach(self.context_token)
        return elapsed

    def _record(self, elapsed: float, rows: int | None, error: BaseException | None) -> SpanRecord:
        return SpanRecord(self.operation, self.parent, self.span, self.start_ns, elapsed, rows, error,
                          extra=self.extra, event_base=self.event_base)

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
            segments = groups = None
            segmenter = recorder.segmenter
            if segmenter is not None:
                try:
                    if override is not None and override.columns is not None and batch is not None:
                        batch.segments = override.columns.get(segmenter.column or "", batch.segments)
                        batch.sensitive = override.columns.get(segmenter.sensitive_column or "", batch.sensitive)
                    segments = segmenter.segments_of(batch, rows, self.parent)
                    groups = segmenter.groups_of(batch, rows)
                except Exception as exc:
                    _guard.failure("segment", exc)
                    segments = [MISSING] * rows if segmenter.segments is not None else None
                    groups = [MISSING] * rows if segmenter.groups is not None else None
            if segments is not None:
                if telemetry.sketching():
                    try:
                        recorder.record_segments(batch, outputs, segments, event_ns)
                    except Exception as exc:
                        _guard.failure("sketch", exc)
            elif telemetry.sketching():
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
                self._event(rows, outputs, batch, record, segments, groups)
            except Exception as exc:
                _guard.failure("event", exc)
        try:
            telemetry.finish(record)
        except Exception as exc:
            _guard.failure("span", exc)

    def _event(self, rows: int, outputs: OutputBatch | None, batch: InputBatch | None, record: SpanRecord,
               segments: list[str] | None = None, groups: list[str] | None = None) -> None:
        telemetry = self.telemetry
        found: list[str | None] | None = batch.ids if batch is not None else None
        if found is None and telemetry.settings.id_baggage_key is not None:
            value = baggage.get_baggage(telemetry.settings.id_baggage_key, self.parent)
            if value is not None and str(value):
                found = [str(value)] if rows == 1 else [f"{value}-{i}" for i in range(rows)]
        columns: dict[str, list[Any]] = {semconv.ML_PREDICTION_ID: _ids.assign(rows, found)}
        if outputs is not None and outputs.rows == rows:
            columns.update(outputs.event_attributes())
        if segments is not None:
            columns[semconv.ML_SEGMENT] = segments
        base = self.event_base
        if groups is not None:
            columns[semconv.ML_FAIRNESS_GROUP] = groups
            segmenter = self.recorder.segmenter
            if segmenter is not None and segmenter.sensitive_column:  # names the column the groups are of
                base = {**base, semconv.ML_FAIRNESS_ATTRIBUTE: segmenter.sensitive_column}
        if telemetry.settings.capture_features and batch is not None and batch.rows == rows:
            if batch.numeric is not None:
                for j, name in enumerate(batch.numeric_names):
                    columns[semconv.ML_FEATURE_PREFIX + name] = batch.numeric[:, j].tolist()
            for name, values in batch.categorical.items():
                columns[semconv.ML_FEATURE_PREFIX + name] = [None if v is None else str(v) for v in
                                                               values.tolist()]
        if telemetry.settings.event_mode == "per_call":
            record.event = columns  # emitted with the span, in its context
            if base is not self.event_base:
                record.event_base = dict(base)
        else:
            telemetry.buffer.add(base, columns, rows,
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
