"""Window results: the rows of ``mlmon evaluate`` output and of the processor's ``GET /v1/results``.

A run with segments (``mlmon evaluate --segment-by COLUMN``) also gives each segment's rows, as
``SegmentWindowResult`` (a ``WindowResult`` with its ``segment``); its outputs then carry a trailing ``segment``
column (``SEGMENTED_COLUMNS``), empty for the whole window. Without segments the schema is ``COLUMNS`` alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any


def iso_utc(seconds: float) -> str | None:
    """An epoch time as ISO 8601 in UTC with a ``Z`` (the form of ``window_start``/``window_end``)."""
    if not math.isfinite(seconds):
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def iso_utc_ns(ns: int) -> str | None:
    """``iso_utc`` of a time in epoch nanoseconds (OTLP's unit)."""
    return iso_utc(ns / 1e9)


COLUMNS = ("model", "model_version", "period", "window", "window_start", "window_end", "rows", "labeled_rows",
           "column", "kind", "metric", "value", "lower_threshold", "upper_threshold", "alert", "p_value")
SEGMENT = "segment"
SEGMENTED_COLUMNS = (*COLUMNS, SEGMENT)
KINDS = ("drift", "performance", "data_quality", "estimated_performance")
PERIODS = ("reference", "analysis")


@dataclass(frozen=True)
class WindowResult:
    """One value of one metric of one column in one window. ``alert`` is None when there was not enough data for
    a verdict; thresholds are None when there is no bound on that side."""

    model: str
    model_version: str
    period: str
    window: int
    window_start: str | None
    window_end: str | None
    rows: int
    labeled_rows: int
    column: str
    kind: str
    metric: str
    value: float
    lower_threshold: float | None
    upper_threshold: float | None
    alert: bool | None
    p_value: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_json(self) -> dict[str, Any]:
        """JSON-safe: NaN and infinities become None."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class SegmentWindowResult(WindowResult):
    """A window result of one segment of the window: the rows whose segment column holds ``segment`` (a value
    chosen on the reference, ``__other__`` or ``__missing__``), judged against that segment's reference."""

    segment: str


def segment_of(row: WindowResult) -> str | None:
    """The segment of a result row (None: the whole window)."""
    return row.segment if isinstance(row, SegmentWindowResult) else None


def with_segment(row: WindowResult, segment: str | None) -> WindowResult:
    """The row as a result of ``segment`` (None: of the whole window, a plain ``WindowResult``)."""
    values = {name: getattr(row, name) for name in COLUMNS}
    return WindowResult(**values) if segment is None else SegmentWindowResult(**values, segment=segment)
