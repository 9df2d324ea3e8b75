"""Per-model pre-aggregated state: feature sketches, score histograms and the regression output sketch.

State is kept per interval of the Unix clock: interval ``k`` is ``[k·I, (k+1)·I)`` with ``I`` the sketch export
interval (``OTEL_PYTHON_MLMON_SKETCH_EXPORT_INTERVAL``). A call's rows go to the interval of the call's time (its
start, or the time of an enclosing ``recorded_as`` block). The hot path adds to the state of that interval under
the model's lock; the exporter swaps out the states of the intervals that have ended (``collect``; everything on
a flush) and, when an export fails, merges each back into its own interval (``restore``), so a failed export loses
nothing and never mixes intervals: sketches are mergeable.

A collected part covers ``[start, end)`` inside its interval: ``start`` is ``k·I``, or where the previous part of
the same interval ended (a flush cuts an open interval at the flush time; rows of a call that was still running
when its interval was exported make a later part), and ``end`` is ``(k+1)·I``, or the flush time when earlier. So
the parts of one interval never overlap and never repeat a ``(start, end)``, and every part lies in one interval.

Single rows are staged in a small block and sketched together, which is what makes per-row sketching cheap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from otel_mlmon import semconv
from otel_mlmon.instrumentation import _guard
from otel_mlmon.instrumentation._inputs import CATEGORICAL, NUMERIC, InputBatch, read_input
from otel_mlmon.instrumentation._outputs import OutputBatch
from otel_mlmon.instrumentation._segments import SegmentConfig, Segmenter, split_rows
from otel_mlmon.instrumentation._settings import Settings
from otel_mlmon.sketch import CategoricalSketch, NumericSketch, update_columns

STAGE_ROWS = 256  # rows staged before a block update; small calls (<= STAGE_ROWS / 4 rows) are staged
EXPORTED_MEMORY = 1024  # intervals whose exported end is remembered (older ones: a later part starts at k·I)
_FLOAT64 = np.dtype(np.float64)
SCORE_BOUNDS = np.asarray(semconv.ML_PREDICTION_SCORE_BUCKETS, dtype=np.float64)


@dataclass(frozen=True)
class ColumnSpec:
    """How a feature is sketched: its kind and, for numbers, the bucketing (from a reference profile)."""

    kind: str
    center: float = 0.0
    scale: float = 1.0


@dataclass
class ScoreHistogram:
    """Pre-aggregated explicit-bucket histogram of scores in [0, 1] (bounds: the semconv advisory)."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(SCORE_BOUNDS.size + 1, dtype=np.int64))
    count: int = 0
    total: float = 0.0
    minimum: float = np.inf
    maximum: float = -np.inf

    def update(self, scores: np.ndarray) -> None:
        scores = scores[np.isfinite(scores)]
        if scores.size == 0:
            return
        # OTLP bucket i is (bounds[i-1], bounds[i]]: searchsorted 'left' gives exactly that index.
        self.counts += np.bincount(np.searchsorted(SCORE_BOUNDS, scores, side="left"),
                                   minlength=SCORE_BOUNDS.size + 1)
        self.count += int(scores.size)
        self.total += float(scores.sum())
        self.minimum = min(self.minimum, float(scores.min()))
        self.maximum = max(self.maximum, float(scores.max()))

    def merge(self, other: ScoreHistogram) -> None:
        self.counts += other.counts
        self.count += other.count
        self.total += other.total
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)


@dataclass
class SketchState:
    """Everything aggregated for one model in one interval since ``start_ns``."""

    start_ns: int
    segment: str | None = None  # the segment its points carry (ml.segment), None without segments
    numeric: dict[str, NumericSketch] = field(default_factory=dict)
    categorical: dict[str, CategoricalSketch] = field(default_factory=dict)
    scores: dict[str, ScoreHistogram] = field(default_factory=dict)
    values: NumericSketch | None = None

    def empty(self) -> bool:
        return not (any(s.total for s in self.numeric.values()) or any(s.total for s in self.categorical.values())
                    or self.scores or (self.values is not None and self.values.total))

    def merge(self, other: SketchState) -> None:
        self.start_ns = min(self.start_ns, other.start_ns)
        for name, sketch in other.numeric.items():
            mine = self.numeric.get(name)
            if mine is None:
                self.numeric[name] = sketch
            else:
                mine.merge(sketch)
        for name, categories in other.categorical.items():
            if name in self.categorical:
                self.categorical[name].merge(categories)
            else:
                self.categorical[name] = categories
        for label, histogram in other.scores.items():
            if label in self.scores:
                self.scores[label].merge(histogram)
            else:
                self.scores[label] = histogram
        if other.values is not None:
            if self.values is None:
                self.values = other.values
            else:
                self.values.merge(other.values)


@dataclass
class Operation:
    """Attributes of one (model, operation), computed once, and the rows it predicted (``ml.predictions``)."""

    span_name: str
    span_attributes: Mapping[str, Any]
    metric_attributes: Mapping[str, Any]
    rows: int = 0


class ModelRecorder:
    """Telemetry state of one (model name, version) in one process."""

    def __init__(self, name: str, version: str, task: str | None, system: str, settings: Settings,
                 columns: Mapping[str, ColumnSpec] | None = None,
                 feature_names: tuple[str, ...] | None = None, segmenting: SegmentConfig | None = None) -> None:
        self.name = name
        self.version = version
        self.task = task
        self.system = system
        self.settings = settings
        self.feature_names = feature_names
        self.columns: dict[str, ColumnSpec] = dict(columns or {})
        self.point_attributes = {semconv.ML_MODEL_NAME: name, semconv.ML_MODEL_VERSION: version}
        self._operations: dict[str, Operation] = {}
        self._numeric_names: dict[int, tuple[str, ...]] = {}  # width of an all-numeric array -> names
        self._known_names: tuple[str, ...] | None = None  # numeric names last checked against ``columns``
        self._lock = threading.Lock()
        self.interval_ns = max(1, round(settings.sketch_export_interval_s * 1e9))
        self._states: dict[int, SketchState] = {}  # interval index k -> its state
        self._exported_until: dict[int, int] = {}  # k -> end of the last part of interval k collected
        self._state_k: int | None = None  # the interval that ``_state`` and the stages belong to
        self._state = SketchState(0)  # placeholder until the first call chooses an interval
        self._stage: np.ndarray | None = None
        self._stage_names: tuple[str, ...] | None = None  # None: nothing staged since the last layout change
        self._staged = 0
        self._stage_categorical: dict[str, list[Any]] = {}
        self._stage_scores: dict[str, list[float]] = {}
        self._stage_values: list[float] = []
        # Segments: each segment's rows are sketched by a recorder of their own (``for_segment``), whose states
        # carry the segment; this recorder's own states then stay empty, and ``collect`` gathers the segments'.
        self.segmenter = Segmenter(segmenting) if segmenting is not None and segmenting.active else None
        self.segment: str | None = None  # on a segment's recorder: its segment
        self._segments: dict[str, ModelRecorder] = {}

    def for_segment(self, segment: str) -> ModelRecorder:
        """The recorder of one segment's sketches (segments are bounded by the segmenter's vocabulary)."""
        found = self._segments.get(segment)
        if found is None:
            with self._lock:
                found = self._segments.get(segment)
                if found is None:
                    found = ModelRecorder(self.name, self.version, self.task, self.system, self.settings)
                    found.columns = self.columns  # one set of feature specs (kinds, bucketing) for all segments
                    found.segment = segment
                    self._segments[segment] = found
        return found

    def record_segments(self, batch: InputBatch | None, outputs: OutputBatch | None, segments: list[str],
                        time_ns: int | None = None) -> None:
        """Add one call's features and outputs to the sketches of each row's segment."""
        rows = len(segments)
        for segment, index in split_rows(segments):
            recorder = self.for_segment(segment)
            if batch is not None and (index is None or batch.rows == rows):
                recorder.record_inputs(batch if index is None else batch.take(index), time_ns)
            if outputs is not None and (index is None or outputs.rows == rows):
                recorder.record_outputs(outputs if index is None else outputs.take(index), time_ns)

    def after_fork(self) -> None:
        """In a forked child: new lock, empty state (the parent exports what it aggregated)."""
        for recorder in self._segments.values():
            recorder.after_fork()
        self._lock = threading.Lock()
        self._states, self._exported_until, self._state_k, self._state = {}, {}, None, SketchState(0)
        self._stage, self._stage_names, self._staged, self._stage_categorical = None, None, 0, {}
        self._stage_scores, self._stage_values = {}, []
        for operation in self._operations.values():
            operation.rows = 0  # the parent reports its own rows

    def operations(self) -> list[Operation]:
        return list(self._operations.values())

    def operation(self, operation: str) -> Operation:
        cached = self._operations.get(operation)
        if cached is None:
            metric = {
                semconv.ML_MODEL_NAME: self.name,
                semconv.ML_MODEL_VERSION: self.version,
                semconv.ML_MODEL_TASK: self.task or "",
                semconv.ML_SYSTEM_NAME: self.system,
                semconv.ML_OPERATION_NAME: operation,
            }
            cached = Operation(f"{operation} {self.name}", dict(metric), metric)
            self._operations[operation] = cached
        return cached

    # --- hot path ------------------------------------------------------------------------------------------
    def read_input(self, x: Any, model: Any) -> InputBatch:
        plain = type(x) is np.ndarray and x.ndim == 2 and x.dtype.kind in "fiub"
        if plain:  # the common serving case: resolved once per width, then no per-call name work
            names = self._numeric_names.get(x.shape[1])
            if names is not None:
                block = x if x.dtype is _FLOAT64 or x.dtype == _FLOAT64 else x.astype(np.float64)
                return InputBatch(rows=x.shape[0], names=names, numeric_names=names, numeric=block)
        kinds = {name: spec.kind for name, spec in self.columns.items()} if self.columns else None
        segmenter = self.segmenter
        if segmenter is None:
            batch = read_input(x, model, self.feature_names, kinds, self.settings.max_features,
                               self.settings.id_column)
        else:
            batch = read_input(x, model, self.feature_names, kinds, self.settings.max_features,
                               self.settings.id_column, segmenter.column, segmenter.sensitive_column)
        if batch.names and len(batch.names) >= self.settings.max_features:
            _guard.failure("too_many_features", message=f"model {self.name!r}: only the first "
                           f"{self.settings.max_features} input columns are sketched")
        elif plain and not batch.categorical and batch.numeric_names == batch.names:
            self._numeric_names[x.shape[1]] = batch.names
        return batch

    def _switch(self, k: int) -> None:
        """Make interval ``k`` the one the hot path adds to (under the lock); staged rows go to their own first."""
        if self._state_k is not None:
            self._flush_stage()
            self._flush_outputs()
        state = self._states.get(k)
        if state is None:
            begin = k * self.interval_ns
            start = self._exported_until.get(k, begin)
            state = self._states[k] = SketchState(min(start, begin + self.interval_ns - 1), self.segment)
        self._state = state
        self._state_k = k

    def record_inputs(self, batch: InputBatch, time_ns: int | None = None) -> None:
        """Add one call's features to the interval of ``time_ns`` (the call's time; default: now)."""
        if batch.rows is None or not batch.names:
            return
        if batch.numeric_names is not self._known_names or batch.categorical:
            for name in batch.numeric_names:
                if name not in self.columns:
                    self.columns[name] = ColumnSpec(NUMERIC)
            for name in batch.categorical:
                if name not in self.columns:
                    self.columns[name] = ColumnSpec(CATEGORICAL)
            self._known_names = batch.numeric_names  # the cached names of plain arrays: checked once
        k = (time.time_ns() if time_ns is None else time_ns) // self.interval_ns
        with self._lock:
            if k != self._state_k:
                self._switch(k)
            if batch.invalid:
                for name, n in batch.invalid.items():
                    self._numeric_sketch(name).add_bad(invalid=n)
            if batch.rows <= STAGE_ROWS // 4:
                self._stage_rows(batch)
            else:
                self._sketch(batch.numeric_names, batch.numeric, batch.categorical)

    def record_outputs(self, outputs: OutputBatch, time_ns: int | None = None) -> None:
        """Add one call's scores or values to the interval of ``time_ns`` (the call's time; default: now)."""
        k = (time.time_ns() if time_ns is None else time_ns) // self.interval_ns
        with self._lock:
            if k != self._state_k:
                self._switch(k)
            if outputs.scores is not None and outputs.classes is not None:
                if len(outputs.classes) == 2:
                    pairs = [(outputs.classes[1], outputs.scores[:, 1])]
                else:
                    pairs = [(c, outputs.scores[:, j]) for j, c in enumerate(outputs.classes)]
                for label, column in pairs:
                    self._stage_scores.setdefault(label, []).extend(column.tolist())
                    if len(self._stage_scores[label]) >= STAGE_ROWS:
                        self._flush_outputs()
            if outputs.values is not None:
                self._stage_values.extend(outputs.values.tolist())
                if len(self._stage_values) >= STAGE_ROWS:
                    self._flush_outputs()

    def _flush_outputs(self) -> None:
        """Sketch the staged outputs (numpy work pays off on blocks, not on single rows)."""
        for label, scores in self._stage_scores.items():
            if scores:
                histogram = self._state.scores.get(label)
                if histogram is None:
                    if len(self._state.scores) >= self.settings.category_top_k:  # bounded: one series per class
                        label = semconv.OTHER_CATEGORY
                    histogram = self._state.scores.setdefault(label, ScoreHistogram())
                histogram.update(np.asarray(scores, dtype=np.float64))
                scores.clear()
        if self._stage_values:
            if self._state.values is None:
                self._state.values = NumericSketch(precision=self.settings.sketch_precision)
            self._state.values.update(np.asarray(self._stage_values, dtype=np.float64))
            self._stage_values.clear()

    def _numeric_sketch(self, name: str) -> NumericSketch:
        sketch = self._state.numeric.get(name)
        if sketch is None:
            spec = self.columns.get(name) or ColumnSpec(NUMERIC)
            sketch = NumericSketch(spec.center, spec.scale, self.settings.sketch_precision)
            self._state.numeric[name] = sketch
        return sketch

    def _categorical_sketch(self, name: str) -> CategoricalSketch:
        sketch = self._state.categorical.get(name)
        if sketch is None:
            sketch = CategoricalSketch(self.settings.max_categories)
            self._state.categorical[name] = sketch
        return sketch

    def _stage_rows(self, batch: InputBatch) -> None:
        names = batch.numeric_names
        if names != self._stage_names or (
                (batch.categorical or self._stage_categorical)
                and batch.categorical.keys() != self._stage_categorical.keys()):
            self._flush_stage()
            self._stage = np.empty((STAGE_ROWS, len(names)), dtype=np.float64) if names else None
            self._stage_names = names
            self._stage_categorical = {name: [] for name in batch.categorical}
        rows = batch.rows or 0
        if self._staged + rows > STAGE_ROWS:
            self._flush_stage()
        if self._stage is not None and batch.numeric is not None:
            self._stage[self._staged: self._staged + rows] = batch.numeric
        for name, values in batch.categorical.items():
            self._stage_categorical[name].extend(values.tolist())
        self._staged += rows

    def _flush_stage(self) -> None:
        if self._staged:
            numeric = self._stage[: self._staged] if self._stage is not None else None
            categorical = {name: np.asarray(values, dtype=object)
                           for name, values in self._stage_categorical.items()}
            self._sketch(self._stage_names or (), numeric, categorical)
            for values in self._stage_categorical.values():
                values.clear()
        self._staged = 0

    def _sketch(self, numeric_names: tuple[str, ...], numeric: np.ndarray | None,
                categorical: Mapping[str, np.ndarray]) -> None:
        if numeric is not None and numeric_names:
            update_columns([self._numeric_sketch(name) for name in numeric_names], numeric)
        for name, values in categorical.items():
            self._categorical_sketch(name).update(values)

    # --- export side ---------------------------------------------------------------------------------------
    def collect(self, now_ns: int | None = None, closed_only: bool = False) -> list[tuple[int, SketchState, int]]:
        """Swap out the aggregated states: those of the intervals ended by ``now_ns`` when ``closed_only``, else
        all (a flush). Returns ``(k, state, end_ns)`` for each non-empty one; the part covers
        ``[state.start_ns, end_ns)``, inside interval ``k``."""
        now = time.time_ns() if now_ns is None else now_ns
        interval = self.interval_ns
        parts = []
        with self._lock:
            if self._state_k is not None:
                self._flush_stage()
                self._flush_outputs()
            for k in sorted(self._states):
                end = (k + 1) * interval
                if closed_only and end > now:
                    continue
                state = self._states.pop(k)
                if k == self._state_k:
                    self._state_k, self._state = None, SketchState(0)
                end = max(min(end, now), min(state.start_ns + 1, end))  # never before its start
                remembered = self._exported_until
                remembered.pop(k, None)
                remembered[k] = end
                while len(remembered) > EXPORTED_MEMORY:
                    del remembered[next(iter(remembered))]
                if not state.empty():
                    parts.append((k, state, end))
        for recorder in list(self._segments.values()):
            parts += recorder.collect(now, closed_only)
        return parts

    def restore(self, parts: list[tuple[int, SketchState, int]]) -> None:
        """Merge back collected parts whose export failed, each into its own interval (sent with the next
        export of that interval: the next tick, as the interval has ended, or the next flush)."""
        mine = [part for part in parts if part[1].segment == self.segment]
        for part in parts:
            if part[1].segment != self.segment and part[1].segment is not None:
                self.for_segment(part[1].segment).restore([part])
        with self._lock:
            for k, state, _ in mine:
                current = self._states.get(k)
                if current is None:
                    self._states[k] = state
                else:
                    current.merge(state)  # start: the earlier of the two
