"""Writing window results as CSV, JSON or Parquet, numbers at full precision (17 significant digits).

Results with segments (``--segment-by``) get a trailing ``segment`` column, empty (null) for the whole window's
rows; results without keep the schema of ``COLUMNS`` exactly.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from otel_mlmon.batch.reader import DataError, _pyarrow
from otel_mlmon.engine.results import COLUMNS, SEGMENT, SEGMENTED_COLUMNS, WindowResult, segment_of


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isinf(value) else format(value, ".17g")
    return str(value)


class MissingExtraError(ImportError):
    """An optional output (TensorBoard, MLflow) whose package is not installed; the message says what to install."""


class OutputError(Exception):
    """An output other than a file (TensorBoard, MLflow) refused the results; the message says what and why."""


def is_segmented(rows: Sequence[WindowResult], segmented: bool | None = None) -> bool:
    """Whether the outputs of ``rows`` carry the ``segment`` column: as told, else when a row has a segment."""
    return segmented if segmented is not None else any(segment_of(row) is not None for row in rows)


def _record(row: WindowResult, segmented: bool) -> dict[str, Any]:
    data = row.as_dict()
    if segmented:
        data[SEGMENT] = segment_of(row)
    return data


def results_table(rows: Iterable[WindowResult], segmented: bool | None = None) -> Any:
    """Window results as a pyarrow Table: the Parquet output's schema (the alert column is nullable; the
    ``segment`` column, when ``is_segmented``, too)."""
    pa = _pyarrow()
    rows = list(rows)
    segmented = is_segmented(rows, segmented)
    extra = [(SEGMENT, pa.string())] if segmented else []
    return pa.Table.from_pylist([_record(row, segmented) for row in rows], schema=pa.schema([
        ("model", pa.string()), ("model_version", pa.string()), ("period", pa.string()),
        ("window", pa.int64()), ("window_start", pa.string()), ("window_end", pa.string()),
        ("rows", pa.int64()), ("labeled_rows", pa.int64()), ("column", pa.string()), ("kind", pa.string()),
        ("metric", pa.string()), ("value", pa.float64()), ("lower_threshold", pa.float64()),
        ("upper_threshold", pa.float64()), ("alert", pa.bool_()), ("p_value", pa.float64()), *extra]))


def results_frame(rows: Iterable[WindowResult], segmented: bool | None = None) -> Any:
    """Window results as a pandas DataFrame, exactly as ``pandas.read_parquet`` reads the Parquet output."""
    return results_table(rows, segmented).to_pandas()


def output_format(path: str) -> str:
    for suffix in ("csv", "json", "parquet"):
        if path.lower().endswith("." + suffix):
            return suffix
    raise ValueError(f"--output {path!r}: the file name must end in .csv, .json or .parquet")


def write_results(results: Iterable[WindowResult], path: str, segmented: bool | None = None) -> int:
    """Write the rows as ``path``'s format (``segmented``: with the ``segment`` column; None: when a row has a
    segment); returns how many."""
    rows = list(results)
    kind = output_format(path)
    segmented = is_segmented(rows, segmented)
    names = SEGMENTED_COLUMNS if segmented else COLUMNS
    try:
        if kind == "csv":
            with open(path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(names)
                for row in rows:
                    data = _record(row, segmented)
                    writer.writerow([_cell(data[c]) for c in names])
        elif kind == "json":
            with open(path, "w", encoding="utf-8") as handle:
                json.dump({"results": [{**row.as_json(), **({SEGMENT: segment_of(row)} if segmented else {})}
                                       for row in rows]}, handle, indent=1)
        else:
            import pyarrow.parquet as pq

            pq.write_table(results_table(rows, segmented), path)
    except OSError as exc:
        raise DataError(f"--output {path}: cannot write: {exc}") from None
    return len(rows)
