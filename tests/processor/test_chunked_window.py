"""A window read back in chunks (``Store.row_chunks`` + ``window_data_chunks``, what the processor evaluates) gives
the very window data of the whole read (``window_data``): sketches, labels, scored rows and the engine's results."""

from __future__ import annotations

import numpy as np
import pytest

from otel_mlmon.engine.evaluate import Policy, evaluate_window
from otel_mlmon.processor.assemble import window_data, window_data_chunks
from otel_mlmon.processor.decode import LabelBatch, PredictionBatch
from otel_mlmon.processor.store import Store, StoredRows

from .test_assemble import _profile, _rows


def _chunks(rows: StoredRows, size: int) -> list[StoredRows]:
    return [StoredRows([], rows.times[i: i + size], rows.labels[i: i + size], rows.scores[i: i + size],
                       rows.values[i: i + size], rows.extras[i: i + size], rows.truths[i: i + size],
                       rows.labeled_ns[i: i + size]) for i in range(0, len(rows), size)]


def _same(chunked, whole) -> None:
    assert (chunked.rows, chunked.columns, chunked.start, chunked.end) == \
        (whole.rows, whole.columns, whole.start, whole.end)
    assert {k: v.to_dict() for k, v in chunked.sketches.items()} == \
        {k: v.to_dict() for k, v in whole.sketches.items()}
    assert list(chunked.sketches) == list(whole.sketches)
    assert (chunked.labeled.y_true, chunked.labeled.y_pred, np.asarray(chunked.labeled.scores).tolist()) == \
        (whole.labeled.y_true, whole.labeled.y_pred, whole.labeled.scores)
    assert (chunked.scored is None) == (whole.scored is None)
    if whole.scored is not None:
        assert chunked.scored.y_pred == whole.scored.y_pred
        assert np.asarray(chunked.scored.scores).tolist() == whole.scored.scores


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("size", [1, 7, 300, 1000])
def test_chunks_give_the_whole_windows_data(task: str, size: int) -> None:
    profile = _profile(task)
    rows = _rows(task, 300, seed=11)
    rows.truths[3] = "1"  # labels as sent: strings and numbers, one class either way
    whole = window_data(profile, 2, rows, [], features=False)
    found = window_data_chunks(profile, 2, _chunks(rows, size), [], features=False)
    assert found is not None
    chunked, latency = found
    _same(chunked, whole)
    waits = [(labeled - at) / 1e9 for at, labeled in zip(rows.times, rows.labeled_ns) if labeled is not None]
    assert latency == sum(waits) / len(waits)
    # the engine's results, estimated performance included, are the same to the last digit
    policy = Policy()
    assert [r.as_json() for r in evaluate_window(profile, chunked, policy)] == \
        [r.as_json() for r in evaluate_window(profile, whole, policy)]


def test_time_window_bounds_and_no_rows() -> None:
    profile = _profile("classification")
    rows = _rows("classification", 40, seed=2)
    whole = window_data(profile, 0, rows, [], features=False, start_ns=0, end_ns=100)
    found = window_data_chunks(profile, 0, _chunks(rows, 16), [], features=False, start_ns=0, end_ns=100)
    assert found is not None
    _same(found[0], whole)
    empty = window_data_chunks(profile, 0, [], [], features=False, start_ns=0, end_ns=100)
    assert empty is not None
    _same(empty[0], window_data(profile, 0, StoredRows.empty(), [], features=False, start_ns=0, end_ns=100))
    assert empty[1] is None


def test_rows_with_extras_or_a_class_named_empty_take_the_whole_read() -> None:
    profile = _profile("classification")
    rows = _rows("classification", 50, seed=3)
    rows.extras[30] = '{"features": {"x": 1.5}}'
    assert window_data_chunks(profile, 0, _chunks(rows, 16), [], features=True) is None
    profile.classes = ["", "1"]
    assert window_data_chunks(profile, 0, _chunks(_rows("classification", 5, seed=4), 2), [], features=False) \
        is None


def test_the_store_reads_a_window_back_in_chunks_in_order(tmp_path) -> None:
    store = Store(str(tmp_path / "s.db"))
    n = 50
    ids = [f"p{i:03d}" for i in range(n)]
    times = [1_000 + (i * 7) % n for i in range(n)]  # not in time order
    store.add_predictions([PredictionBatch("m", "", 1_000, ids, labels=[str(i % 2) for i in range(n)],
                                           scores={"": [i / n for i in range(n)]}, times=times)], 5)
    store.add_labels([LabelBatch("m", "", 1_000, ids[::2], [i % 3 for i in range(0, n, 2)])], 9)
    whole = store.stored_rows("m", "")
    chunks = list(store.row_chunks("m", "", size=7))
    assert [len(c) for c in chunks] == [7] * 7 + [1]
    for column in ("times", "labels", "scores", "values", "extras", "truths", "labeled_ns"):
        assert [v for c in chunks for v in getattr(c, column)] == getattr(whole, column)
    assert all(c.ids == [] for c in chunks)
    first, last = (whole.times[10], whole.ids[10]), (whole.times[30], whole.ids[30])
    part = list(store.row_chunks("m", "", first, last, size=4))
    assert [t for c in part for t in c.times] == whole.times[10:31]
    store.close()
