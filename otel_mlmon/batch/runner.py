"""The batch path: reference profiles built from files, and files evaluated window by window.

Files are read in row batches; rows accumulate into per-window sketches (the same sketches the instrumentation
sends) and per-window joined labels, and the engine turns each window into results. Row windows are evaluated as
soon as they are complete, so memory is bounded by the open windows, not by the file.

Segments (``Columns.segment_by``): the segments are chosen on the reference (``engine.segments.choose_segments``)
and each window keeps one accumulator per segment beside the whole window's, fed with that segment's rows; each
segment gets its own reference profile (with the whole reference's classes) and its windows are judged against it
(rows of a segment the reference did not have, against the whole reference). Fairness
(``Columns.sensitive_column``): each window also keeps every row's sensitive value, predicted label and joined
label (None where it has none) as ``engine.fairness.SensitiveRows``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from otel_mlmon.batch.order import event_ranks
from otel_mlmon.batch.reader import (
    MAX_COLUMNS,
    DataError,
    DataFile,
    _pyarrow,
    epoch_seconds,
    is_numeric_type,
    is_time_type,
)
from otel_mlmon.engine.columns import profile_from_windows, sorted_classes
from otel_mlmon.engine.drift import CATEGORICAL, NUMERIC
from otel_mlmon.engine.estimate import ScoredRows
from otel_mlmon.engine.evaluate import (
    LabeledRows,
    Policy,
    WindowData,
    evaluate_window,
)
from otel_mlmon.engine.fairness import SensitiveRows
from otel_mlmon.engine.profile import ReferenceProfile, choose_bucketing
from otel_mlmon.engine.results import WindowResult, iso_utc, with_segment
from otel_mlmon.engine.segments import MAX_SEGMENTS, SegmentedProfile, assign_segments, choose_segments
from otel_mlmon.engine.windows import WindowSpec
from otel_mlmon.sketch import CategoricalSketch, NumericSketch, category_key, category_keys, update_columns


@dataclass
class Columns:
    """Which file columns play which role (the column flags of ``mlmon evaluate``)."""

    id_column: str | None = None
    timestamp_column: str | None = None
    target_column: str | None = None
    prediction_column: str | None = None
    score_column: str | None = None
    score_columns: dict[str, str] = field(default_factory=dict)  # class -> column
    features: list[str] | None = None
    categorical: list[str] = field(default_factory=list)
    task: str | None = None
    segment_by: str | None = None  # results also per value of this column (a feature or not)
    sensitive_column: str | None = None  # fairness across this column's values (not a default feature)

    def outputs(self) -> list[str]:
        cols = [self.prediction_column] if self.prediction_column else []
        cols += [self.score_column] if self.score_column else []
        return cols + list(self.score_columns.values())

    def not_features(self) -> set[str]:
        """Columns that are not features unless named in ``features``."""
        return {c for c in (self.id_column, self.timestamp_column, self.target_column, self.sensitive_column)
                if c} | set(self.outputs())


def open_data(source: str | DataFile, max_columns: int = MAX_COLUMNS) -> DataFile:
    """A data file by its path, or data already opened (a DataFrame read through ``api.FrameData``) as it is."""
    return source if isinstance(source, DataFile) else DataFile(str(source), max_columns)


class LooksLikeIdWarning(UserWarning):
    """A reference column has a different value on every row, as an id has, and is profiled as a feature."""


ID_CHECK_ROWS = 1_000_000  # the id check looks at this many rows at most (memory: one hash a row and column)
ID_CHECK_MIN_ROWS = 50  # below this, distinct values on every row say little


def _warn_id_like(data: DataFile, types: dict[str, Any], columns: Columns) -> None:
    """Warn about default features (string or integer columns) whose values differ on every row: an id column
    left out of ``--id-column`` is otherwise profiled as a feature (and, in the analysis, drifts in every window,
    each id being new)."""
    if columns.features is not None:  # features chosen by name are what the user asked for
        return
    pa = _pyarrow()
    candidates = [name for name, kind in types.items() if name not in columns.not_features() and (
        pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind))]
    seen: dict[str, set[int]] = {name: set() for name in candidates}
    rows = 0
    batches = data.batches(candidates) if candidates else iter(())
    for batch in batches:
        for name in list(seen):
            array = batch[name]
            head = array[:256].tolist()  # most columns repeat a value early: a cheap look first (wide files)
            if len(set(head)) < len(head):
                del seen[name]
                continue
            values = array.tolist()
            hashes = seen[name]
            before = len(hashes)
            hashes.update(map(hash, values))
            empty = bool(np.isnan(array).any()) if array.dtype.kind == "f" else None in values
            if empty or len(hashes) - before != len(values):
                del seen[name]  # a repeated or missing value: not an id
        rows += len(next(iter(batch.values())))
        if not seen or rows >= ID_CHECK_ROWS:
            break
    close = getattr(batches, "close", None)
    if close is not None:
        close()  # the file reader, at once
    if rows < ID_CHECK_MIN_ROWS:
        return
    for name in seen:
        warnings.warn(LooksLikeIdWarning(
            f"{data.path}: column {name!r} has a different value on every row ({rows:,} rows read), as an id has; "
            f"it is profiled as a feature and judged for drift. If it is an id, name it with --id-column {name!r} "
            "(id_column= in Python); to keep it as a feature, list the features with --features"), stacklevel=3)


def _check_columns(data: DataFile, columns: Columns, need_target: bool) -> dict[str, Any]:
    schema = data.schema()
    names = list(schema.names)
    wanted = [c for c in (columns.id_column, columns.timestamp_column, columns.prediction_column) if c]
    wanted += columns.outputs() + (columns.features or []) + columns.categorical
    wanted += [c for c in (columns.segment_by, columns.sensitive_column) if c]
    if need_target and columns.target_column:
        wanted.append(columns.target_column)
    missing = [c for c in dict.fromkeys(wanted) if c not in names]
    if missing:
        raise DataError(f"{data.path}: no column {', '.join(repr(c) for c in missing)} (columns: {', '.join(names)})")
    if columns.timestamp_column:
        kind = schema.field(columns.timestamp_column).type
        if not (is_time_type(kind) or is_numeric_type(kind) or str(kind) in ("string", "large_string")):
            raise DataError(f"{data.path}: timestamp column {columns.timestamp_column!r} has type {kind}; "
                            "expected a timestamp, ISO 8601 strings or epoch seconds")
    return {name: schema.field(name).type for name in names}


def _feature_kinds(types: dict[str, Any], columns: Columns) -> dict[str, str]:
    features = columns.features if columns.features is not None else [
        n for n in types if n not in columns.not_features()]
    unknown = [c for c in columns.categorical if c not in features]
    if unknown:
        raise DataError(f"--categorical names {', '.join(map(repr, unknown))}, which are not features "
                        f"(features: {', '.join(features)})")
    return {name: CATEGORICAL if name in columns.categorical or not is_numeric_type(types[name]) else NUMERIC
            for name in features}


def _output_kinds(columns: Columns, task: str) -> dict[str, tuple[str, str]]:
    """Output columns -> (kind, role)."""
    out: dict[str, tuple[str, str]] = {}
    if columns.prediction_column:
        out[columns.prediction_column] = (CATEGORICAL if task == "classification" else NUMERIC, "prediction")
    for column in ([columns.score_column] if columns.score_column else []) + list(columns.score_columns.values()):
        out[column] = (NUMERIC, "score")
    return out


class _Accumulator:
    """Sketches and labels of one window (or of one segment of a window: ``segments`` holds those of a whole
    window); ``sensitive`` collects the rows fairness reads when a sensitive column is given."""

    def __init__(self, kinds: dict[str, str], bucketing: dict[str, tuple[float, float]],
                 sensitive: SensitiveRows | None = None) -> None:
        self.sketches: dict[str, NumericSketch | CategoricalSketch] = {
            name: NumericSketch(*bucketing.get(name, (0.0, 1.0))) if kind == NUMERIC else CategoricalSketch()
            for name, kind in kinds.items()}
        self.rows = 0
        self.labeled = LabeledRows()
        self.scored = ScoredRows()
        self.first = math.inf
        self.last = -math.inf
        self.sensitive = sensitive
        self.segments: dict[str, _Accumulator] = {}

    def add(self, batch: dict[str, np.ndarray], mask: np.ndarray | None, times: np.ndarray | None) -> None:
        count = int(mask.sum()) if mask is not None else len(next(iter(batch.values())))
        if count == 0:
            return
        self.rows += count
        numeric = [name for name, sketch in self.sketches.items()
                   if isinstance(sketch, NumericSketch) and batch[name].dtype.kind == "f"]
        if numeric:  # one vectorised pass over the numeric columns
            update_columns([self.sketches[name] for name in numeric],  # type: ignore[misc]
                           [batch[name] if mask is None else batch[name][mask] for name in numeric])
        for name, sketch in self.sketches.items():
            if name not in numeric:
                sketch.update(batch[name] if mask is None else batch[name][mask])
        if times is not None:
            chosen = times if mask is None else times[mask]
            finite = chosen[np.isfinite(chosen)]
            if finite.size:
                self.first, self.last = min(self.first, float(finite.min())), max(self.last, float(finite.max()))


@dataclass
class _Plan:
    """Everything needed to turn a file into windows."""

    columns: Columns
    spec: WindowSpec
    kinds: dict[str, str]  # sketched columns (features, outputs) -> kind
    bucketing: dict[str, tuple[float, float]]
    task: str
    classes: list[str]
    labels: dict[str, Any] | None = None  # id -> label, from --labels
    segments: list[str] | None = None  # the reference's segments of columns.segment_by, in order
    segment_bucketing: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # of each segment
    positive: str | None = None  # fairness's favourable class (None: a binary model's positive class)

    @property
    def fairness(self) -> bool:
        """Whether windows collect the sensitive column's rows (a classifier's predicted labels are needed)."""
        return bool(self.columns.sensitive_column and self.columns.prediction_column
                    and self.task == "classification")

    def accumulator(self, segment: str | None = None) -> _Accumulator:
        """A new window's (or segment's) accumulator."""
        sensitive = None
        if self.fairness:
            assert self.columns.sensitive_column is not None
            has_labels = self.labels is not None or bool(self.columns.target_column)
            sensitive = SensitiveRows(self.columns.sensitive_column, y_true=[] if has_labels else None,
                                      positive=self.positive)
        bucketing = self.segment_bucketing.get(segment, self.bucketing) if segment is not None else self.bucketing
        return _Accumulator(self.kinds, bucketing, sensitive)


def _labels_of(batch: dict[str, np.ndarray], plan: _Plan) -> tuple[np.ndarray, np.ndarray] | None:
    """(mask of labeled rows, their labels) of a batch."""
    target = plan.columns.target_column
    if plan.labels is not None and plan.columns.id_column:
        ids = batch[plan.columns.id_column]
        found = [plan.labels.get(str(i)) for i in ids.tolist()]
        mask = np.array([v is not None for v in found], dtype=bool)
        return mask, np.asarray(found, dtype=object)
    if target and target in batch:
        values = batch[target]
        if values.dtype.kind == "f":
            mask = ~np.isnan(values)
        else:
            mask = np.array([v is not None for v in values.tolist()], dtype=bool)
        return mask, values
    return None


def _scored(batch: dict[str, np.ndarray], plan: _Plan, mask: np.ndarray | None) -> ScoredRows:
    """Every row's prediction and class scores, labelled or not (estimated performance reads them)."""
    columns = plan.columns
    if plan.task != "classification" or not columns.prediction_column:
        return ScoredRows()
    if columns.score_columns and all(c in columns.score_columns for c in plan.classes):
        names = [columns.score_columns[c] for c in plan.classes]
        scores = np.column_stack([np.asarray(batch[n], dtype=np.float64) for n in names])
    elif columns.score_column and len(plan.classes) == 2:
        positive = np.asarray(batch[columns.score_column], dtype=np.float64)
        scores = np.column_stack([1.0 - positive, positive])
    else:
        return ScoredRows()
    predicted = batch[columns.prediction_column]
    if mask is not None:
        predicted, scores = predicted[mask], scores[mask]
    return ScoredRows(category_keys(predicted), scores.tolist())


def _joined(batch: dict[str, np.ndarray], plan: _Plan, mask: np.ndarray | None) -> LabeledRows:
    found = _labels_of(batch, plan)
    if found is None or not plan.columns.prediction_column:
        return LabeledRows()
    labeled, labels = found
    if mask is not None:
        labeled = labeled & mask
    if not labeled.any():
        return LabeledRows()
    predicted = batch[plan.columns.prediction_column][labeled]
    truth = labels[labeled]
    rows = LabeledRows()
    if plan.task == "regression":
        rows.y_true = [float(v) for v in truth.tolist()]
        rows.y_pred = [float(v) for v in predicted.tolist()]
        return rows
    rows.y_true = category_keys(truth)
    rows.y_pred = category_keys(predicted)
    if plan.columns.score_columns:
        rows.scores = np.column_stack([batch[plan.columns.score_columns[c]][labeled] for c in plan.classes]).tolist()
    elif plan.columns.score_column and len(plan.classes) == 2:
        positive = batch[plan.columns.score_column][labeled]
        rows.scores = np.column_stack([1.0 - positive, positive]).tolist()
    return rows


def _sensitive_rows(batch: dict[str, np.ndarray], plan: _Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Each row's sensitive value, predicted label and true label (None where it has none; no array without a
    label source), as the sketches key them."""
    assert plan.columns.sensitive_column is not None and plan.columns.prediction_column is not None

    def keys(values: Any) -> np.ndarray:
        return np.asarray([category_key(v) for v in values], dtype=object)

    groups = keys(batch[plan.columns.sensitive_column].tolist())
    predicted = keys(batch[plan.columns.prediction_column].tolist())
    found = _labels_of(batch, plan)
    if found is None:
        return groups, predicted, None
    labeled, labels = found
    truth = np.full(len(groups), None, dtype=object)
    truth[labeled] = keys(np.asarray(labels, dtype=object)[labeled].tolist())
    return groups, predicted, truth


def _windows(data: DataFile, plan: _Plan, period: str, on_window: Callable[[WindowData, str | None], None],
             progress: Callable[[int], None] | None = None) -> None:
    """Stream a file into windows; ``on_window`` gets each complete window with its segment (None: the whole
    window, given first, then its segments' in the reference's order), in window order (row windows as soon
    as they and the windows before them are complete).

    Row windows follow event-time order (``order.event_ranks``): a file already in order is streamed with one
    window open at a time; an unsorted one is streamed too, each row going to the window of its rank, and a window
    closes once it holds all its rows. Time windows are numbered by the windows that have rows: the earliest is 0,
    and an empty window takes no number.
    """
    spec = plan.spec
    columns = plan.columns
    ranks = None
    if spec.by_rows and columns.timestamp_column:  # ids break ties when the file has them (reference data may not)
        ids = columns.id_column if columns.id_column in data.columns() else None
        ranks = event_ranks(data, columns.timestamp_column, ids)
    total = (ranks.size if ranks is not None else data.num_rows()) if spec.chunks is not None or ranks is not None \
        else None
    expected: dict[float, int] = {}
    if ranks is not None:  # rows each window will hold, to close it once complete
        sizes = np.bincount(spec.rank_windows(np.arange(ranks.size, dtype=np.int64), total))
        expected = {float(k): int(n) for k, n in enumerate(sizes.tolist()) if n}
    open_windows: dict[float, _Accumulator] = {}
    complete: set[float] = set()  # complete row windows waiting for an earlier one to close
    first_row = 0

    def close(key: float) -> None:
        accumulator = open_windows.pop(key)
        index = int(key) if spec.by_rows else len(closed)
        closed.append(key)
        start = iso_utc(accumulator.first) if spec.by_rows else iso_utc(key)
        end = iso_utc(accumulator.last) if spec.by_rows else iso_utc(key + (spec.seconds or 0))
        known = plan.segments or []
        order = [s for s in known if s in accumulator.segments] + sorted(set(accumulator.segments) - set(known))
        for segment, part in [(None, accumulator), *((s, accumulator.segments[s]) for s in order)]:
            for sketch in part.sketches.values():
                if isinstance(sketch, NumericSketch):
                    sketch.compact()  # a small window of a wide file: a few values per column
            on_window(WindowData(period, index, part.rows, part.sketches, part.labeled, start, end,
                                 scored=part.scored, sensitive=part.sensitive), segment)

    def feed(accumulator: _Accumulator, batch: dict[str, np.ndarray], mask: np.ndarray | None,
             times: np.ndarray | None, sensitive: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None) -> None:
        accumulator.add(batch, mask, times)
        accumulator.labeled.extend(_joined(batch, plan, mask))
        accumulator.scored.extend(_scored(batch, plan, mask))
        rows = accumulator.sensitive
        if rows is not None and sensitive is not None:
            groups, predicted, truth = sensitive
            rows.groups += (groups if mask is None else groups[mask]).tolist()
            rows.y_pred += (predicted if mask is None else predicted[mask]).tolist()
            if rows.y_true is not None and truth is not None:
                rows.y_true += (truth if mask is None else truth[mask]).tolist()

    closed: list[float] = []
    for batch in data.batches():
        n = len(next(iter(batch.values())))
        times = (epoch_seconds(batch[columns.timestamp_column], data.path, columns.timestamp_column)
                 if columns.timestamp_column else None)
        if ranks is not None:
            keys = spec.rank_windows(ranks[first_row: first_row + n], total).astype(np.float64)
        elif spec.by_rows:
            keys = spec.row_windows(first_row, n, total).astype(np.float64)
        else:
            assert times is not None
            if np.isnan(times).any():
                raise DataError(f"{data.path}: timestamp column {columns.timestamp_column!r} has empty values; "
                                "time windows need a time on every row")
            keys = spec.time_windows(times)
        first_row += n
        unique = np.unique(keys)
        sensitive = _sensitive_rows(batch, plan) if plan.fairness else None
        names = (assign_segments(batch[columns.segment_by], plan.segments)
                 if columns.segment_by and plan.segments is not None else None)
        for key in unique.tolist():
            mask = None if unique.size == 1 else keys == key
            accumulator = open_windows.get(key)
            if accumulator is None:
                accumulator = open_windows[key] = plan.accumulator()
            feed(accumulator, batch, mask, times, sensitive)
            if names is None:
                continue
            for segment in sorted(set((names if mask is None else names[mask]).tolist())):
                within = names == segment if mask is None else (names == segment) & mask
                part = accumulator.segments.get(segment)
                if part is None:
                    part = accumulator.segments[segment] = plan.accumulator(segment)
                feed(part, batch, within, times, sensitive)
        if ranks is not None:  # windows holding all their rows are complete; close them in window order
            complete.update(k for k in unique.tolist() if open_windows[k].rows == expected[k])
            while float(len(closed)) in complete:  # row windows are 0, 1, 2, … : the next one to close
                complete.remove(float(len(closed)))
                close(float(len(closed)))
        elif spec.by_rows:  # earlier row windows are complete
            for key in sorted(k for k in open_windows if k < unique.max()):
                close(key)
        if progress is not None:
            progress(n)
    for key in sorted(open_windows):
        close(key)


def load_labels(path: str | DataFile, columns: Columns) -> dict[str, Any]:
    """Labels by id (as text) of a labels file: one label per id, the first wins.

    Raises:
        ValueError: no id or target column to join on (bad usage, exit code 2).
        DataError: the file or its columns.
    """
    if not columns.id_column or not columns.target_column:
        raise ValueError("--labels needs --id-column and --target-column (the labels file has both): name them, "
                         "or use a reference profile that does")
    data = open_data(path)
    _check_columns(data, Columns(id_column=columns.id_column), need_target=False)
    if columns.target_column not in data.columns():
        raise DataError(f"{data.path}: no column {columns.target_column!r} (columns: {', '.join(data.columns())})")
    labels: dict[str, Any] = {}
    for batch in data.batches([columns.id_column, columns.target_column]):
        for key, value in zip(batch[columns.id_column].tolist(), batch[columns.target_column].tolist()):
            if key is not None and value is not None and not (isinstance(value, float) and math.isnan(value)):
                labels.setdefault(str(key), value)  # one label per id: the first wins
    return labels


def _infer_task(columns: Columns, types: dict[str, Any]) -> str:
    if columns.task:
        return columns.task
    if columns.score_column or columns.score_columns:
        return "classification"
    if columns.prediction_column and not is_numeric_type(types[columns.prediction_column]):
        return "classification"
    return "regression"


def _classes(data: DataFile, columns: Columns, task: str) -> list[str]:
    if task != "classification":
        return []
    if columns.score_columns:
        return sorted_classes(columns.score_columns)
    seen: set[str] = set()
    for name in (columns.prediction_column, columns.target_column):
        if name and name in data.columns():
            for batch in data.batches([name]):
                seen.update(k for k in (category_key(v) for v in batch[name].tolist()) if k is not None)
    return sorted_classes(seen)


@dataclass
class ReferenceBuild:
    """What ``build_reference_profile`` read from the reference: the profile, its windows and, with segments, the
    segmented profile (its ``whole`` is ``profile``) and each segment's windows."""

    profile: ReferenceProfile
    windows: list[WindowData]
    segmented: SegmentedProfile | None = None
    segment_windows: dict[str, list[WindowData]] = field(default_factory=dict)


def _segments_of(data: DataFile, column: str, max_segments: int) -> list[str]:
    """The reference's segments of ``column`` (``engine.segments.choose_segments`` over the whole column)."""
    parts = [batch[column] for batch in data.batches([column])]
    values = np.concatenate(parts) if parts else np.zeros(0)
    return choose_segments(values, max_segments, column)


def build_reference_profile(path: str | DataFile, columns: Columns, spec: WindowSpec, model: str,
                            version: str = "", labels_path: str | DataFile | None = None,
                            policy: Policy | None = None, progress: Callable[[int], None] | None = None,
                            max_columns: int = MAX_COLUMNS, max_segments: int = MAX_SEGMENTS,
                            positive_class: str | None = None) -> ReferenceBuild:
    """A reference profile from a data file (or data already opened), the reference windows it was built from,
    and, when ``columns.segment_by`` is set, a profile per segment (``SegmentedProfile``). With
    ``columns.sensitive_column``, the windows carry their rows for fairness (``positive_class``: the favourable
    class).

    Warns (``LooksLikeIdWarning``) about default features that look like ids (a different value on every row).
    """
    data = open_data(path, max_columns)
    path = data.path
    # Ids only join a labels file: reference data that carries its target (training data) needs none.
    types = _check_columns(data, columns if labels_path is not None else replace(columns, id_column=None),
                           need_target=labels_path is None)
    _warn_id_like(data, types, columns)
    task = _infer_task(columns, types)
    kinds = _feature_kinds(types, columns)
    outputs = _output_kinds(columns, task)
    all_kinds = {**kinds, **{name: kind for name, (kind, _) in outputs.items()}}
    # Pass 1: a first sketch of each numeric column chooses its bucketing (median and spread).
    first = {name: NumericSketch() for name, kind in all_kinds.items() if kind == NUMERIC}
    for batch in data.batches(list(first)) if first else ():
        for name, sketch in first.items():
            sketch.update(batch[name])
    bucketing = {name: choose_bucketing(sketch) for name, sketch in first.items()}
    classes = _classes(data, columns, task)
    if task == "classification" and columns.score_column and len(classes) != 2:
        raise DataError(f"{path}: --score-column is for binary models, but the labels have {len(classes)} "
                        f"classes ({', '.join(classes[:10])}); use --score-columns label=column,…")
    segments = _segments_of(data, columns.segment_by, max_segments) if columns.segment_by else None
    plan = _Plan(columns, spec, all_kinds, bucketing, task, classes,
                 load_labels(labels_path, columns) if labels_path is not None else None, segments,
                 positive=positive_class)
    windows: list[WindowData] = []
    segment_windows: dict[str, list[WindowData]] = {}

    def keep(window: WindowData, segment: str | None) -> None:
        (windows if segment is None else segment_windows.setdefault(segment, [])).append(window)

    _windows(data, plan, "reference", keep, progress)
    score_columns = dict(columns.score_columns) if columns.score_columns else (
        {classes[1]: columns.score_column} if columns.score_column and len(classes) == 2 else {})

    def profile_of(parts: list[WindowData]) -> ReferenceProfile:
        return profile_from_windows(
            parts, all_kinds, spec, model=model, version=version, task=task,
            prediction_column=columns.prediction_column, score_columns=score_columns,
            target_column=columns.target_column, classes=classes, id_column=columns.id_column,
            timestamp_column=columns.timestamp_column, policy=policy)

    profile = profile_of(windows)
    segmented = None
    if columns.segment_by and segments is not None:
        segmented = SegmentedProfile(columns.segment_by, profile, {
            segment: profile_of(segment_windows[segment]) for segment in segments if segment in segment_windows},
            max_segments)
    return ReferenceBuild(profile, windows, segmented, segment_windows)


def build_profile(path: str | DataFile, columns: Columns, spec: WindowSpec, model: str, version: str = "",
                  labels_path: str | DataFile | None = None, policy: Policy | None = None,
                  progress: Callable[[int], None] | None = None,
                  max_columns: int = MAX_COLUMNS) -> tuple[ReferenceProfile, list[WindowData]]:
    """A reference profile from a data file (or data already opened), and the reference windows it was built from
    (``build_reference_profile`` without segments).

    Warns (``LooksLikeIdWarning``) about default features that look like ids (a different value on every row).
    """
    built = build_reference_profile(path, replace(columns, segment_by=None), spec, model, version, labels_path,
                                    policy, progress, max_columns)
    return built.profile, built.windows


def columns_from_profile(profile: ReferenceProfile, given: Columns) -> Columns:
    """The column flags, defaulted from the profile where the command line is silent."""
    score_columns = given.score_columns or ({} if given.score_column else
                                            (profile.score_columns if len(profile.score_columns) > 1 else {}))
    score_column = given.score_column or (next(iter(profile.score_columns.values()))
                                          if len(profile.score_columns) == 1 and not given.score_columns else None)
    return Columns(
        id_column=given.id_column or profile.id_column,
        timestamp_column=given.timestamp_column or profile.timestamp_column,
        target_column=given.target_column or profile.target_column,
        prediction_column=given.prediction_column or profile.prediction_column,
        score_column=score_column, score_columns=score_columns,
        features=[c.name for c in profile.features()], task=profile.task, segment_by=given.segment_by,
        sensitive_column=given.sensitive_column)


def column_kinds(profile: ReferenceProfile, types: dict[str, Any], columns: Columns
                 ) -> tuple[dict[str, str], dict[str, tuple[float, float]]]:
    """What the analysis columns are sketched as (the profile's kind; a column the reference did not have by its
    type, so it is reported as added) and the numeric ones' bucketing: the local and the Spark path's plan."""
    kinds = {c.name: c.kind for c in profile.columns.values() if c.name in types}
    bucketing = {c.name: (c.sketch.center, c.sketch.scale) for c in profile.columns.values()
                 if isinstance(c.sketch, NumericSketch)}
    extra = [n for n in types if n not in profile.columns and n not in columns.not_features()
             and columns.features is None]
    for name in extra:  # columns the reference did not have: sketched so they are reported as added
        kinds[name] = NUMERIC if is_numeric_type(types[name]) else CATEGORICAL
    return kinds, bucketing


def evaluate_file(profile: ReferenceProfile, path: str | DataFile, columns: Columns,
                  labels_path: str | DataFile | None = None, policy: Policy | None = None,
                  progress: Callable[[int], None] | None = None, spec: WindowSpec | None = None,
                  max_columns: int = MAX_COLUMNS,
                  observe: Callable[[WindowData, list[WindowResult]], None] | None = None,
                  segmented: SegmentedProfile | None = None,
                  positive_class: str | None = None) -> Iterator[WindowResult]:
    """Window results of the analysis file (or data already opened), window by window; ``observe`` gets each
    whole window with its results (the report's ``ReportData.add``).

    With ``segmented`` (whose column is ``columns.segment_by``), each window's results are followed by its
    segments' (``SegmentWindowResult``), each judged against its segment's profile. With
    ``columns.sensitive_column``, each window's results include fairness (``positive_class``: the favourable class).
    """
    data = open_data(path, max_columns)
    types = _check_columns(data, columns, need_target=False)
    kinds, bucketing = column_kinds(profile, types, columns)
    if columns.segment_by and (segmented is None or segmented.column != columns.segment_by):
        raise ValueError(f"segments of {columns.segment_by!r} need a reference profile with that column's "
                         "segments (engine.segments.SegmentedProfile)")
    plan = _Plan(columns, spec or profile.window, kinds, bucketing, profile.task, profile.classes,
                 load_labels(labels_path, columns) if labels_path is not None else None,
                 list(segmented.segments) if segmented is not None and columns.segment_by else None,
                 positive=positive_class)
    if plan.segments is not None and segmented is not None:
        plan.segment_bucketing = {
            name: {c.name: (c.sketch.center, c.sketch.scale) for c in part.columns.values()
                   if isinstance(c.sketch, NumericSketch)} for name, part in segmented.segments.items()}
    results: list[WindowResult] = []

    def judge(window: WindowData, segment: str | None) -> None:
        if segment is not None and segmented is not None:
            results.extend(with_segment(r, segment)
                           for r in evaluate_window(segmented.profile_for(segment), window, policy))
            return
        found = evaluate_window(profile, window, policy)
        if observe is not None:
            observe(window, found)
        results.extend(found)

    _windows(data, plan, "analysis", judge, progress)
    yield from results
