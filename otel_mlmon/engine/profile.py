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

from otel_mlmon.engine.calibration import Calibration
from otel_mlmon.engine.drift import CATEGORICAL, NUMERIC
from otel_mlmon.engine.results import KINDS
from otel_mlmon.engine.windows import WindowSpec
from otel_mlmon.sketch import CategoricalSketch, NumericSketch
from otel_mlmon.sketch import _fields as fields
from otel_mlmon.sketch._bucketing import max_magnitude_key

FORMAT = "otel-mlmon/reference-profile"
SCHEMA_VERSION = 1
COARSE_BINS = 10
ROLES = ("feature", "prediction", "score", "target")
TASKS = ("classification", "regression")
_REQUIRED = object()
MAX_ROWS = 2**62


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
    def from_dict(cls, name: str, data: Any, where: str | None = None) -> ColumnProfile:
        where = where or f"columns[{fields.describe(name)}]"
        data = fields.mapping(data, where)
        kind, role = fields.required(data, "kind", where), data.get("role", "feature")
        if kind not in (NUMERIC, CATEGORICAL):
            raise ValueError(f"{where}.kind must be {NUMERIC!r} or {CATEGORICAL!r}, got {fields.describe(kind)}")
        if role not in ROLES:
            raise ValueError(f"{where}.role must be one of {', '.join(map(repr, ROLES))}, got "
                             f"{fields.describe(role)}")
        sketch = fields.required(data, "sketch", where)
        if kind == NUMERIC:
            numeric = NumericSketch.from_dict(sketch, f"{where}.sketch")
            limit = max_magnitude_key(numeric.precision)
            keys = fields.integers(data.get("bin_keys", []), f"{where}.bin_keys", -limit - 1, limit)
            return cls(name, kind, role, numeric, np.unique(np.asarray(keys, dtype=np.int64)))
        return cls(name, kind, role, CategoricalSketch.from_dict(sketch, f"{where}.sketch"))


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
    # scores -> class probabilities, fitted on the labelled reference (classification with scores; else None)
    calibration: Calibration | None = None

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
            **({"calibration": self.calibration.to_dict()} if self.calibration is not None else {}),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=1)

    @classmethod
    def from_dict(cls, data: Any, source: str = "reference profile") -> ReferenceProfile:
        """The profile of ``to_dict()`` output (decoded JSON). Anything else — another format or version, a
        field of the wrong type, a non-finite number, window bounds out of range — is one ``ValueError`` whose
        one-line message names the field."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValueError(f"{source} is not an otel-mlmon reference profile (no format {FORMAT!r}); build one "
                             "with `mlmon reference build`")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"{source} has schema version {fields.describe(version)}; this otel-mlmon reads "
                             f"version {SCHEMA_VERSION}: rebuild it with this version's `mlmon reference build`")
        try:
            return _profile_from_dict(cls, data)
        except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise ValueError(f"{source} is invalid: {' '.join(str(reason).split())}; rebuild it with "
                             "`mlmon reference build`") from None

    @classmethod
    def loads(cls, document: str | bytes, source: str = "reference profile") -> ReferenceProfile:
        """The profile in a JSON document; unreadable or too deeply nested JSON is a one-line ``ValueError``."""
        return cls.from_dict(parse_document(document, source), source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReferenceProfile:
        source = f"reference profile {os.fspath(path)!r}"
        return cls.loads(read_document(path, source), source)


def parse_document(document: str | bytes, source: str) -> Any:
    """A profile's JSON document decoded; unreadable or too deeply nested JSON is a one-line ``ValueError``."""
    try:
        return json.loads(document)
    except RecursionError:
        raise ValueError(f"{source} is not a reference profile: its JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits
        raise ValueError(f"{source} is not readable JSON: {' '.join(str(exc).split())}") from None


def read_document(path: str | os.PathLike[str], source: str) -> bytes:
    """A profile file's bytes; a missing or unreadable file is a one-line error naming ``source``."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{source} does not exist") from None
    except OSError as exc:
        raise ValueError(f"{source} is not readable: {exc}") from None


def _profile_from_dict(cls: type[ReferenceProfile], data: Mapping[str, Any]) -> ReferenceProfile:
    def get(key: str, default: Any = _REQUIRED) -> Any:
        return fields.required(data, key, "") if default is _REQUIRED else data.get(key, default)

    task = get("task")
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))}, got {fields.describe(task)}")
    try:
        window = WindowSpec.from_dict(get("window"))
    except ValueError as exc:
        raise ValueError(f"window: {exc}") from None
    columns = {name: ColumnProfile.from_dict(name, column)
               for name, column in fields.mapping(get("columns"), "columns").items()}
    windows = []
    for position, info in enumerate(fields.sequence(get("reference_windows", []), "reference_windows")):
        where = f"reference_windows[{position}]"
        info = fields.mapping(info, where)
        rows = fields.integer(fields.required(info, "rows", where), f"{where}.rows", 0, MAX_ROWS)
        entry: dict[str, Any] = {
            "index": fields.integer(fields.required(info, "index", where), f"{where}.index"), "rows": rows,
            "labeled_rows": fields.integer(info.get("labeled_rows", 0), f"{where}.labeled_rows", 0, rows)}
        for bound in ("start", "end"):
            if bound in info:
                entry[bound] = fields.optional_text(info[bound], f"{where}.{bound}")
        windows.append(entry)
    values: dict[str, list[list[float | None]]] = {}
    for key, series in fields.mapping(get("reference_values", {}), "reference_values").items():
        where = f"reference_values[{fields.describe(key)}]"
        parts = key.rsplit("|", 2)
        if len(parts) != 3 or parts[1] not in KINDS:
            raise ValueError(f"{where}: keys are column|kind|metric with a kind of {', '.join(KINDS)}")
        series = fields.sequence(series, where)
        if len(series) != len(windows):
            raise ValueError(f"{where} has {len(series)} values for {len(windows)} reference windows")
        values[key] = []
        for position, triple in enumerate(series):
            triple = fields.sequence(triple, f"{where}[{position}]")
            if len(triple) != 3:
                raise ValueError(f"{where}[{position}] must be [value, p-value, rows]")
            value, p_value, n = triple
            values[key].append([fields.optional_number(value, f"{where}[{position}][0]"),
                                fields.optional_number(p_value, f"{where}[{position}][1]"),
                                0 if n is None else fields.integer(n, f"{where}[{position}][2]")])
    optional = {name: fields.optional_text(get(name, None), name)
                for name in ("id_column", "timestamp_column", "target_column", "prediction_column")}
    classes = [_class_name(c, f"classes[{i}]") for i, c in enumerate(fields.sequence(get("classes", []), "classes"))]
    calibration = get("calibration", None)  # profiles before CBPE have none
    return cls(
        model=fields.text(get("model"), "model"), version=fields.text(get("version", ""), "version"), task=task,
        window=window, columns=columns, rows=fields.integer(get("rows", 0), "rows", 0, MAX_ROWS),
        classes=classes,
        score_columns={str(label): fields.text(column, f"score_columns[{fields.describe(label)}]")
                       for label, column in fields.mapping(get("score_columns", {}), "score_columns").items()},
        **optional, reference_values=values, reference_windows=windows,
        reference_performance={
            name: math.nan if value is None else fields.number(value, f"reference_performance[{fields.describe(name)}]")
            for name, value in fields.mapping(get("reference_performance", {}), "reference_performance").items()},
        calibration=None if calibration is None else Calibration.from_dict(calibration, classes),
    )


def _class_name(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        fields.number(value, where)
        return str(value)
    raise ValueError(f"{where} must be a string, got {fields.describe(value)}")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
