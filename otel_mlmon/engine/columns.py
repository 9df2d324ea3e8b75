"""Building reference profiles, and the engine on in-memory columns.

``profile_from_windows`` is the one place a profile is assembled (roles, classes, outputs, target, reference
values and performance, the scores' calibration for performance estimation), from reference windows; the batch
path (``mlmon reference build``, ``mlmon evaluate``) feeds it the windows of a file. ``build_profile`` is the
same for a table already in memory (the demo, the processor's bootstrap). ``sketch_columns`` makes the window
sketches the rest of the engine reads: numeric columns are sketched together (one vectorised pass), categorical
ones counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from otel_mlmon.engine.drift import CATEGORICAL, NUMERIC
from otel_mlmon.engine.estimate import calibrate
from otel_mlmon.engine.evaluate import LabeledRows, Policy, WindowData, performance, reference_values
from otel_mlmon.engine.profile import TASKS, ColumnProfile, ReferenceProfile, bin_keys, choose_bucketing
from otel_mlmon.engine.windows import WindowSpec
from otel_mlmon.sketch import CategoricalSketch, NumericSketch, category_key, update_columns

BUCKETING_SAMPLE = 16_384  # rows that choose a column's center and scale (median and IQR within ~1 %)


def sorted_classes(keys: Iterable[str]) -> list[str]:
    """Class keys in the order scikit-learn's ``classes_`` has them (``np.unique`` of the labels): numerically
    when every key is a number (labels 2 and 10: 10 is the positive class, as ``predict_proba[:, 1]`` says; as
    text, 2 came last and every binary metric was the other class's), else as text (``"no"`` < ``"yes"``)."""
    found = list(keys)
    try:
        numbers = [float(k) for k in found]
    except ValueError:
        return sorted(found)
    if not all(math.isfinite(n) for n in numbers):
        return sorted(found)
    return [k for _, k in sorted(zip(numbers, found))]


def kind_of(values: np.ndarray) -> str:
    return NUMERIC if values.dtype.kind in "fiu" else CATEGORICAL


def choose_all_bucketing(columns: Mapping[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """(center, scale) of every numeric column, from a first sketch of its first rows."""
    numeric = [name for name, values in columns.items() if kind_of(values) == NUMERIC]
    if not numeric:
        return {}
    first = [NumericSketch() for _ in numeric]
    update_columns(first, [columns[n][:BUCKETING_SAMPLE] for n in numeric])
    return {name: choose_bucketing(sketch) for name, sketch in zip(numeric, first)}


def sketch_columns(columns: Mapping[str, np.ndarray], bucketing: Mapping[str, tuple[float, float]],
                   kinds: Mapping[str, str] | None = None) -> dict[str, NumericSketch | CategoricalSketch]:
    """A sketch per column; numeric columns share one vectorised pass."""
    kinds = kinds or {name: kind_of(values) for name, values in columns.items()}
    numeric = [name for name in columns if kinds.get(name) == NUMERIC and columns[name].dtype.kind in "fiu"]
    out: dict[str, NumericSketch | CategoricalSketch] = {}
    if numeric:
        sketches = [NumericSketch(*bucketing.get(name, (0.0, 1.0))) for name in numeric]
        update_columns(sketches, [columns[name] for name in numeric])
        out.update(zip(numeric, sketches))
    for name, values in columns.items():
        if name in out:
            continue
        if kinds.get(name) == NUMERIC:
            sketch: NumericSketch | CategoricalSketch = NumericSketch(*bucketing.get(name, (0.0, 1.0)))
        else:
            sketch = CategoricalSketch()
        sketch.update(values)
        out[name] = sketch
    return out


def profile_from_windows(windows: Sequence[WindowData], kinds: Mapping[str, str], spec: WindowSpec, *, model: str,
                         version: str = "", task: str = "classification", prediction_column: str | None = None,
                         score_columns: Mapping[str, str] | None = None, target_column: str | None = None,
                         classes: Sequence[str] = (), id_column: str | None = None,
                         timestamp_column: str | None = None, policy: Policy | None = None) -> ReferenceProfile:
    """The one place a reference profile is assembled: from the reference windows' sketches and joined labels.

    ``kinds`` maps every sketched column (features and model outputs) to numeric or categorical, in the order the
    profile lists them. Roles follow the names: ``prediction_column`` is the prediction, the values of
    ``score_columns`` (class -> column) are scores, the rest are features. Everything is set before the reference
    windows are measured, so the reference values (the thresholds' spread) and the reference performance see the
    profile as it will be used.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    score_columns = dict(score_columns or {})
    outputs = ([prediction_column] if prediction_column else []) + list(score_columns.values())
    unknown = [name for name in outputs if name not in kinds]
    if unknown:
        raise ValueError(f"output column(s) {', '.join(map(repr, unknown))} are not among the profile's columns "
                         f"({', '.join(kinds)})")
    profile_columns: dict[str, ColumnProfile] = {}
    for name, kind in kinds.items():
        parts = [w.sketches[name] for w in windows if name in w.sketches]
        whole: NumericSketch | CategoricalSketch
        if len(parts) == 1 and len(windows) == 1:
            whole = parts[0]  # a single reference window is the reference (the engine knows it by identity)
        else:
            whole = parts[0].copy() if parts else NumericSketch() if kind == NUMERIC else CategoricalSketch()
            for part in parts[1:]:
                whole.merge(part)  # type: ignore[arg-type]
            if isinstance(whole, NumericSketch):
                whole.compact()
        role = "prediction" if name == prediction_column else "score" if name in score_columns.values() else "feature"
        profile_columns[name] = ColumnProfile(name, kind, role, whole, bin_keys(whole) if isinstance(
            whole, NumericSketch) else np.zeros(0, dtype=np.int64))
    profile = ReferenceProfile(
        model=model, version=version, task=task, window=spec, columns=profile_columns,
        rows=sum(w.rows for w in windows), classes=[str(c) for c in classes], score_columns=score_columns,
        id_column=id_column, timestamp_column=timestamp_column, target_column=target_column,
        prediction_column=prediction_column,
        reference_windows=[{"index": w.index, "rows": w.rows, "labeled_rows": len(w.labeled), "start": w.start,
                            "end": w.end} for w in windows])
    everything = LabeledRows()
    for window in windows:
        everything.extend(window.labeled)
    if len(everything.scores) == len(everything):  # CBPE: every labelled row has its scores
        profile.calibration = calibrate(profile, everything.y_true, everything.y_pred, everything.scores)
    profile.reference_values = reference_values(profile, windows, policy)
    profile.reference_performance = performance(profile, everything)
    return profile


def build_profile(columns: Mapping[str, np.ndarray], spec: WindowSpec, *, model: str, version: str = "",
                  task: str = "classification", prediction_column: str | None = None,
                  score_columns: Mapping[str, str] | None = None, target_column: str | None = None,
                  classes: Sequence[str] | None = None, categorical: Sequence[str] = (),
                  id_column: str | None = None, timestamp_column: str | None = None,
                  policy: Policy | None = None) -> tuple[ReferenceProfile, list[WindowData]]:
    """A reference profile of a table held in memory (one array per column, rows aligned), windowed by rows,
    with every field set: ``mlmon reference build`` for data already in memory.

    Every column is sketched (numbers as numeric unless named in ``categorical``) except ``target_column``: when
    the table holds it, its values are the true labels joined to the prediction (and scores), which gives the
    reference performance; a ``target_column`` not in the table only names the target for later windows.
    ``classes`` default to the sorted labels seen in the prediction and target columns (classification).
    Returns the profile and its reference windows.
    """
    if not spec.by_rows:
        raise ValueError("in-memory profiles window by rows: use chunk_size or chunks")
    if not columns:
        raise ValueError("a profile needs at least one column")
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"columns differ in length: {lengths}")
    unknown = [name for name in categorical if name not in columns]
    if unknown:
        raise ValueError(f"categorical column(s) {', '.join(map(repr, unknown))} are not in the table")
    truth = columns.get(target_column) if target_column else None
    sketched = {name: values for name, values in columns.items() if name != target_column}
    kinds = {name: CATEGORICAL if name in categorical else kind_of(values) for name, values in sketched.items()}
    score_columns = dict(score_columns or {})
    if classes is None:
        classes = []
        if task == "classification":
            seen = {category_key(v) for name in (prediction_column, target_column) if name and name in columns
                    for v in np.asarray(columns[name]).tolist()}
            classes = sorted_classes(c for c in seen if c is not None) or sorted_classes(score_columns)
    bucketing = choose_all_bucketing({name: v for name, v in sketched.items() if kinds[name] == NUMERIC})
    rows = next(iter(lengths.values()))
    index = spec.row_windows(0, rows, rows)
    windows = []
    for window in np.unique(index).tolist():
        chosen = np.flatnonzero(index == window)
        begin, end = int(chosen[0]), int(chosen[-1]) + 1
        part = {name: values[begin:end] for name, values in sketched.items()}
        labeled = LabeledRows()
        if truth is not None and prediction_column:
            labeled = _joined(truth[begin:end], part, task, prediction_column, score_columns, list(classes))
        windows.append(WindowData("reference", int(window), end - begin, sketch_columns(part, bucketing, kinds),
                                  labeled))
    profile = profile_from_windows(
        windows, kinds, spec, model=model, version=version, task=task, prediction_column=prediction_column,
        score_columns=score_columns, target_column=target_column, classes=classes, id_column=id_column,
        timestamp_column=timestamp_column, policy=policy)
    return profile, windows


def _joined(truth: np.ndarray, part: Mapping[str, np.ndarray], task: str, prediction_column: str,
            score_columns: Mapping[str, str], classes: list[str]) -> LabeledRows:
    """The rows of a window that have a true label, as the engine joins them (the batch path's rule)."""
    truth = np.asarray(truth)
    known = ~np.isnan(truth) if truth.dtype.kind == "f" else np.array([v is not None for v in truth.tolist()],
                                                                       dtype=bool)
    if not known.any():
        return LabeledRows()
    predicted = np.asarray(part[prediction_column])[known]
    if task == "regression":
        return LabeledRows([float(v) for v in truth[known].tolist()], [float(v) for v in predicted.tolist()])
    rows = LabeledRows([category_key(v) for v in truth[known].tolist()], [category_key(v) for v in predicted.tolist()])
    if len(score_columns) > 1:
        rows.scores = np.column_stack([np.asarray(part[score_columns[c]], dtype=np.float64)[known]
                                       for c in classes]).tolist()
    elif len(score_columns) == 1 and len(classes) == 2:
        positive = np.asarray(part[next(iter(score_columns.values()))], dtype=np.float64)[known]
        rows.scores = np.column_stack([1.0 - positive, positive]).tolist()
    return rows


def profile_from_columns(columns: Mapping[str, np.ndarray], spec: WindowSpec, model: str = "model",
                         version: str = "", task: str = "classification",
                         policy: Policy | None = None) -> tuple[ReferenceProfile, list[WindowData]]:
    """A profile of feature columns held in memory (every column a feature), windowed by rows."""
    return build_profile(columns, spec, model=model, version=version, task=task, classes=[], policy=policy)


def window_from_columns(profile: ReferenceProfile, columns: Mapping[str, np.ndarray], index: int = 0,
                        period: str = "analysis") -> WindowData:
    """An analysis window of in-memory columns, sketched with the profile's bucketing."""
    bucketing = {c.name: (c.sketch.center, c.sketch.scale) for c in profile.columns.values()
                 if isinstance(c.sketch, NumericSketch)}
    kinds = {c.name: c.kind for c in profile.columns.values()}
    rows = len(next(iter(columns.values())))
    return WindowData(period, index, rows, sketch_columns(columns, bucketing, kinds))
