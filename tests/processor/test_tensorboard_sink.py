"""The processor's --tensorboard DIR: each evaluated window's scalars, read back with TensorBoard's own reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from otel_mlmon.engine.columns import profile_from_columns
from otel_mlmon.engine.windows import WindowSpec
from otel_mlmon.processor.decode import Decoded, PredictionBatch
from otel_mlmon.processor.export import TensorBoardSink
from otel_mlmon.processor.service import Processor
from otel_mlmon.processor.store import Store

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")  # [dev]

SECOND = 1_000_000_000
NOW = 1_796_000_000 * SECOND


def test_each_windows_scalars_reach_tensorboard_as_the_results_say(tmp_path: Path) -> None:
    sink = TensorBoardSink(str(tmp_path / "tb"))
    processor = Processor(Store(str(tmp_path / "p.db")), clock=lambda: NOW, tensorboard=sink)
    rng = np.random.default_rng(0)
    profile, _ = profile_from_columns({"x": rng.normal(0, 1, 1000)}, WindowSpec(chunk_size=100), model="m",
                                      version="1")
    processor.register(profile)
    x = np.concatenate([rng.normal(0, 1, 200), rng.normal(1.5, 1, 100)])  # the third window drifts
    batch = PredictionBatch("m", "1", NOW - 3600 * SECOND, [f"p{i}" for i in range(300)],
                            values=rng.normal(0, 1, 300).tolist(), features={"x": x.tolist()})
    processor.accept_logs(Decoded(predictions=[batch], accepted=1), NOW - 3600 * SECOND)
    assert processor.tick() == 3
    sink.close()

    reader = event_accumulator.EventAccumulator(str(tmp_path / "tb" / "m" / "1" / "analysis"),
                                                size_guidance={event_accumulator.SCALARS: 0})
    reader.Reload()
    tags = reader.Tags()["scalars"]
    results = [r for r in processor.store.results(period="analysis") if r["kind"] == "drift" and r["column"] == "x"]
    assert results and sink.failures == 0
    for row in results:
        points = {p.step: p.value for p in reader.Scalars(f"drift/x/{row['metric']}")}
        assert points[row["window"]] == pytest.approx(row["value"], rel=1e-6)  # stored as float32
    assert {p.step: p.value for p in reader.Scalars("window/rows")} == {0: 100, 1: 100, 2: 100}
    alerts = {p.step: p.value for p in reader.Scalars("alerts/total")}
    assert alerts[2] > 0 and alerts[0] == 0 and "alerts/total" in tags
