"""Prediction ids: one per row, given by the caller or generated (UUID4, hex), so labels can be joined later."""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextvars import ContextVar, Token
from types import TracebackType

import numpy as np

from otel_mlmon.instrumentation import _guard
from otel_mlmon.instrumentation._runtime import RUNTIME

_CURRENT: ContextVar[PredictionIds | None] = ContextVar("otel_mlmon_prediction_ids", default=None)


POOL_SIZE = 256  # ids made at a time for calls on few rows


def _bulk(rows: int) -> list[str]:
    raw = np.frombuffer(os.urandom(16 * rows), dtype=np.uint8).reshape(rows, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.tobytes().hex()
    return [text[i: i + 32] for i in range(0, 32 * rows, 32)]


def generate(rows: int) -> list[str]:
    """``rows`` random UUID4s as 32-character hex strings.

    Calls on few rows take their ids from a pool made ``POOL_SIZE`` at a time (one ``os.urandom`` call and
    vectorized bit-setting for 256 ids costs less than two single ones); ``list.pop`` is atomic, so threads
    never share an id, and a forked child starts with an empty pool (else it would repeat its parent's ids). The
    pool is the runtime's (``RUNTIME.id_pool``), emptied by its fork hook.
    """
    if rows <= 0:
        return []
    if rows >= 32:
        return _bulk(rows)
    pool = RUNTIME.id_pool
    out = []
    for _ in range(rows):
        try:
            out.append(pool.pop())
        except IndexError:
            pool.extend(_bulk(POOL_SIZE))
            out.append(pool.pop())
    return out



class PredictionIds:
    """Ids of the rows predicted inside a ``prediction_ids()`` block.

    Every instrumented call on ``n`` rows inside the block uses the block's ``n`` ids: the ids given, or the ids
    generated at the first call (so ``predict_proba`` then ``predict`` on the same rows share ids). A call on a
    different number of rows gets fresh ids, and the mismatch is logged once.
    """

    def __init__(self, ids: Iterable[object] | None = None) -> None:
        self._given: list[str] | None = None
        if ids is not None:
            if isinstance(ids, (str, bytes)):
                raise TypeError("ids must be a sequence of ids, not a single string")
            given = list(ids)
            for i, value in enumerate(given):
                if value is None or (isinstance(value, str) and not value):
                    raise ValueError(f"ids[{i}] is {value!r}: every row needs a non-empty id")
            self._given = [str(v) for v in given]
        self.ids: list[str] = list(self._given) if self._given is not None else []
        self._token: Token[PredictionIds | None] | None = None

    def take(self, rows: int) -> list[str]:
        if self.ids and len(self.ids) == rows:
            return self.ids
        if self._given is None and not self.ids:
            self.ids = generate(rows)
            return self.ids
        _guard.failure("ids_row_mismatch", message=(
            f"prediction_ids() holds {len(self.ids)} ids but the model was called on {rows} rows; "
            "fresh ids were generated for that call"))
        return generate(rows)

    def __enter__(self) -> PredictionIds:
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None


def assign(rows: int, found: list[str | None] | None = None) -> list[str]:
    """Ids for a call on ``rows`` rows: the ids given to the enclosing ``prediction_ids(ids=...)`` block, else
    ``found`` (read from the id column or baggage; rows without one get a generated id), else the block's
    generated ids, else generated."""
    current = _CURRENT.get()
    if found is not None and len(found) == rows and (current is None or current._given is None):
        ids = _complete(found)
        if current is not None and not current.ids:
            current.ids = ids  # ``p.ids`` of a block without ids tells what was recorded
        return ids
    return current.take(rows) if current is not None else generate(rows)


def _complete(found: list[str | None]) -> list[str]:
    if all(found):
        return found  # type: ignore[return-value]
    missing = sum(1 for i in found if not i)
    _guard.failure("id_column_missing", message=(
        f"{missing} of {len(found)} rows had no id in the id column; they were given generated ids"))
    fresh = iter(generate(missing))
    return [i if i else next(fresh) for i in found]
