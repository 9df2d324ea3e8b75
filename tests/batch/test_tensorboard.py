"""`mlmon evaluate --tensorboard DIR`, read back with TensorBoard's own event reader."""

from __future__ import annotations

import math
import sys
from datetime import datetime

import pandas as pd
import pytest

from otel_mlmon import cli

pytest.importorskip("tensorboardX")  # the [tensorboard] extra
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

FLAGS = ["--id-column", "id", "--target-column", "target", "--prediction-column", "prediction",
         "--score-column", "score", "--timestamp-column", "ts", "--chunk-size", "1000"]


def _read(run_dir) -> dict[str, list]:
    reader = event_accumulator.EventAccumulator(str(run_dir), size_guidance={event_accumulator.SCALARS: 0})
    reader.Reload()
    return {tag: reader.Scalars(tag) for tag in reader.Tags()["scalars"]}


def test_scalars_per_window_read_back_with_tensorboard(files, tmp_path) -> None:
    logdir = tmp_path / "tb"
    out = tmp_path / "results.csv"
    assert cli.main(["evaluate", "--reference", str(files["reference"]), "--analysis", str(files["analysis"]),
                     "--labels", str(files["labels"]), *FLAGS, "--output", str(out), "--tensorboard",
                     str(logdir)]) == 0
    results = pd.read_csv(out, keep_default_na=False)
    for period in ("reference", "analysis"):
        scalars = _read(logdir / period)
        rows = results[results.period == period]
        expected = {}
        for row in rows.itertuples():
            value = float(row.value) if row.value != "" else math.nan
            if not math.isfinite(value):
                continue
            tag = f"{row.kind}/{row.metric}" if row.kind in ("performance", "estimated_performance") else \
                f"{row.kind}/{row.column.replace(' ', '_')}/{row.metric}"
            expected.setdefault(tag, {})[int(row.window)] = (value, row.window_end)
        assert set(expected) <= set(scalars)
        for tag, by_window in expected.items():
            read = {event.step: event for event in scalars[tag]}
            assert sorted(read) == sorted(by_window), tag
            for step, (value, end) in by_window.items():
                assert read[step].value == pytest.approx(value, rel=1e-6, abs=1e-30), (tag, step)  # float32
                when = datetime.fromisoformat(end.replace("Z", "+00:00")).timestamp()
                assert read[step].wall_time == pytest.approx(when, abs=1e-3)  # event time, not now
        windows = rows.groupby("window").first()
        read_rows = {e.step: e.value for e in scalars["window/rows"]}
        assert read_rows == {int(w): float(n) for w, n in windows["rows"].items()}
        coverage = {e.step: e.value for e in scalars["window/label_coverage"]}
        for window, row in windows.iterrows():
            assert coverage[int(window)] == pytest.approx(row["labeled_rows"] / row["rows"], rel=1e-6)
        alerts = {e.step: e.value for e in scalars["alerts/total"]}
        counted = rows.assign(hit=rows["alert"].astype(str).str.lower() == "true").groupby("window")["hit"].sum()
        assert alerts == {int(w): float(n) for w, n in counted.items()}
    analysis = _read(logdir / "analysis")
    assert "drift/age_years/jensen_shannon" in analysis and "performance/accuracy" in analysis
    assert "data_quality/income/missing_rate" in analysis
    assert max(e.value for e in analysis["alerts/total"]) > 0  # the shifted half alerts


def test_a_missing_writer_is_refused_before_any_data_is_read(files, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if the [tensorboard] extra were not installed
    out = tmp_path / "results.csv"
    assert cli.main(["evaluate", "--reference", str(files["reference"]), "--analysis", str(files["analysis"]),
                     *FLAGS, "--output", str(out), "--tensorboard", str(tmp_path / "tb")]) == 2  # as extras are
    assert "pip install 'otel-mlmon[tensorboard]'" in capsys.readouterr().err
    assert not out.exists()
