"""Seeded synthetic monitoring data with known answers: stationary columns and injected shifts."""

from __future__ import annotations

import numpy as np

from otel_mlmon.engine.drift import CATEGORICAL, NUMERIC
from otel_mlmon.engine.evaluate import WindowData
from otel_mlmon.engine.profile import ColumnProfile, ReferenceProfile, bin_keys, choose_bucketing
from otel_mlmon.engine.windows import WindowSpec
from otel_mlmon.sketch import CategoricalSketch, NumericSketch

CATEGORIES = np.array(list("abcde"))
BASE_P = np.array([0.4, 0.25, 0.15, 0.12, 0.08])


def numeric(rng: np.random.Generator, n: int, shift: str | None = None) -> np.ndarray:
    x = rng.normal(10.0, 2.0, n)
    if shift == "mean":
        x += 0.5 * 2.0
    elif shift == "scale":
        x = 10.0 + (x - 10.0) * 1.5
    elif shift == "mixture":
        outliers = rng.random(n) < 0.15
        x[outliers] = rng.normal(16.0, 1.0, outliers.sum())
    return x


def categorical(rng: np.random.Generator, n: int, shift: bool = False) -> np.ndarray:
    p = np.array([0.25, 0.25, 0.2, 0.15, 0.15]) if shift else BASE_P
    return rng.choice(CATEGORIES, n, p=p)


def sketches_of(columns: dict[str, np.ndarray], bucketing: dict[str, tuple[float, float]]) -> dict:
    out: dict = {}
    for name, values in columns.items():
        if values.dtype.kind == "f":
            sketch = NumericSketch(*bucketing.get(name, (0.0, 1.0)))
        else:
            sketch = CategoricalSketch()
        sketch.update(values)
        out[name] = sketch
    return out


def profile_from(reference: dict[str, np.ndarray], chunk: int) -> tuple[ReferenceProfile, list[WindowData]]:
    from otel_mlmon.engine.evaluate import reference_values

    bucketing = {}
    for name, values in reference.items():
        if values.dtype.kind == "f":
            first = NumericSketch()
            first.update(values)
            bucketing[name] = choose_bucketing(first)
    whole = sketches_of(reference, bucketing)
    columns = {name: ColumnProfile(name, NUMERIC if isinstance(s, NumericSketch) else CATEGORICAL, "feature", s,
                                   bin_keys(s) if isinstance(s, NumericSketch) else np.zeros(0, dtype=np.int64))
               for name, s in whole.items()}
    n = len(next(iter(reference.values())))
    windows = [WindowData("reference", i, min(chunk, n - start),
                          sketches_of({k: v[start: start + chunk] for k, v in reference.items()}, bucketing))
               for i, start in enumerate(range(0, n, chunk))]
    profile = ReferenceProfile("synthetic", "", "classification", WindowSpec(chunk_size=chunk), columns, rows=n)
    profile.reference_values = reference_values(profile, windows)
    return profile, windows


def analysis_window(profile: ReferenceProfile, columns: dict[str, np.ndarray], index: int = 0) -> WindowData:
    bucketing = {c.name: (c.sketch.center, c.sketch.scale) for c in profile.columns.values()
                 if isinstance(c.sketch, NumericSketch)}
    rows = len(next(iter(columns.values())))
    return WindowData("analysis", index, rows, sketches_of(columns, bucketing))
