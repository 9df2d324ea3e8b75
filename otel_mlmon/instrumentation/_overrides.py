"""A private hook to record predictions as of another time, with given predicted labels (``mlmon replay``).

``recorded_as(time_unix_nano=t, labels=[...])`` is a context manager (a ``ContextVar``, so each thread and each
asyncio task sees its own block). Every instrumented predict call made inside it:

- records its rows in ``ml.predictions`` events with ``t`` as their event time (the log record's timestamp, or
  the rows' entries of ``ml.prediction.time`` when they share a buffered event with calls of other times; the
  call's span keeps its real start and end times), and its feature and output sketches in the sketch export
  interval of ``t``;
- when ``labels`` is given (one per row of the call), records those as ``ml.prediction.label`` instead of the labels
  derived from the model's output; scores and values are still read from the output. A call whose row count differs
  from ``len(labels)`` does not raise: the mismatch is logged once (counted as ``override_labels_mismatch``) and the
  labels override is ignored for that call (its time still applies);
- when ``columns`` is given (column name -> one raw value per row), takes the segment and sensitive columns' values
  (``segment_by`` / ``sensitive_column``) from it rather than from the call's input, so that a model never sees
  columns it was not fitted on. Values of another length than the call's rows are ignored (the rows are then
  ``__missing__``).

Not part of the public API: it exists so that a replay of a file sends the file's own times and predicted labels.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

from otel_mlmon.instrumentation._outputs import homogeneous


class Override:
    """What a ``recorded_as`` block sets: the event time (ns since the epoch) and the predicted labels."""

    __slots__ = ("columns", "labels", "time_unix_nano")

    def __init__(self, time_unix_nano: int | None, labels: list[Any] | None,
                 columns: Mapping[str, list[Any]] | None = None) -> None:
        self.time_unix_nano = time_unix_nano
        self.labels = labels
        self.columns = columns


CURRENT: ContextVar[Override | None] = ContextVar("otel_mlmon_override", default=None)


def _label_list(labels: Sequence[Any]) -> list[Any]:
    """Labels as one OTLP array type (what ``ml.prediction.label`` carries for a model's own output)."""
    if isinstance(labels, (str, bytes)):
        raise TypeError("labels must be a sequence with one predicted label per row, not one string")
    array = np.asarray(labels.tolist() if hasattr(labels, "tolist") else list(labels), dtype=object)
    if array.ndim != 1:
        raise ValueError(f"labels must be one-dimensional (one label per row), got shape {array.shape}")
    values = [v.item() if hasattr(v, "item") else v for v in array.tolist()]
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and value != value):
            raise ValueError(f"labels[{i}] is {value!r}: every row needs a predicted label")
    return homogeneous(np.asarray(values, dtype=object)) if values else []


@contextmanager
def recorded_as(time_unix_nano: int | None = None, labels: Sequence[Any] | None = None,
                columns: Mapping[str, Sequence[Any]] | None = None) -> Iterator[Override]:
    """Record the instrumented predict calls of this block as of ``time_unix_nano``, with these ``labels``.

    Args:
        time_unix_nano: the event time of the block's calls, in nanoseconds since the Unix epoch; None: the
            calls' own time.
        labels: the predicted label of each row of every call in the block (e.g. a file's prediction column);
            None: the labels derived from the model's output.
        columns: raw values (one per row) of the segment and sensitive columns, by column name.

    Raises:
        TypeError / ValueError: a time that is not a non-negative integer, labels that are not one per row.
    """
    if time_unix_nano is not None:
        if isinstance(time_unix_nano, bool) or not isinstance(time_unix_nano, (int, np.integer)):
            raise TypeError(f"time_unix_nano must be an integer (ns since the Unix epoch), got "
                            f"{type(time_unix_nano).__name__}")
        time_unix_nano = int(time_unix_nano)
        if not 0 <= time_unix_nano < 2**63:
            raise ValueError(f"time_unix_nano must be in [0, 2**63) ns since the Unix epoch, got {time_unix_nano}")
    if columns is not None and not isinstance(columns, Mapping):
        raise TypeError(f"columns must map a column name to its values, got {type(columns).__name__}")
    override = Override(time_unix_nano, None if labels is None else _label_list(labels),
                        None if columns is None else {str(k): list(v) for k, v in columns.items()})
    token = CURRENT.set(override)
    try:
        yield override
    finally:
        CURRENT.reset(token)
