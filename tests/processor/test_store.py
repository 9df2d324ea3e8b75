"""The SQLite store: dedup, late-label join in both orders, the duplicate-label rule, TTLs, caps, durability."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from otel_mlmon.processor.decode import LabelBatch, PredictionBatch
from otel_mlmon.processor.store import Backpressure, Store

SECOND = 1_000_000_000


def _predictions(ids, model="m", version="1", time_ns=100 * SECOND) -> PredictionBatch:
    return PredictionBatch(model, version, time_ns, list(ids), labels=[f"p{i}" for i in ids],
                           scores={"": [0.5] * len(ids)})


def _labels(ids, values=None, model="m", version="1") -> LabelBatch:
    return LabelBatch(model, version, 0, list(ids), list(values or [f"t{i}" for i in ids]))


def test_predictions_are_deduplicated_and_sequenced(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    first = store.add_predictions([_predictions(["a", "b", "c"])], 1)
    again = store.add_predictions([_predictions(["b", "c", "d"])], 2)
    assert (first.accepted, first.duplicate) == (3, 0) and (again.accepted, again.duplicate) == (1, 2)
    rows = store.rows("m", "1", 0, 100)
    assert [r.id for r in rows] == ["a", "b", "c", "d"] and [r.seq for r in rows] == [0, 1, 2, 3]
    within = store.add_predictions([_predictions(["e", "e"])], 2)  # repeated inside one batch too
    assert (within.accepted, within.duplicate) == (1, 1)
    assert rows[0].outputs == {"label": "pa", "scores": {"": 0.5}} and rows[0].truth is None
    assert store.counters()["duplicate_predictions"] == 3 and store.counters()["pending_predictions"] == 5
    other = store.add_predictions([_predictions(["a"], version="2")], 3)  # another version: another prediction
    assert other.accepted == 1


def test_labels_join_in_either_order_and_the_first_label_wins(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    store.add_predictions([_predictions(["a", "b"])], 1)
    early = store.add_labels([_labels(["a", "x"], [1, 0])], 2)  # x arrives before its prediction
    assert (early.joined, early.orphaned) == (1, 1)
    late = store.add_predictions([_predictions(["x"])], 3)
    assert late.joined == 1
    duplicate = store.add_labels([_labels(["a", "x"], [0, 1])], 4)
    assert (duplicate.accepted, duplicate.duplicate) == (0, 2)
    rows = {r.id: r for r in store.rows("m", "1", 0, 10)}
    assert rows["a"].truth == 1 and rows["a"].labeled_ns == 2
    assert rows["x"].truth == 0 and rows["x"].labeled_ns == 2  # the orphan's arrival time
    assert rows["b"].truth is None
    counters = store.counters()
    assert counters["labels_joined"] == 2 and counters["duplicate_labels"] == 2
    assert counters["pending_predictions"] == 1 and counters["orphan_labels"] == 0


def test_ttls_expire_and_count(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"), label_ttl_s=10, orphan_ttl_s=5)
    store.add_predictions([_predictions(["old"], time_ns=0), _predictions(["new"], time_ns=100 * SECOND)], 1)
    store.add_labels([_labels(["ghost"])], 90 * SECOND)
    assert store.expire(100 * SECOND) == (1, 1)
    late = store.add_labels([_labels(["old", "new"])], 101 * SECOND)
    assert (late.joined, late.duplicate) == (1, 1)  # past its TTL, "old" takes no label
    counters = store.counters()
    assert counters["expired_predictions"] == 1 and counters["expired_orphans"] == 1
    assert counters["pending_predictions"] == 0 and counters["orphan_labels"] == 0


def test_caps_turn_into_backpressure_and_record_nothing(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"), max_pending=3, max_orphans=1)
    store.add_predictions([_predictions(["a", "b"])], 1)
    with pytest.raises(Backpressure):
        store.add_predictions([_predictions(["c", "d"])], 2)
    with pytest.raises(Backpressure):
        store.add_labels([_labels(["y", "z"])], 3)
    assert [r.id for r in store.rows("m", "1", 0, 10)] == ["a", "b"]
    counters = store.counters()
    assert counters["orphan_labels"] == 0 and counters["backpressure_predictions"] == 2
    assert counters["backpressure_labels"] == 2


def test_state_survives_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = Store(path)
    store.add_predictions([_predictions(["a", "b"])], 1)
    store.add_labels([_labels(["b", "q"])], 2)
    store.close()
    reopened = Store(path)
    assert reopened.counters()["pending_predictions"] == 1 and reopened.counters()["orphan_labels"] == 1
    assert reopened.add_predictions([_predictions(["q"])], 3).joined == 1
    assert reopened.add_predictions([_predictions(["c"])], 3).accepted == 1
    assert [r.seq for r in reopened.rows("m", "1", 0, 10)] == [0, 1, 2, 3]


def test_corrupt_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ValueError, match="not a usable SQLite database"):
        Store(str(path))


@pytest.mark.integration
def test_every_acknowledged_batch_survives_kill_9(tmp_path: Path) -> None:
    """A writer is killed mid-stream; every batch whose add_predictions returned is in the store."""
    path = tmp_path / "s.db"
    writer = textwrap.dedent(f"""
        import sys
        from otel_mlmon.processor.decode import PredictionBatch
        from otel_mlmon.processor.store import Store
        store = Store({str(path)!r})
        for n in range(100000):
            ids = [f"{{n}}-{{i}}" for i in range(50)]
            store.add_predictions([PredictionBatch("m", "", n, ids, values=[1.0] * 50)], n)
            print(n, flush=True)
    """)
    root = str(Path(__file__).parents[2])
    process = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True, cwd=root,
                               env={**os.environ, "PYTHONPATH": root})
    acknowledged = -1
    assert process.stdout is not None
    for line in process.stdout:
        acknowledged = int(line)
        if acknowledged >= 200:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    store = Store(str(path))
    ids = {r.id for r in store.rows("m", "", 0, 10**9)}
    assert all(f"{n}-{i}" in ids for n in range(acknowledged + 1) for i in range(50))
    assert len(ids) % 50 == 0  # a batch is all in or all out
