"""Reading Parquet and CSV (optionally gzip-compressed) files in row batches with pyarrow: bounded memory.

Columns come out as numpy arrays: numbers as float64 (nulls as NaN), everything else as objects (None for null),
timestamps as epoch seconds. Errors name the file and the column, and say what to do.
"""

from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

BATCH_ROWS = 65_536
MAX_COLUMNS = 10_000  # default cap on a file's columns (`--max-columns`)
CSV_BLOCK_BYTES = 8 << 20


class DataError(Exception):
    """A problem with the data (exit code 1), as opposed to bad usage (exit code 2)."""


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.csv
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        from otel_mlmon.batch.output import MissingExtraError  # an error, not an exit: the Python API's caller lives on

        raise MissingExtraError("reading data files needs pyarrow: pip install 'otel-mlmon[batch]'") from None
    return __import__("pyarrow")


def file_format(path: str) -> str:
    name = path.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
        return "csv"
    raise DataError(f"{path}: unknown file type (expected .parquet, .csv or .csv.gz)")


@dataclass
class DataFile:
    """A Parquet or CSV file read in row batches. ``max_columns`` caps its width: a wider file is refused before
    any data is read (memory and time grow with the columns)."""

    path: str
    max_columns: int = MAX_COLUMNS

    def __post_init__(self) -> None:
        if not os.path.exists(self.path):
            raise DataError(f"{self.path}: no such file")
        self.format = file_format(self.path)
        self._schema: Any = None
        self._block_size = CSV_BLOCK_BYTES

    def _check_width(self, columns: int) -> None:
        if columns > self.max_columns:
            raise DataError(f"{self.path}: {columns:,} columns, more than the {self.max_columns:,} allowed; raise "
                            "--max-columns to read it (memory and time grow with the columns)")

    def _csv_header(self) -> None:
        """Count the columns of a CSV header without pyarrow, and size pyarrow's blocks to hold it (a block
        smaller than the header reads as an empty file): a block of at least four header lengths."""
        opener = gzip.open if self.path.lower().endswith(".gz") else open
        try:
            with opener(self.path, "rt", encoding="utf-8", errors="replace", newline="") as handle:
                header = next(csv.reader(handle), [])
        except (OSError, csv.Error, EOFError) as exc:
            raise DataError(f"{self.path}: cannot be read as csv: {exc}") from None
        self._check_width(len(header))
        size = sum(len(name.encode()) + 3 for name in header)  # quotes and a comma each, at most
        self._block_size = max(CSV_BLOCK_BYTES, 4 * size)

    def schema(self) -> Any:
        if self._schema is not None:
            return self._schema
        pa = _pyarrow()
        try:
            if self.format == "parquet":
                parquet = pa.parquet.ParquetFile(self.path)
                self._check_width(parquet.metadata.num_columns)
                self._schema = parquet.schema_arrow
            else:
                self._csv_header()
                with pa.csv.open_csv(self.path, read_options=pa.csv.ReadOptions(block_size=self._block_size)) as reader:
                    self._schema = reader.schema
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{self.path}: cannot be read as {self.format}: {exc}") from None
        return self._schema

    def columns(self) -> list[str]:
        return list(self.schema().names)

    def num_rows(self) -> int:
        pa = _pyarrow()
        if self.format == "parquet":
            return int(pa.parquet.ParquetFile(self.path).metadata.num_rows)
        return sum(batch.num_rows for batch in self._batches(None))

    def _batches(self, columns: list[str] | None) -> Iterator[Any]:
        pa = _pyarrow()
        try:
            if self.format == "parquet":
                self.schema()  # the width check
                # pre_buffer=False: pyarrow's default read-ahead buffers whole column chunks (measured: 1.5 GiB
                # of RSS for a 1.2 GiB file); without it memory stays at about one row group.
                parquet = pa.parquet.ParquetFile(self.path, pre_buffer=False, buffer_size=1 << 20)
                yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns)
                return
            self.schema()  # the width check, and a block size that holds the header
            convert = pa.csv.ConvertOptions(include_columns=columns) if columns else None
            with pa.csv.open_csv(self.path, read_options=pa.csv.ReadOptions(block_size=self._block_size),
                                 convert_options=convert) as reader:
                yield from reader
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{self.path}: cannot be read as {self.format}: {exc}") from None

    def batches(self, columns: list[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Row batches as {column: numpy array}."""
        for batch in self._batches(columns):
            yield {name: to_numpy(batch.column(i), self.path, name) for i, name in enumerate(batch.schema.names)}


def is_numeric_type(arrow_type: Any) -> bool:
    pa = _pyarrow()
    return bool(pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)
                or pa.types.is_decimal(arrow_type))


def is_time_type(arrow_type: Any) -> bool:
    pa = _pyarrow()
    return bool(pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type))


def to_numpy(array: Any, path: str, name: str) -> np.ndarray:
    pa = _pyarrow()
    kind = array.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        # Times to the microsecond (finer ones, such as pandas' nanoseconds, are truncated: safe=False).
        seconds = pa.compute.cast(pa.compute.cast(array, pa.timestamp("us"), safe=False), pa.int64())
        return np.asarray(seconds.to_numpy(zero_copy_only=False), dtype=np.float64) / 1e6
    if is_numeric_type(kind):
        return np.asarray(pa.compute.cast(array, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    if pa.types.is_dictionary(kind):
        array = array.dictionary_decode()
    return np.asarray(array.to_pylist(), dtype=object)


def epoch_seconds(values: np.ndarray, path: str, name: str) -> np.ndarray:
    """Timestamps of a column as epoch seconds: numbers are taken as seconds, strings parsed as ISO 8601."""
    if values.dtype.kind == "f":
        return values
    pa = _pyarrow()
    try:
        parsed = pa.compute.cast(pa.array(values.tolist(), type=pa.string()), pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"{path}: timestamp column {name!r} has values that are not ISO 8601 times: {exc}") from None
    out = np.asarray(pa.compute.cast(parsed, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.float64) / 1e6
    return out
