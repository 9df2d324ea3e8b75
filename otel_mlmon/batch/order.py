"""The event-time order of a file's rows, which row windows follow (DESIGN §4).

Rows are taken in (event time, prediction id) order, as the processor takes a stream whatever order it arrived in:
the time to the microsecond (as ``mlmon replay`` sends it), then the id column's value as text (``str`` of the
value read; UTF-8 order, as SQLite compares the processor's ids), or, without an id column, the file's row order.
A file already in that order is streamed as it is (bounded memory); otherwise one more pass reads the timestamp and
id columns and ranks the rows (memory: a few bytes per row plus the ids).
"""

from __future__ import annotations

import numpy as np

from otel_mlmon.batch.reader import DataError, DataFile, epoch_seconds


def event_microseconds(values: np.ndarray, path: str, name: str) -> np.ndarray:
    """Event times of a timestamp column as whole microseconds since the epoch; an empty time is an error."""
    seconds = epoch_seconds(values, path, name)
    empty = np.flatnonzero(np.isnan(seconds))
    if empty.size:
        raise DataError(f"{path}: timestamp column {name!r} has an empty value; windows in event-time order need "
                        "a time on every row (fill it, or leave out --timestamp-column)")
    return np.round(seconds * 1e6).astype(np.int64)


def id_strings(values: np.ndarray) -> list[str]:
    """The ids of a batch as the text they are ordered (and sent) by."""
    return [str(v) for v in values.tolist()]


def _ordered(times: np.ndarray, ids: np.ndarray | None, previous: tuple[int, str] | None) -> bool:
    """Whether one batch's keys are in order, after the last key of the batch before (ids made text only where
    times tie)."""
    if previous is not None and times.size and (times[0] < previous[0] or (
            ids is not None and times[0] == previous[0] and str(ids[0]) < previous[1])):
        return False
    steps = np.diff(times)
    if (steps < 0).any():
        return False
    if ids is not None:
        return all(str(ids[i]) <= str(ids[i + 1]) for i in np.flatnonzero(steps == 0).tolist())
    return True


def event_ranks(data: DataFile, timestamp_column: str, id_column: str | None) -> np.ndarray | None:
    """Each row's rank in event-time order, or None when the file is already in that order."""
    wanted = [timestamp_column] + ([id_column] if id_column and id_column != timestamp_column else [])
    previous: tuple[int, str] | None = None
    in_order = True
    for batch in data.batches(wanted):
        times = event_microseconds(batch[timestamp_column], data.path, timestamp_column)
        ids = batch[id_column] if id_column else None
        if in_order and not _ordered(times, ids, previous):
            in_order = False  # keep reading: an empty time further on is still an error
        if times.size:
            previous = (int(times[-1]), str(ids[-1]) if ids is not None else "")
    if in_order:
        return None
    time_parts, id_parts = [], []
    for batch in data.batches(wanted):
        time_parts.append(event_microseconds(batch[timestamp_column], data.path, timestamp_column))
        if id_column:
            id_parts += id_strings(batch[id_column])
    times = np.concatenate(time_parts) if time_parts else np.zeros(0, dtype=np.int64)
    if id_column:
        _, id_rank = np.unique(np.asarray(id_parts, dtype=object), return_inverse=True)
        order = np.lexsort((id_rank.ravel(), times))  # stable: equal keys keep the file's order
    else:
        order = np.argsort(times, kind="stable")
    ranks = np.empty(order.size, dtype=np.int64)
    ranks[order] = np.arange(order.size, dtype=np.int64)
    return ranks
