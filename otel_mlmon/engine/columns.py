"""The engine on in-memory columns: a reference profile and window results from numpy arrays.

``profile_from_columns`` is ``mlmon reference build`` in Python for data already in memory;
``sketch_columns`` makes the window sketches the rest of the engine reads. Numeric columns are sketched together
(one vectorised pass), categorical ones counted.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from otel_mlmon.engine.drift import CATEGORICAL, NUMERIC
from otel_mlmon.engine.evaluate import Policy, WindowData, reference_values
from otel_mlmon.engine.profile import ColumnProfile, ReferenceProfile, bin_keys, choose_bucketing
from otel_mlmon.engine.windows import WindowSpec
from otel_mlmon.sketch import CategoricalSketch, NumericSketch, update_columns

BUCKETING_SAMPLE = 16_384  # rows that choose a column's center and scale (median and IQR within ~1 %)


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


def profile_from_columns(columns: Mapping[str, np.ndarray], spec: WindowSpec, model: str = "model",
                         version: str = "", task: str = "classification",
                         policy: Policy | None = None) -> tuple[ReferenceProfile, list[WindowData]]:
    """A profile of feature columns held in memory, windowed by rows (``chunk_size`` or ``chunks``)."""
    if not spec.by_rows:
        raise ValueError("in-memory profiles window by rows: use chunk_size or chunks")
    bucketing = choose_all_bucketing(columns)
    rows = len(next(iter(columns.values())))
    index = spec.row_windows(0, rows, rows)
    windows = []
    for window in np.unique(index).tolist():
        chosen = np.flatnonzero(index == window)
        part = {name: values[chosen[0]: chosen[-1] + 1] for name, values in columns.items()}
        windows.append(WindowData("reference", int(window), int(chosen.size), sketch_columns(part, bucketing)))
    whole = sketch_columns(columns, bucketing) if len(windows) > 1 else dict(windows[0].sketches)
    profile_columns = {
        name: ColumnProfile(name, NUMERIC if isinstance(s, NumericSketch) else CATEGORICAL, "feature", s,
                            bin_keys(s) if isinstance(s, NumericSketch) else np.zeros(0, dtype=np.int64))
        for name, s in whole.items()}
    profile = ReferenceProfile(model, version, task, spec, profile_columns, rows=rows,
                               reference_windows=[{"index": w.index, "rows": w.rows, "labeled_rows": 0}
                                                  for w in windows])
    profile.reference_values = reference_values(profile, windows, policy)
    return profile, windows


def window_from_columns(profile: ReferenceProfile, columns: Mapping[str, np.ndarray], index: int = 0,
                        period: str = "analysis") -> WindowData:
    """An analysis window of in-memory columns, sketched with the profile's bucketing."""
    bucketing = {c.name: (c.sketch.center, c.sketch.scale) for c in profile.columns.values()
                 if isinstance(c.sketch, NumericSketch)}
    kinds = {c.name: c.kind for c in profile.columns.values()}
    rows = len(next(iter(columns.values())))
    return WindowData(period, index, rows, sketch_columns(columns, bucketing, kinds))
