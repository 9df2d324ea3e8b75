"""Segments (``ml.segment``) and fairness groups (``ml.fairness.group``) of a call's rows, bounded per model.

A model's segment comes from an input column (``segment_by`` / ``OTEL_PYTHON_MLMON_SEGMENT_COLUMN``) or a W3C baggage
entry (``segment_baggage_key`` / ``OTEL_PYTHON_MLMON_SEGMENT_BAGGAGE_KEY``: one segment for all the call's rows; used
when no column is set or the input has none). Values are named as the sketches name categories
(``sketch.category_key``) and bounded as ``engine.segments.assign_segments`` bounds them (re-implemented here: the
engine pulls in scipy): with a segmented reference profile, its segments, a value not among them ``__other__``;
otherwise the first ``max_segments - 1`` distinct values the process sees, later new ones ``__other__``. A row
without a value is ``__missing__``. The sensitive column's values (fairness groups; an empty string counts as
missing, as in ``engine.fairness``) are bounded the same way.

Nothing here raises into the application: an input without the configured column makes its rows ``__missing__``
(counted as ``segment_column_missing`` / ``sensitive_column_missing`` in ``ml.instrumentation.errors``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from opentelemetry import baggage

from otel_mlmon import semconv
from otel_mlmon.instrumentation import _guard
from otel_mlmon.instrumentation._inputs import InputBatch
from otel_mlmon.instrumentation._settings import Settings
from otel_mlmon.sketch import category_key

OTHER = semconv.OTHER_CATEGORY
MISSING = semconv.MISSING_SEGMENT


@dataclass(frozen=True)
class SegmentConfig:
    """Where a model's segments and fairness groups come from, and their bound."""

    column: str | None = None
    baggage_key: str | None = None
    max_segments: int = 10
    sensitive_column: str | None = None
    segments: tuple[str, ...] | None = None  # a segmented reference profile's segments (fixed vocabulary)

    @classmethod
    def from_settings(cls, settings: Settings) -> SegmentConfig:
        return cls(settings.segment_column, settings.segment_baggage_key, settings.max_segments,
                   settings.sensitive_column)

    @property
    def segmenting(self) -> bool:
        return self.column is not None or self.baggage_key is not None

    @property
    def active(self) -> bool:
        return self.segmenting or self.sensitive_column is not None


class Vocabulary:
    """Bounded names of one column's values: a fixed list, or the first ``limit - 1`` distinct values seen."""

    def __init__(self, limit: int, fixed: Sequence[str] | None = None, empty_is_missing: bool = False) -> None:
        self.fixed = fixed is not None
        self._known: set[str] = {s for s in fixed if s not in (OTHER, MISSING)} if fixed is not None else set()
        self._limit = max(1, limit - 1)
        self._empty_is_missing = empty_is_missing
        self._lock = threading.Lock()

    def name(self, value: Any) -> str:
        key = category_key(value)
        if key is None or (self._empty_is_missing and key == ""):
            return MISSING
        known = self._known
        if key in known:
            return key
        if self.fixed or len(known) >= self._limit:
            return OTHER
        with self._lock:
            if key not in known and len(known) < self._limit:
                known.add(key)
            return key if key in known else OTHER

    def names(self, values: Iterable[Any]) -> list[str]:
        """The name of each value (each distinct value named once per call)."""
        seen: dict[Any, str] = {}
        out = []
        for value in values:
            try:
                found = seen.get(value)
            except TypeError:  # unhashable
                out.append(self.name(value))
                continue
            if found is None:
                found = seen[value] = self.name(value)
            out.append(found)
        return out


class Segmenter:
    """The segments and fairness groups of one model's calls."""

    __slots__ = ("baggage_key", "column", "groups", "segments", "sensitive_column")

    def __init__(self, config: SegmentConfig) -> None:
        self.column = config.column
        self.baggage_key = config.baggage_key
        self.sensitive_column = config.sensitive_column
        self.segments = Vocabulary(config.max_segments, config.segments) if config.segmenting else None
        self.groups = (Vocabulary(config.max_segments, empty_is_missing=True)
                       if config.sensitive_column is not None else None)

    def segments_of(self, batch: InputBatch | None, rows: int, context: Any) -> list[str] | None:
        """Each row's segment (None when segments are off)."""
        vocabulary = self.segments
        if vocabulary is None:
            return None
        values = batch.segments if batch is not None else None
        if values is not None and len(values) == rows:
            return vocabulary.names(values)
        if self.baggage_key is not None:
            value = baggage.get_baggage(self.baggage_key, context)
            return [MISSING if value is None or value == "" else vocabulary.name(value)] * rows
        _guard.failure("segment_column_missing", message=(
            f"the model's input has no segment column {self.column!r} (read from pandas DataFrames, dicts of "
            "columns and lists of row dicts); its rows are in segment __missing__"))
        return [MISSING] * rows

    def groups_of(self, batch: InputBatch | None, rows: int) -> list[str] | None:
        """Each row's fairness group (None when no sensitive column is set)."""
        vocabulary = self.groups
        if vocabulary is None:
            return None
        values = batch.sensitive if batch is not None else None
        if values is not None and len(values) == rows:
            return vocabulary.names(values)
        _guard.failure("sensitive_column_missing", message=(
            f"the model's input has no sensitive column {self.sensitive_column!r}; its rows have "
            "ml.fairness.group __missing__"))
        return [MISSING] * rows


def split_rows(segments: list[str]) -> list[tuple[str, np.ndarray | None]]:
    """``(segment, row positions)`` for each segment of a call, positions None when it holds every row."""
    first = segments[0] if segments else MISSING
    if segments.count(first) == len(segments):
        return [(first, None)]
    names, inverse = np.unique(np.asarray(segments, dtype=str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(names.size + 1))
    return [(str(name), order[bounds[i]: bounds[i + 1]]) for i, name in enumerate(names.tolist())]
