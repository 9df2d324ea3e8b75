"""The SQLite store: dedup, late-label join in both orders, the duplicate-label rule, event-time TTLs and lateness,
per-model quotas, caps, rollback of failed transactions, disk full, durability."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from otel_mlmon.processor.decode import LabelBatch, PredictionBatch
from otel_mlmon.processor.store import Backpressure, Store, Stream

SECOND = 1_000_000_000


def _predictions(ids, model="m", version="1", time_ns=100 * SECOND) -> PredictionBatch:
    return PredictionBatch(model, version, time_ns, list(ids), labels=[f"p{i}" for i in ids],
                           scores={"": [0.5] * len(ids)})


def _labels(ids, values=None, model="m", version="1") -> LabelBatch:
    return LabelBatch(model, version, 0, list(ids), list(values or [f"t{i}" for i in ids]))


def test_predictions_are_deduplicated_and_kept_in_event_time_order(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    first = store.add_predictions([_predictions(["c", "b", "a"])], 1)
    again = store.add_predictions([_predictions(["b", "c", "d"]), _predictions(["z"], time_ns=50 * SECOND)], 2)
    assert (first.accepted, first.duplicate) == (3, 0) and (again.accepted, again.duplicate) == (2, 2)
    rows = store.rows("m", "1")
    assert [r.id for r in rows] == ["z", "a", "b", "c", "d"]  # (event time, id), not arrival order
    rows = rows[1:]
    within = store.add_predictions([_predictions(["e", "e"])], 2)  # repeated inside one batch too
    assert (within.accepted, within.duplicate) == (1, 1)
    assert rows[0].outputs == {"label": "pa", "scores": {"": 0.5}} and rows[0].truth is None
    assert store.counters()["duplicate_predictions"] == 3 and store.counters()["pending_predictions"] == 6
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
    rows = {r.id: r for r in store.rows("m", "1")}
    assert rows["a"].truth == 1 and rows["a"].labeled_ns == 2
    assert rows["x"].truth == 0 and rows["x"].labeled_ns == 2  # the orphan's arrival time
    assert rows["b"].truth is None
    counters = store.counters()
    assert counters["labels_joined"] == 2 and counters["duplicate_labels"] == 2
    assert counters["pending_predictions"] == 1 and counters["orphan_labels"] == 0


def test_time_bucket_keys_are_the_windows_time_buckets_counts(tmp_path: Path) -> None:
    """The index-seeking ``time_bucket_keys`` finds exactly the windows ``time_buckets`` counts rows in: seeded
    times with empty windows between, rows on window edges, ranges that start and end inside windows."""
    import numpy as np

    store = Store(str(tmp_path / "s.db"), max_lateness_s=10**9)
    rng = np.random.default_rng(3)
    width = 10 * SECOND
    times = sorted({int(t) for t in rng.integers(SECOND, 400 * SECOND, 300)} | {50 * SECOND, 60 * SECOND - 1})
    times = [t for t in times if not 200 * SECOND <= t < 260 * SECOND]  # six empty windows
    store.add_predictions([PredictionBatch("m", "1", times[0], [f"r{i}" for i in range(len(times))],
                                           values=[0.0] * len(times), times=times)], 0)
    ranges = [(0, 10**12), (50 * SECOND, 60 * SECOND), (55 * SECOND, 215 * SECOND), (201 * SECOND, 259 * SECOND),
              (60 * SECOND - 1, 60 * SECOND), (399 * SECOND, 10**12)]
    for first, end in ranges:
        counted = sorted(store.time_buckets("m", "1", width, first, end))
        assert store.time_bucket_keys("m", "1", width, first, end) == counted
        assert bool(counted) == (first != 201 * SECOND)  # that range is inside the empty windows
    assert store.time_bucket_keys("unknown", "1", width, 0, 10**12) == []


def test_ttls_count_in_event_time_and_expire_with_counts(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"), label_ttl_s=10, orphan_ttl_s=5)
    store.add_predictions([_predictions(["old"], time_ns=1), _predictions(["new"], time_ns=100 * SECOND)], 1)
    store.add_labels([_labels(["ghost"])], 2)
    # A backfill: processing time is a month on, but the model's clock (its event time) is not: nothing expires.
    month = 30 * 86400 * SECOND
    assert store.expire("m", "1", 4 * SECOND, 3) == (0, 0)
    assert store.expire("m", "1", 100 * SECOND, 3) == (1, 0)  # the clock moved 10 s past "old"
    assert store.expire("m", "1", 100 * SECOND, month) == (0, 1)  # an orphan also expires in processing time
    late = store.add_labels([_labels(["old", "new"])], 101 * SECOND)
    assert (late.joined, late.duplicate) == (1, 1)  # past its TTL, "old" takes no label
    counters = store.counters()
    assert counters["expired_predictions"] == 1 and counters["expired_orphans"] == 1
    assert counters["pending_predictions"] == 0 and counters["orphan_labels"] == 0


def test_quotas_are_per_model_name_it_and_keep_the_rest(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"), max_pending=3, max_orphans=1)
    store.add_predictions([_predictions(["a", "b"])], 1)
    with pytest.raises(Backpressure, match="model 'm' version '1'"):  # m is full; n's rows are still taken
        store.add_predictions([_predictions(["c", "d"]), _predictions(["c", "d"], model="n")], 2)
    assert [r.id for r in store.rows("m", "1")] == ["a", "b"] and len(store.rows("n", "1")) == 2
    with pytest.raises(Backpressure, match="model 'm'"):  # a joinable label is taken, one orphan waits, one not
        store.add_labels([_labels(["a", "y", "z"])], 3)
    assert store.rows("m", "1")[0].truth == "ta"
    counters = store.counters()
    assert counters["orphan_labels"] == 1 and counters["backpressure_predictions"] == 2
    assert counters["backpressure_labels"] == 1 and counters["labels_joined"] == 1


def test_rows_older_than_the_lateness_bound_are_counted_not_stored(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"), max_lateness_s=60)
    store.add_predictions([_predictions(["a"], time_ns=1000 * SECOND)], 1)
    on_time = store.add_predictions([_predictions(["b"], time_ns=941 * SECOND)], 2)  # 59 s behind: revises
    late = store.add_predictions([_predictions(["c", "d"], time_ns=939 * SECOND)], 3)
    assert on_time.accepted == 1 and (late.accepted, late.late) == (0, 2) and sum(late.refused.values()) == 1
    assert store.counters()["late_dropped"] == 2 and [r.id for r in store.rows("m", "1")] == ["b", "a"]


def test_a_failing_write_rolls_back_and_the_next_one_works(tmp_path: Path) -> None:
    """A value SQLite cannot store (an int past 2**63) raises inside the transaction: it is rolled back, and the
    store keeps working (it used to answer every later write 'cannot start a transaction within a transaction')."""
    from otel_mlmon.processor.decode import SketchPoint
    from otel_mlmon.sketch import NumericSketch

    store = Store(str(tmp_path / "s.db"))
    with pytest.raises(OverflowError):
        store.add_sketches([SketchPoint("m", "1", "f", 2**64 - 1, 2**64 - 1, NumericSketch())], 1)
    with pytest.raises(OverflowError):
        store.add_predictions([_predictions(["x"], time_ns=2**64 - 1)], 1)
    assert store.add_predictions([_predictions(["a"])], 2).accepted == 1
    assert [r.id for r in store.rows("m", "1")] == ["a"] and store.healthy


def test_model_and_feature_caps_refuse_per_record(tmp_path: Path) -> None:
    from otel_mlmon.processor.decode import SketchPoint
    from otel_mlmon.sketch import NumericSketch

    store = Store(str(tmp_path / "s.db"), max_models=2, max_features=1)
    added = store.add_predictions([_predictions(["a"], model=name) for name in ("m", "n", "o")], 1)
    assert added.accepted == 2 and sum(added.refused.values()) == 1 and store.counters()["models_over_cap"] == 1
    points = [SketchPoint("m", "1", column, 0, SECOND, NumericSketch()) for column in ("f1", "f2", "f1")]
    added = store.add_sketches(points, 1)
    assert added.accepted == 2 and sum(added.refused.values()) == 1 and store.counters()["features_over_cap"] == 1


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
    assert [r.id for r in reopened.rows("m", "1")] == ["a", "b", "c", "q"]
    assert reopened.stream("m", "1") == Stream(latest_ns=100 * SECOND, arrived_ns=3, captured=False)


# The predictions table of schema 3 (model and version in every row), as the store of the previous release made it.
_SCHEMA_3 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '3');
CREATE TABLE predictions (
    model TEXT NOT NULL, version TEXT NOT NULL, id TEXT NOT NULL, time_ns INTEGER NOT NULL,
    received_ns INTEGER NOT NULL, label TEXT, score REAL, value REAL, extra TEXT, truth TEXT, labeled_ns INTEGER,
    expired INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (model, version, id));
CREATE INDEX predictions_order ON predictions (model, version, time_ns, id);
CREATE INDEX predictions_pending ON predictions (model, version, time_ns) WHERE truth IS NULL AND expired = 0;
INSERT INTO predictions VALUES ('m', '1', 'a', 100000000000, 1, 'p1', 0.5, NULL, NULL, '"t"', 2, 0);
INSERT INTO predictions VALUES ('m', '1', 'b', 100000000000, 1, 'p0', 0.25, NULL, NULL, NULL, NULL, 0);
INSERT INTO predictions VALUES ('n', '', 'a', 90000000000, 1, NULL, NULL, 1.5, NULL, NULL, NULL, 0);
"""


def test_a_schema_3_store_is_migrated_with_every_row(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    with sqlite3.connect(path) as db:
        db.executescript(_SCHEMA_3)
    store = Store(path)
    rows = {r.id: r for r in store.rows("m", "1")}
    assert sorted(rows) == ["a", "b"] and rows["a"].truth == "t" and rows["a"].outputs == {"label": "p1", "scores":
                                                                                             {"": 0.5}}
    assert [(r.id, r.outputs) for r in store.rows("n", "")] == [("a", {"value": 1.5})]
    assert store.counters()["pending_predictions"] == 2
    assert store.add_labels([_labels(["b"])], 3).joined == 1  # the migrated rows join their labels
    assert store.add_predictions([_predictions(["c"])], 4).accepted == 1
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("5",)
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'predictions_v3'").fetchone() == (0,)
    assert [r.id for r in Store(path).rows("m", "1")] == ["a", "b", "c"]


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
            store.add_predictions([PredictionBatch("m", "", n + 1, ids, values=[1.0] * 50)], n)
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
    ids = {r.id for r in store.rows("m", "")}
    assert all(f"{n}-{i}" in ids for n in range(acknowledged + 1) for i in range(50))
    assert len(ids) % 50 == 0  # a batch is all in or all out


def _wal_frames(path: str) -> tuple[int, int]:
    """(frames in the WAL, frames of them copied into the database), from the WAL index (``-shm``: mxFrame at byte
    16, nBackfill at byte 96)."""
    import struct

    with open(path + "-shm", "rb") as handle:
        header = handle.read(136)
    return struct.unpack_from("=I", header, 16)[0], struct.unpack_from("=I", header, 96)[0]


def test_the_wal_is_checkpointed_off_the_write_path_and_stays_bounded(tmp_path: Path, monkeypatch) -> None:
    """No commit checkpoints (``wal_autocheckpoint`` 0 on the writer): the store's checkpointer thread copies the
    WAL, restarts it past ``WAL_RESTART_FRAMES`` (the file stays far smaller than what was written through it), and
    stops when the store closes; every row is there after a reopen."""
    import time

    from otel_mlmon.processor import store as module

    monkeypatch.setattr(module, "CHECKPOINT_S", 0.02)
    monkeypatch.setattr(module, "WAL_RESTART_FRAMES", 200)
    path = str(tmp_path / "s.db")
    store = Store(path)
    assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    wal_peak = 0
    for batch in range(80):
        ids = [f"b{batch}-{i:05d}-{'x' * 40}" for i in range(2000)]
        store.add_predictions([PredictionBatch("m", "1", (100 + batch) * SECOND, ids, values=[0.5] * 2000)], 0)
        wal_peak = max(wal_peak, os.path.getsize(path + "-wal"))
        time.sleep(0.01)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        frames, copied = _wal_frames(path)
        if frames == copied:
            break
        time.sleep(0.05)
    assert frames == copied  # everything committed was copied into the database by the checkpointer
    database = os.path.getsize(path)
    assert database > 10 * 2**20 and wal_peak < database / 3, (database, wal_peak)
    assert store.counters()["checkpoint_failures"] == 0
    thread = store._checkpointer
    store.close()
    assert not thread.is_alive()
    assert len(Store(path).rows("m", "1")) == 160_000


def test_no_connection_of_the_processor_checkpoints_in_its_commits(tmp_path: Path) -> None:
    """The store's writer and the alert book (its own connection to the same file) leave checkpoints to the store's
    checkpointer thread: an alert update's commit copied the WAL under the file's write lock, and every request
    waited for it."""
    from otel_mlmon.processor.alerts import AlertBook

    path = str(tmp_path / "s.db")
    store = Store(path)
    book = AlertBook(path)
    for connection in (store._db, book._db):
        assert connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    book.close()
    store.close()
