"""Window specifications: by rows (``chunk_size``), by event time (``window``), or by count (``chunks``).

Time windows are ``[k·W, (k+1)·W)`` of the Unix epoch, UTC (a 1 h window starts on the hour). Row windows take
rows in event-time order — (time, id) when there is a time, else the order of the file — never arrival order; the
last, incomplete window is kept and reported with its real row count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from otel_mlmon.sketch._fields import describe

_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``30s``, ``15min``, ``1h``, ``1d``, ``1w``."""
    match = _DURATION.match(str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"window {text!r} is not a duration like 30s, 15min, 1h, 1d or 1w")
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"window {text!r} must be longer than zero")
    return seconds


MAX_CHUNK_SIZE = 10**7  # rows of one row window
MAX_CHUNKS = 10**6  # windows of one period
MIN_WINDOW_S = 1.0
MAX_WINDOW_S = 366 * 86400.0


@dataclass(frozen=True)
class WindowSpec:
    """Exactly one of ``chunk_size`` (1 .. 10**7 rows), ``window`` (a duration of 1 s .. 366 d) or ``chunks``
    (1 .. 10**6 windows). The bounds keep one window's work and the number of windows of a period finite."""

    chunk_size: int | None = None
    window: str | None = None
    chunks: int | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.chunk_size, self.window, self.chunks) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of --chunk-size, --window or --chunks")
        for name, value, most, unit in (("--chunk-size", self.chunk_size, MAX_CHUNK_SIZE, "rows"),
                                        ("--chunks", self.chunks, MAX_CHUNKS, "windows")):
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
                raise ValueError(f"{name} must be a whole number of {unit} from 1 to {most:,}, got "
                                 f"{describe(value)}")
        if self.window is not None:
            if not isinstance(self.window, str):
                raise ValueError(f"--window must be a duration like 30s, 15min, 1h, 1d or 1w, got "
                                 f"{describe(self.window)}")
            seconds = parse_duration(self.window)
            if not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
                raise ValueError(f"--window must be from 1s to 366d, got {self.window!r}")

    @property
    def seconds(self) -> float | None:
        return parse_duration(self.window) if self.window is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("chunk_size", self.chunk_size), ("window", self.window),
                                  ("chunks", self.chunks)) if v is not None}

    @classmethod
    def from_dict(cls, data: Any) -> WindowSpec:
        """The spec of ``to_dict()`` output; anything else is a ``ValueError``."""
        if not isinstance(data, dict):
            raise ValueError(f"must be an object with one of chunk_size, window or chunks, got {describe(data)}")
        try:
            return cls(chunk_size=data.get("chunk_size"), window=data.get("window"), chunks=data.get("chunks"))
        except ValueError as exc:  # the message names the fields, not the command-line flags
            message = str(exc).replace("--chunk-size", "chunk_size").replace("--chunks", "chunks")
            raise ValueError(message.replace("--window", "window")) from None

    @property
    def by_rows(self) -> bool:
        return self.window is None

    def row_windows(self, first_row: int, count: int, total_rows: int | None) -> np.ndarray:
        """Window index of rows ``first_row .. first_row + count - 1`` of a period of ``total_rows`` rows.

        ``chunks`` splits the period into that many windows whose sizes differ by at most one row (so it needs
        the period's row count); ``chunk_size`` needs nothing.
        """
        return self.rank_windows(np.arange(first_row, first_row + count, dtype=np.int64), total_rows)

    def rank_windows(self, rows: np.ndarray, total_rows: int | None) -> np.ndarray:
        """Window index of the rows of ranks ``rows`` (0-based, in event-time order) of a period of
        ``total_rows`` rows."""
        if self.chunk_size is not None:
            return rows // self.chunk_size
        assert self.chunks is not None
        if total_rows is None:
            raise ValueError("--chunks needs the number of rows of the period")
        windows = min(self.chunks, max(total_rows, 1))
        return rows * windows // max(total_rows, 1)

    def time_windows(self, epoch_seconds: np.ndarray) -> np.ndarray:
        """Window start (epoch seconds) of each timestamp."""
        seconds = self.seconds
        assert seconds is not None
        return np.floor(epoch_seconds / seconds) * seconds
