"""A window's data for the engine, from stored prediction rows (outputs, captured features, joined labels) and the
feature sketch points of its time span.

Which columns a window is judged on: the model's outputs and target always; its features when they were captured in
the events (exact, like the batch path) or sketched. A feature is never reported missing because it was not
captured: in a row window of a model whose events carry no features, the features are not judged (they are judged
on the sketch time windows). Sketch points made with another bucketing (an app instrumented without
``reference=``) are re-bucketed onto the profile's (``NumericSketch.rebucketed``: bounded error, see there).

A classifier whose profile carries a calibration also gets every row's predicted label and class scores, labelled or
not (``WindowData.scored``; not on sketch-only windows): the engine estimates its performance from them (CBPE), so a
window whose labels have not arrived yet has ``estimated_performance`` rows, as ``mlmon evaluate`` has.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from otel_mlmon import semconv
from otel_mlmon.engine.drift import NUMERIC
from otel_mlmon.engine.estimate import ScoredRows
from otel_mlmon.engine.evaluate import LabeledRows, WindowData
from otel_mlmon.engine.profile import ColumnProfile, ReferenceProfile
from otel_mlmon.engine.results import iso_utc_ns
from otel_mlmon.processor.store import Joined, StoredPoint, StoredRows
from otel_mlmon.sketch import CategoricalSketch, NumericSketch, category_key

MISSING = "missing"  # the type of a stored ``ml.feature.missing`` point: bad-value counts of a column
_ABSENT = object()
OUTPUTS = ("prediction", "score", "target")


def window_data(profile: ReferenceProfile, index: int, rows: list[Joined] | StoredRows,
                points: Iterable[StoredPoint], *, features: bool, start_ns: int | None = None,
                end_ns: int | None = None, outputs: bool = True) -> WindowData:
    """The engine's window: ``features`` says whether the features are judged at all (captured or sketched);
    ``outputs`` whether the model outputs and target are (not on sketch-only windows); with the outputs, a
    calibrated classifier's scored rows (every row with a predicted label and class scores)."""
    score_keys = {column: ("" if len(profile.score_columns) == 1 and len(profile.classes) == 2 else label)
                  for label, column in profile.score_columns.items()}
    columns: dict[str, list[Any]]
    scored = ScoredRows() if outputs and profile.task == "classification" and profile.calibration is not None \
        else None
    if isinstance(rows, StoredRows):
        if rows.plain and "" not in profile.classes:
            columns, labeled = _plain_columns(profile, rows, score_keys, outputs, scored)
            return _window(profile, index, columns, labeled, rows.times, points, features=features,
                           start_ns=start_ns, end_ns=end_ns, outputs=outputs, scored=scored)
        times = rows.times
        rows = rows.joined()
    else:
        times = [r.time_ns for r in rows]
    columns = {}
    labeled = LabeledRows()
    for row in rows:
        found = row.outputs
        for column in profile.columns.values():
            if column.role == "prediction" and outputs:
                value = found.get("value") if profile.task == "regression" else found.get("label")
            elif column.role == "score" and outputs:
                value = found.get("scores", {}).get(score_keys.get(column.name, ""))
            elif column.role == "feature" and features:
                value = found.get("features", {}).get(column.name, _ABSENT)
            else:
                continue
            if value is not _ABSENT:
                columns.setdefault(column.name, []).append(value)
        if outputs and row.truth is not None:
            _label(profile, row, labeled)
        if scored is not None and found.get("label") is not None:
            class_scores = _class_scores(profile, found)
            if class_scores is not None:
                scored.y_pred.append(category_key(found["label"]))
                scored.scores.append(class_scores)  # type: ignore[union-attr]  # a list here
    return _window(profile, index, columns, labeled, times, points, features=features, start_ns=start_ns,
                   end_ns=end_ns, outputs=outputs, scored=scored)


def _plain_columns(profile: ReferenceProfile, rows: StoredRows, score_keys: dict[str, str],
                   outputs: bool, scored: ScoredRows | None = None) -> tuple[dict[str, list[Any]], LabeledRows]:
    """``window_data``'s columns and labels of rows without multiclass scores or captured features, a column at a
    time: what the row-by-row path gives them (the same values in the same order), and the scored rows into
    ``scored``."""
    columns: dict[str, list[Any]] = {}
    labeled = LabeledRows()
    if not outputs or not rows.ids:
        return columns, labeled
    regression = profile.task == "regression"
    for column in profile.columns.values():
        if column.role == "prediction":
            columns[column.name] = list(rows.values if regression else rows.labels)
        elif column.role == "score":
            columns[column.name] = list(rows.scores) if score_keys.get(column.name, "") == "" else \
                [None] * len(rows)
    binary = len(profile.classes) == 2
    for truth, label, score, value in zip(rows.truths, rows.labels, rows.scores, rows.values):
        if truth is None:
            continue
        if regression:
            if value is not None:
                labeled.y_true.append(float(truth))
                labeled.y_pred.append(float(value))
        elif label is not None:  # a stored label is its category key already; most truths are strings too
            labeled.y_true.append(truth if type(truth) is str else category_key(truth))
            labeled.y_pred.append(label)
            if binary and score is not None:
                labeled.scores.append([1.0 - score, score])
    if scored is not None and binary:  # a stored label is its category key; the binary score is the positive's
        pairs = [(label, score) for label, score in zip(rows.labels, rows.scores)
                 if label is not None and score is not None]
        scored.y_pred += [label for label, _ in pairs]
        scored.scores += [[1.0 - score, score] for _, score in pairs]
    return columns, labeled


class _PlainChunks:
    """``_plain_columns`` over a window read in chunks (``Store.row_chunks``): the same columns, labels and scored
    rows, in the same order, with numbers kept as float arrays and categories counted chunk by chunk, so that no
    list of every row's Python objects is built (a 250k-row window took ~190 MiB that way)."""

    def __init__(self, profile: ReferenceProfile, score_keys: dict[str, str], scored: ScoredRows | None) -> None:
        self.profile = profile
        self.score_keys = score_keys
        self.scored = scored
        self.labeled = LabeledRows()
        self.numbers: dict[str, list[np.ndarray]] = {}
        self.categories: dict[str, CategoricalSketch] = {}
        self.score_chunks: list[np.ndarray] = []
        self.labeled_score_chunks: list[np.ndarray] = []
        self.rows = 0
        self.first: int | None = None
        self.last: int | None = None
        self.latency_s = 0.0  # sum over labelled rows of (label arrival - event time), in seconds
        self.latency_rows = 0

    def add(self, rows: StoredRows) -> None:
        profile = self.profile
        n = len(rows)
        if not n:
            return
        self.rows += n
        self.first = rows.times[0] if self.first is None else self.first
        self.last = rows.times[-1]
        latencies = [(labeled - at) / 1e9 for at, labeled in zip(rows.times, rows.labeled_ns) if labeled is not None]
        self.latency_s = sum(latencies, self.latency_s)
        self.latency_rows += len(latencies)
        regression = profile.task == "regression"
        for column in profile.columns.values():
            values: list[Any]
            if column.role == "prediction":
                values = rows.values if regression else rows.labels
            elif column.role == "score":
                values = rows.scores if self.score_keys.get(column.name, "") == "" else [None] * n
            else:
                continue
            if column.kind == NUMERIC:  # floats and None, as stored: None is NaN to the sketch either way
                self.numbers.setdefault(column.name, []).append(np.array(values, dtype=np.float64))
            else:
                self.categories.setdefault(column.name, _sketch_of(column, [])).update(values)  # type: ignore
        if regression:
            labeled = self.labeled
            for truth, value in zip(rows.truths, rows.values):
                if truth is not None and value is not None:
                    labeled.y_true.append(float(truth))
                    labeled.y_pred.append(float(value))
            return
        truths = np.fromiter(rows.truths, dtype=object, count=n)
        # Each row's stored label is a string object of its own: rows share one per class (they are kept to the end)
        shared = {label: label for label in set(rows.labels)}
        labels = np.fromiter(map(shared.__getitem__, rows.labels), dtype=object, count=n)
        scores = np.array(rows.scores, dtype=np.float64)  # a stored score is a float or None (SQLite keeps no NaN)
        has_label = labels != None  # noqa: E711 (elementwise)
        joined = (truths != None) & has_label  # noqa: E711
        self.labeled.y_true += [t if type(t) is str else category_key(t) for t in truths[joined].tolist()]
        self.labeled.y_pred += labels[joined].tolist()
        binary = len(profile.classes) == 2
        if binary:
            score = scores[joined]
            score = score[~np.isnan(score)]
            self.labeled_score_chunks.append(np.column_stack((1.0 - score, score)))
        if self.scored is not None and binary:
            both = has_label & ~np.isnan(scores)
            self.scored.y_pred += labels[both].tolist()
            self.score_chunks.append(np.column_stack((1.0 - scores[both], scores[both])))

    def columns(self) -> dict[str, NumericSketch | CategoricalSketch]:
        """The sketch of each output column."""
        sketches: dict[str, NumericSketch | CategoricalSketch] = {}
        for name in self.profile.columns:  # in the profile's order, as ``_window`` makes them
            if name in self.categories:
                sketches[name] = self.categories[name]
            elif name in self.numbers:
                sketches[name] = _sketch_of(self.profile.columns[name], np.concatenate(self.numbers[name]))
        if self.scored is not None and self.score_chunks:
            self.scored.scores = np.concatenate(self.score_chunks)
        if self.labeled_score_chunks:  # an array, not a list of [1 - s, s] lists (~120 bytes a row): the engine
            # takes either (``window_evidence`` reads ``len`` and ``np.asarray``)
            found = np.concatenate(self.labeled_score_chunks)
            if len(found):
                self.labeled.scores = found  # type: ignore[assignment]
        return sketches


def window_data_chunks(profile: ReferenceProfile, index: int, chunks: Iterable[StoredRows],
                       points: Iterable[StoredPoint], *, features: bool, start_ns: int | None = None,
                       end_ns: int | None = None, outputs: bool = True) -> tuple[WindowData, float | None] | None:
    """``window_data`` of rows read in chunks (``Store.row_chunks``), and the mean seconds from a row's event
    time to its label's arrival (None: no labelled row). None when a row carries multiclass scores or captured
    features, or the profile has a class ``""`` (then read the rows whole, for ``window_data``)."""
    if "" in profile.classes or not outputs:
        return None
    score_keys = {column: ("" if len(profile.score_columns) == 1 and len(profile.classes) == 2 else label)
                  for label, column in profile.score_columns.items()}
    scored = ScoredRows() if profile.task == "classification" and profile.calibration is not None else None
    plain = _PlainChunks(profile, score_keys, scored)
    for chunk in chunks:
        if not chunk.plain:
            return None
        plain.add(chunk)
    sketches = plain.columns()
    if features:
        _sketched(profile, points, sketches)
    judged = {name for name, column in profile.columns.items() if column.role in OUTPUTS or
              (column.role == "feature" and features)}
    if start_ns is not None:
        start, end = iso_utc_ns(start_ns), iso_utc_ns(end_ns if end_ns is not None else start_ns)
    elif plain.first is not None and plain.last is not None:
        start, end = iso_utc_ns(plain.first), iso_utc_ns(plain.last)  # rows come in event-time order
    else:
        start = end = None
    data = WindowData("analysis", index, plain.rows, sketches, plain.labeled, start, end, columns=frozenset(judged),
                      scored=scored)
    return data, (plain.latency_s / plain.latency_rows if plain.latency_rows else None)


def _window(profile: ReferenceProfile, index: int, columns: dict[str, list[Any]], labeled: LabeledRows,
            times: list[int], points: Iterable[StoredPoint], *, features: bool, start_ns: int | None,
            end_ns: int | None, outputs: bool, scored: ScoredRows | None) -> WindowData:
    sketches: dict[str, NumericSketch | CategoricalSketch] = {}
    for name, values in columns.items():
        sketches[name] = _sketch_of(profile.columns[name], values)
    if features:
        _sketched(profile, points, sketches)
    judged = {name for name, column in profile.columns.items()
              if (column.role in OUTPUTS and outputs) or (column.role == "feature" and features)}
    if start_ns is None:
        start, end = (iso_utc_ns(min(times)), iso_utc_ns(max(times))) if times else (None, None)
    else:
        start, end = iso_utc_ns(start_ns), iso_utc_ns(end_ns if end_ns is not None else start_ns)
    return WindowData("analysis", index, len(times), sketches, labeled, start, end, columns=frozenset(judged),
                      scored=scored)


def _sketch_of(column: ColumnProfile, values: list[Any] | np.ndarray) -> NumericSketch | CategoricalSketch:
    sketch: NumericSketch | CategoricalSketch
    if column.kind == NUMERIC:
        assert isinstance(column.sketch, NumericSketch)
        sketch = NumericSketch(column.sketch.center, column.sketch.scale, column.sketch.precision)
    else:
        sketch = CategoricalSketch()
    sketch.update(values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object))
    return sketch


def _label(profile: ReferenceProfile, row: Joined, labeled: LabeledRows) -> None:
    outputs = row.outputs
    if profile.task == "regression":
        if outputs.get("value") is not None:
            labeled.y_true.append(float(row.truth))
            labeled.y_pred.append(float(outputs["value"]))
        return
    if outputs.get("label") is None:
        return
    labeled.y_true.append(category_key(row.truth))
    labeled.y_pred.append(category_key(outputs["label"]))
    class_scores = _class_scores(profile, outputs)
    if class_scores is not None:
        labeled.scores.append(class_scores)


def _class_scores(profile: ReferenceProfile, outputs: dict[str, Any]) -> list[float] | None:
    """A row's score of each of the profile's classes, in their order: ``[1 - s, s]`` from a binary model's one
    score, else the per-class scores when every class has one; None when the row has neither."""
    scores = outputs.get("scores", {})
    if len(profile.classes) == 2 and "" in scores:
        return [1.0 - scores[""], scores[""]]
    if scores and all(c in scores for c in profile.classes):
        return [scores[c] for c in profile.classes]
    return None


def _sketched(profile: ReferenceProfile, points: Iterable[StoredPoint],
              sketches: dict[str, NumericSketch | CategoricalSketch]) -> None:
    """Merge the sketch points of features the events did not capture; fold their bad-value counts in."""
    captured = set(sketches)
    merged: dict[str, NumericSketch | CategoricalSketch] = {}
    bad: dict[str, dict[str, int]] = {}
    for point in points:
        name = point.column
        if name in captured or name == semconv.ML_PREDICTION_VALUE:
            continue  # captured values are exact; the regression output comes from the events
        kind = point.sketch.get("type")
        if kind == MISSING:
            reasons = bad.setdefault(name, {})
            reasons[point.sketch["reason"]] = reasons.get(point.sketch["reason"], 0) + int(point.sketch["count"])
            continue
        reference = profile.columns.get(name)
        sketch: NumericSketch | CategoricalSketch
        if kind == "numeric":
            sketch = NumericSketch.from_dict(point.sketch)
            if reference is not None and isinstance(reference.sketch, NumericSketch) \
                    and not sketch.same_bucketing(reference.sketch):
                sketch = sketch.rebucketed(reference.sketch.center, reference.sketch.scale,
                                           reference.sketch.precision)
        else:
            sketch = CategoricalSketch.from_dict(point.sketch)
        into = merged.get(name)
        if into is None:
            merged[name] = sketch
        elif type(into) is type(sketch):
            into.merge(sketch)  # type: ignore[arg-type]
    for name, reasons in bad.items():
        found = merged.get(name)
        if found is None:
            reference = profile.columns.get(name)
            if reference is None:
                continue
            found = merged[name] = _sketch_of(reference, [])
        if isinstance(found, NumericSketch):
            found.add_bad(missing=reasons.get("missing", 0), non_finite=reasons.get("non_finite", 0),
                           invalid=reasons.get("invalid", 0))
        else:
            found.missing += sum(reasons.values())
    sketches.update(merged)
