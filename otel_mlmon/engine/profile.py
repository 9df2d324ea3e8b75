"""Reference profiles: what a model's inputs and outputs looked like when it was known to be good.

A profile holds, per column, its kind and role, the whole-reference sketch (with the bucketing chosen from the
reference: center = median, scale = interquartile range), the coarse bin keys (reference deciles) and summary
statistics; per metric, its values over the reference windows (the spread that thresholds are drawn from); and
the window spec. It is JSON with a format name and a schema version: another format, a newer version or a corrupt
file is refused with a message that says so.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from otel_mlmon.engine.drift import CATEGORICAL, NUMERIC
from otel_mlmon.engine.windows import WindowSpec
from otel_mlmon.sketch import CategoricalSketch, NumericSketch

FORMAT = "otel-mlmon/reference-profile"
SCHEMA_VERSION = 1
COARSE_BINS = 10
ROLES = ("feature", "prediction", "score", "target")


def quantile(sketch: NumericSketch, q: float) -> float:
    """The ``q`` quantile of a sketch, interpolated linearly inside its bucket."""
    keys, counts = sketch.buckets()
    if counts.size == 0:
        return math.nan
    cumulative = np.cumsum(counts)
    target = q * cumulative[-1]
    i = int(np.searchsorted(cumulative, target, side="left"))
    i = min(i, counts.size - 1)
    lower, upper = sketch.bounds(keys[i: i + 1])
    before = cumulative[i - 1] if i else 0
    fraction = (target - before) / counts[i] if counts[i] else 0.0
    value = float(lower[0] + (upper[0] - lower[0]) * min(max(fraction, 0.0), 1.0))
    return min(max(value, sketch.min), sketch.max)


def choose_bucketing(sketch: NumericSketch) -> tuple[float, float]:
    """(center, scale) for a column from a first sketch of it: the median and the interquartile range (or the
    standard deviation, or 1, when that is zero), rounded to 6 significant digits so profiles read well."""
    if sketch.count == 0:
        return 0.0, 1.0
    center = quantile(sketch, 0.5)
    spread = quantile(sketch, 0.75) - quantile(sketch, 0.25)
    if not spread > 0:
        spread = math.sqrt(sketch.variance) if sketch.variance > 0 else 1.0
    return float(f"{center:.6g}"), float(f"{spread:.6g}")


def bin_keys(sketch: NumericSketch, bins: int = COARSE_BINS) -> np.ndarray:
    """Sorted signed keys where coarse bins 2.. start: the reference's quantiles 1/bins, 2/bins, ….

    The first bin is open below and the last open above, so no bin is empty in the reference (an empty reference
    bin makes the chi-squared approximation of the binned tests fail; values beyond the reference range are
    counted by the data-quality ``out_of_range_rate``)."""
    keys, counts = sketch.buckets()
    if counts.size == 0:
        return np.zeros(0, dtype=np.int64)
    cumulative = np.cumsum(counts) / counts.sum()
    cuts = np.searchsorted(cumulative, np.arange(1, bins) / bins, side="left") + 1
    return np.unique(keys[cuts[cuts < keys.size]])


@dataclass
class ColumnProfile:
    name: str
    kind: str
    role: str
    sketch: NumericSketch | CategoricalSketch
    bin_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def std(self) -> float:
        return math.sqrt(self.sketch.variance) if isinstance(self.sketch, NumericSketch) and self.sketch.count else 0.0

    @property
    def missing_rate(self) -> float:
        sketch = self.sketch
        bad = sketch.total - sketch.count
        return bad / sketch.total if sketch.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "role": self.role, "sketch": self.sketch.to_dict()}
        if isinstance(self.sketch, NumericSketch):
            data.update({"bin_keys": self.bin_keys.tolist(), "std": self.std, "min": self.sketch.min,
                         "max": self.sketch.max})
        return data

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> ColumnProfile:
        kind, role = data["kind"], data.get("role", "feature")
        if kind not in (NUMERIC, CATEGORICAL) or role not in ROLES:
            raise ValueError(f"column {name!r}: kind {kind!r} / role {role!r} not understood")
        if kind == NUMERIC:
            return cls(name, kind, role, NumericSketch.from_dict(data["sketch"]),
                       np.asarray(data.get("bin_keys", []), dtype=np.int64))
        return cls(name, kind, role, CategoricalSketch.from_dict(data["sketch"]))


@dataclass
class ReferenceProfile:
    """Everything the engine needs to know about the reference of one model."""

    model: str
    version: str
    task: str
    window: WindowSpec
    columns: dict[str, ColumnProfile]
    rows: int = 0
    classes: list[str] = field(default_factory=list)
    score_columns: dict[str, str] = field(default_factory=dict)  # class -> column
    id_column: str | None = None
    timestamp_column: str | None = None
    target_column: str | None = None
    prediction_column: str | None = None
    # "column|kind|metric" -> [value, p-value, n] per reference window (None where absent)
    reference_values: dict[str, list[list[float | None]]] = field(default_factory=dict)
    reference_windows: list[dict[str, Any]] = field(default_factory=list)  # index, rows, labeled_rows, start, end
    reference_performance: dict[str, float] = field(default_factory=dict)  # over the whole reference

    def features(self) -> list[ColumnProfile]:
        return [c for c in self.columns.values() if c.role == "feature"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "schema_version": SCHEMA_VERSION, "model": self.model, "version": self.version,
            "task": self.task, "window": self.window.to_dict(), "rows": self.rows, "classes": self.classes,
            "score_columns": self.score_columns, "id_column": self.id_column,
            "timestamp_column": self.timestamp_column, "target_column": self.target_column,
            "prediction_column": self.prediction_column,
            "columns": {name: column.to_dict() for name, column in self.columns.items()},
            "reference_values": {k: [[_finite(v), _finite(p), n] for v, p, n in series]
                                 for k, series in self.reference_values.items()},
            "reference_windows": self.reference_windows,
            "reference_performance": {k: _finite(v) for k, v in self.reference_performance.items()},
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "reference profile") -> ReferenceProfile:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValueError(f"{source} is not an otel-mlmon reference profile (no format {FORMAT!r}); build one "
                             "with `mlmon reference build`")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"{source} has schema version {version!r}; this otel-mlmon reads version "
                             f"{SCHEMA_VERSION}: rebuild it with this version's `mlmon reference build`")
        try:
            return cls(
                model=str(data["model"]), version=str(data.get("version", "")), task=str(data["task"]),
                window=WindowSpec.from_dict(data["window"]),
                columns={name: ColumnProfile.from_dict(name, c) for name, c in data["columns"].items()},
                rows=int(data.get("rows", 0)), classes=[str(c) for c in data.get("classes", [])],
                score_columns=dict(data.get("score_columns", {})), id_column=data.get("id_column"),
                timestamp_column=data.get("timestamp_column"), target_column=data.get("target_column"),
                prediction_column=data.get("prediction_column"),
                reference_values={k: [list(triple) for triple in series]
                                  for k, series in data.get("reference_values", {}).items()},
                reference_windows=list(data.get("reference_windows", [])),
                reference_performance={k: math.nan if v is None else float(v)
                                       for k, v in data.get("reference_performance", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source} is corrupt: {type(exc).__name__}: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReferenceProfile:
        source = f"reference profile {os.fspath(path)!r}"
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            raise FileNotFoundError(f"{source} does not exist") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{source} is not readable JSON: {exc}") from None
        return cls.from_dict(data, source)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
