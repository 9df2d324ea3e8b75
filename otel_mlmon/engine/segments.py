"""Segments: drift, data quality and performance per value of one column (``--segment-by COLUMN``).

The segments are chosen on the reference: a column's values, the ``max_segments`` − 1 most frequent kept (ties by
name) and the rest as ``__other__`` when there are more than ``max_segments`` of them (all of them otherwise);
missing values form ``__missing__``. Each segment gets its own reference profile, built from the reference rows
of that segment with the whole reference's classes (so a binary model keeps its positive class in every segment),
and each analysis window is split the same way: a row's segment is its value when that value is a segment,
``__missing__`` when it has none, ``__other__`` otherwise. A segment's window is judged against its own profile
exactly as a whole window is (``evaluate_window``): the values are the engine's, on the segment's rows. Rows of
``__other__`` (or ``__missing__``) when the reference had no such segment are judged against the whole reference.

Results carry the segment: ``SegmentResult(segment, result)``, whose ``as_dict()`` is a window-result row with a
``segment`` field — None for the whole window, whose rows are the ones ``evaluate_window`` gives without segments.
The bound keeps the result table and the exported attributes small whatever the column holds; a float column with
more distinct values than the bound is refused (bin it first), since its values are not groups.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from otel_mlmon.engine.columns import _joined, build_profile, sketch_columns
from otel_mlmon.engine.evaluate import LabeledRows, Policy, WindowData, evaluate_window
from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.engine.results import WindowResult
from otel_mlmon.engine.windows import WindowSpec
from otel_mlmon.sketch import NumericSketch, category_key

FORMAT = "otel-mlmon/segmented-profile"
SCHEMA_VERSION = 1
OTHER, MISSING = "__other__", "__missing__"
MAX_SEGMENTS = 10


def choose_segments(values: np.ndarray | Sequence[Any], max_segments: int = MAX_SEGMENTS,
                    column: str = "segment column") -> list[str]:
    """The segments of a reference column (see the module docstring), most frequent first."""
    if max_segments < 2:
        raise ValueError(f"max_segments must be at least 2, got {max_segments}")
    array = np.asarray(values)
    keys = [category_key(v) for v in array.tolist()]
    counts = Counter(k for k in keys if k is not None)
    if array.dtype.kind == "f" and len(counts) > max_segments:
        raise ValueError(f"{column} {column!r} is numeric with {len(counts)} distinct values (more than "
                         f"max_segments={max_segments}): segments are groups; bin it first (e.g. an age band column)")
    ordered = [name for name, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    chosen = ordered if len(ordered) <= max_segments else [*ordered[: max_segments - 1], OTHER]
    if sum(counts.values()) < len(keys):  # some rows have no value
        chosen.append(MISSING)
    return chosen


def assign_segments(values: np.ndarray | Sequence[Any], segments: Sequence[str]) -> np.ndarray:
    """Each row's segment: its value when that is a segment, ``__missing__`` without one, else ``__other__``."""
    known = set(segments) - {OTHER, MISSING}
    names = []
    for value in np.asarray(values).tolist():
        key = category_key(value)
        names.append(MISSING if key is None else key if key in known else OTHER)
    return np.asarray(names, dtype=object)


@dataclass
class SegmentedProfile:
    """The whole reference's profile and one profile per segment of ``column``."""

    column: str
    whole: ReferenceProfile
    segments: dict[str, ReferenceProfile]
    max_segments: int = MAX_SEGMENTS

    def profile_for(self, segment: str) -> ReferenceProfile:
        return self.segments.get(segment, self.whole)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "schema_version": SCHEMA_VERSION, "column": self.column,
                "max_segments": self.max_segments, "whole": self.whole.to_dict(),
                "segments": {name: profile.to_dict() for name, profile in self.segments.items()}}

    @classmethod
    def from_dict(cls, data: Any, source: str = "segmented profile") -> SegmentedProfile:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValueError(f"{source} is not an otel-mlmon segmented profile (no format {FORMAT!r}); build one "
                             "with --segment-by")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"{source} has schema version {data.get('schema_version')!r}; this otel-mlmon reads "
                             f"version {SCHEMA_VERSION}: rebuild it")
        segments = data.get("segments")
        if not isinstance(data.get("column"), str) or not isinstance(segments, Mapping) or not segments:
            raise ValueError(f"{source} is invalid: it needs a 'column' name and a non-empty 'segments' object")
        return cls(data["column"], ReferenceProfile.from_dict(data.get("whole"), f"{source} (whole)"),
                   {str(name): ReferenceProfile.from_dict(profile, f"{source} (segment {name!r})")
                    for name, profile in segments.items()}, int(data.get("max_segments", MAX_SEGMENTS)))


def build_segmented_profile(columns: Mapping[str, np.ndarray], spec: WindowSpec, *, segment_by: str,
                            max_segments: int = MAX_SEGMENTS, **options: Any) -> SegmentedProfile:
    """``build_profile`` for the whole table and for each segment of ``segment_by`` (same ``options``)."""
    if segment_by not in columns:
        raise ValueError(f"segment column {segment_by!r} is not in the table (columns: {', '.join(columns)})")
    whole, _ = build_profile(columns, spec, **options)
    segments = choose_segments(columns[segment_by], max_segments, segment_by)
    names = assign_segments(columns[segment_by], segments)
    options = {**options, "classes": whole.classes}
    profiles = {}
    for segment in segments:
        mask = names == segment
        profiles[segment], _ = build_profile({name: np.asarray(values)[mask] for name, values in columns.items()},
                                             spec, **options)
    return SegmentedProfile(segment_by, whole, profiles, max_segments)


@dataclass(frozen=True)
class SegmentResult:
    """A window result of one segment (None: the whole window)."""

    segment: str | None
    result: WindowResult

    def as_dict(self) -> dict[str, Any]:
        return {**self.result.as_dict(), "segment": self.segment}

    def as_json(self) -> dict[str, Any]:
        return {**self.result.as_json(), "segment": self.segment}


def window_of_columns(profile: ReferenceProfile, columns: Mapping[str, np.ndarray], index: int = 0,
                      period: str = "analysis", start: str | None = None, end: str | None = None) -> WindowData:
    """A window of in-memory rows for ``profile``: the profile's columns sketched with its bucketing, and the
    rows with a true label joined as the batch path joins them (when the table holds the target column)."""
    bucketing = {c.name: (c.sketch.center, c.sketch.scale) for c in profile.columns.values()
                 if isinstance(c.sketch, NumericSketch)}
    kinds = {c.name: c.kind for c in profile.columns.values()}
    present = {name: np.asarray(values) for name, values in columns.items() if name in kinds}
    rows = len(np.asarray(next(iter(columns.values())))) if columns else 0
    labeled = LabeledRows()
    target = profile.target_column
    if target is not None and target in columns and profile.prediction_column in present:
        labeled = _joined(np.asarray(columns[target]), present, profile.task, profile.prediction_column or "",
                          profile.score_columns, list(profile.classes))
    return WindowData(period, index, rows, sketch_columns(present, bucketing, kinds), labeled, start, end)


def evaluate_segmented(profile: SegmentedProfile, columns: Mapping[str, np.ndarray], *, index: int = 0,
                       period: str = "analysis", policy: Policy | None = None, start: str | None = None,
                       end: str | None = None) -> list[SegmentResult]:
    """The whole window's results (segment None), then each segment's, in the reference's segment order (a segment
    with no rows in the window gives no rows)."""
    if profile.column not in columns:
        raise ValueError(f"segment column {profile.column!r} is not in the window's columns")
    out = [SegmentResult(None, r) for r in evaluate_window(
        profile.whole, window_of_columns(profile.whole, columns, index, period, start, end), policy)]
    names = assign_segments(columns[profile.column], list(profile.segments))
    order = list(profile.segments) + sorted(set(names.tolist()) - set(profile.segments))
    for segment in order:
        mask = names == segment
        if not mask.any():
            continue
        part = {name: np.asarray(values)[mask] for name, values in columns.items()}
        reference = profile.profile_for(segment)
        out.extend(SegmentResult(segment, r) for r in evaluate_window(
            reference, window_of_columns(reference, part, index, period, start, end), policy))
    return out
