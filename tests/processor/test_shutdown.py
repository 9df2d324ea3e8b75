"""Shutdown: ``Processor.close`` closes every connection of the processor to its store (the alert book's too), so
the WAL is checkpointed and removed then, not whenever the interpreter's teardown frees the last connection."""

from __future__ import annotations

import os

from otel_mlmon.processor.decode import PredictionBatch
from otel_mlmon.processor.service import Processor
from otel_mlmon.processor.store import Store


def test_close_closes_the_store_and_the_alert_book(tmp_path) -> None:
    path = str(tmp_path / "s.db")
    processor = Processor(Store(path), bootstrap_windows=0)
    processor.store.add_predictions([PredictionBatch("m", "", 1_000, ["a", "b"], labels=["0", "1"])], 5)
    processor.alerts.firing()  # the alert book's connection is open and has read the file
    assert os.path.exists(path + "-wal")
    processor.close()
    assert not os.path.exists(path + "-wal")  # the last connection closed: checkpointed and removed
    reopened = Store(path)
    assert [r[1] for r in reopened.keys("m", "", None, 10_000)] == ["a", "b"]
    reopened.close()
