"""Writing window results as CSV, JSON or Parquet, numbers at full precision (17 significant digits)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from typing import Any

from otel_mlmon.batch.reader import DataError, _pyarrow
from otel_mlmon.engine.results import COLUMNS, WindowResult


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


def output_format(path: str) -> str:
    for suffix in ("csv", "json", "parquet"):
        if path.lower().endswith("." + suffix):
            return suffix
    raise ValueError(f"--output {path!r}: the file name must end in .csv, .json or .parquet")


def write_results(results: Iterable[WindowResult], path: str) -> int:
    rows = list(results)
    kind = output_format(path)
    try:
        if kind == "csv":
            with open(path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(COLUMNS)
                for row in rows:
                    data = row.as_dict()
                    writer.writerow([_cell(data[c]) for c in COLUMNS])
        elif kind == "json":
            with open(path, "w", encoding="utf-8") as handle:
                json.dump({"results": [row.as_json() for row in rows]}, handle, indent=1)
        else:
            pa = _pyarrow()
            import pyarrow.parquet as pq

            table = pa.Table.from_pylist([row.as_dict() for row in rows], schema=pa.schema([
                ("model", pa.string()), ("model_version", pa.string()), ("period", pa.string()),
                ("window", pa.int64()), ("window_start", pa.string()), ("window_end", pa.string()),
                ("rows", pa.int64()), ("labeled_rows", pa.int64()), ("column", pa.string()), ("kind", pa.string()),
                ("metric", pa.string()), ("value", pa.float64()), ("lower_threshold", pa.float64()),
                ("upper_threshold", pa.float64()), ("alert", pa.bool_()), ("p_value", pa.float64())]))
            pq.write_table(table, path)
    except OSError as exc:
        raise DataError(f"--output {path}: cannot write: {exc}") from None
    return len(rows)
