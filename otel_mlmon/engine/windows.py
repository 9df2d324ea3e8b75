"""Window specifications: by rows (``chunk_size``), by event time (``window``), or by count (``chunks``).

Time windows are aligned to the Unix epoch (a 1 h window starts on the hour, UTC). Row windows number rows in
arrival order; the last, incomplete window is kept and reported with its real row count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

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


@dataclass(frozen=True)
class WindowSpec:
    """Exactly one of ``chunk_size``, ``window`` (a duration) or ``chunks``."""

    chunk_size: int | None = None
    window: str | None = None
    chunks: int | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.chunk_size, self.window, self.chunks) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of --chunk-size, --window or --chunks")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"--chunk-size must be a positive number of rows, got {self.chunk_size}")
        if self.chunks is not None and self.chunks < 1:
            raise ValueError(f"--chunks must be a positive number of windows, got {self.chunks}")
        if self.window is not None:
            parse_duration(self.window)

    @property
    def seconds(self) -> float | None:
        return parse_duration(self.window) if self.window is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("chunk_size", self.chunk_size), ("window", self.window),
                                  ("chunks", self.chunks)) if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowSpec:
        return cls(chunk_size=data.get("chunk_size"), window=data.get("window"), chunks=data.get("chunks"))

    @property
    def by_rows(self) -> bool:
        return self.window is None

    def row_windows(self, first_row: int, count: int, total_rows: int | None) -> np.ndarray:
        """Window index of rows ``first_row .. first_row + count - 1`` of a period of ``total_rows`` rows.

        ``chunks`` splits the period into that many windows whose sizes differ by at most one row (so it needs
        the period's row count); ``chunk_size`` needs nothing.
        """
        rows = np.arange(first_row, first_row + count, dtype=np.int64)
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
