"""Row windows follow event time: (timestamp, id), or the file's order for ties without ids; a shuffled file gives
the results of the sorted one (DESIGN §4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from otel_mlmon import cli
from otel_mlmon.batch.order import event_ranks
from otel_mlmon.batch.reader import DataFile
from tests.batch.conftest import make_frame

FLAGS = ["--id-column", "id", "--timestamp-column", "ts", "--prediction-column", "prediction",
         "--score-column", "score"]


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("order")
    reference = make_frame(2000, 0)
    analysis = pd.concat([make_frame(1200, 1, start="2026-02-01"), make_frame(1300, 2, shift=1.0,
                                                                              start="2026-02-01 20:00")],
                         ignore_index=True)
    analysis["ts"] = analysis["ts"].dt.floor("3min")  # ties: up to three rows share a time
    analysis["id"] = [f"r{i:05d}" for i in range(len(analysis))][::-1]  # ids run against the file within ties
    labels = analysis[["id", "target"]].sample(frac=0.8, random_state=1)
    paths = {"reference": folder / "reference.parquet", "labels": folder / "labels.csv"}
    reference.to_parquet(paths["reference"])
    labels.to_csv(paths["labels"], index=False)
    analysis = analysis.drop(columns="target")
    ordered = analysis.sort_values(["ts", "id"], kind="stable")
    shuffled = analysis.sample(frac=1.0, random_state=7)
    for name, frame in (("ordered", ordered), ("file_order_ties", analysis), ("shuffled", shuffled)):
        paths[name] = folder / f"{name}.parquet"
        frame.reset_index(drop=True).to_parquet(paths[name], row_group_size=400)  # several read batches
    paths["shuffled_csv"] = folder / "shuffled.csv"
    shuffled.to_csv(paths["shuffled_csv"], index=False)
    return paths


def _results(paths: dict[str, Path], name: str, tmp_path: Path, *window: str) -> pd.DataFrame:
    out = tmp_path / f"{name}.csv"
    assert cli.main(["evaluate", "--reference", str(paths["reference"]), "--analysis", str(paths[name]),
                     "--labels", str(paths["labels"]), "--target-column", "target", *FLAGS, *window,
                     "--output", str(out)]) == 0
    return pd.read_csv(out, keep_default_na=False)


@pytest.mark.parametrize("window", [["--chunk-size", "500"], ["--chunks", "3"], ["--window", "6h"]])
def test_a_shuffled_file_gives_the_results_of_the_sorted_one(frames, tmp_path, window) -> None:
    expected = _results(frames, "ordered", tmp_path, *window)
    analysis = expected[expected.period == "analysis"]
    assert analysis["window"].nunique() >= 3 and analysis["labeled_rows"].max() > 0
    for name in ("shuffled", "shuffled_csv", "file_order_ties"):
        found = _results(frames, name, tmp_path, *window)
        pd.testing.assert_frame_equal(found, expected, check_exact=False, rtol=1e-12, atol=1e-15)


def test_ranks_follow_time_then_id_and_a_sorted_file_streams_as_it_is(frames) -> None:
    assert event_ranks(DataFile(str(frames["ordered"])), "ts", "id") is None
    frame = pd.read_parquet(frames["shuffled"])
    ranks = event_ranks(DataFile(str(frames["shuffled"])), "ts", "id")
    assert ranks is not None
    expected = np.lexsort((frame["id"].to_numpy(), frame["ts"].to_numpy()))
    np.testing.assert_array_equal(np.argsort(ranks), expected)
    # Ties without an id column keep the file's order (a stable sort by time).
    no_ids = event_ranks(DataFile(str(frames["shuffled"])), "ts", None)
    assert no_ids is not None
    np.testing.assert_array_equal(np.argsort(no_ids), np.argsort(frame["ts"].to_numpy(), kind="stable"))
    assert event_ranks(DataFile(str(frames["file_order_ties"])), "ts", None) is None  # times alone are in order


def test_without_an_id_column_ties_keep_the_file_order(frames, tmp_path) -> None:
    frame = pd.read_parquet(frames["shuffled"]).drop(columns="id").reset_index(drop=True)
    frame.to_parquet(tmp_path / "no_ids.parquet")
    frame.sort_values("ts", kind="stable").reset_index(drop=True).to_parquet(tmp_path / "no_ids_sorted.parquet")
    flags = ["--timestamp-column", "ts", "--prediction-column", "prediction", "--score-column", "score",
             "--chunk-size", "500"]
    outputs = []
    for name in ("no_ids", "no_ids_sorted"):
        out = tmp_path / f"{name}.csv"
        assert cli.main(["evaluate", "--reference", str(frames["reference"]), "--analysis",
                         str(tmp_path / f"{name}.parquet"), *flags, "--output", str(out)]) == 0
        outputs.append(pd.read_csv(out, keep_default_na=False))
    pd.testing.assert_frame_equal(outputs[0], outputs[1], check_exact=False, rtol=1e-12, atol=1e-15)


def test_row_windows_in_event_time_need_a_time_on_every_row(frames, tmp_path, capsys) -> None:
    frame = pd.read_parquet(frames["ordered"])
    frame.loc[10, "ts"] = pd.NaT
    frame.to_parquet(tmp_path / "gap.parquet")
    code = cli.main(["evaluate", "--reference", str(frames["reference"]), "--analysis", str(tmp_path / "gap.parquet"),
                     *FLAGS, "--chunk-size", "500", "--output", str(tmp_path / "o.csv")])
    assert code == 1 and "timestamp column 'ts' has an empty value" in capsys.readouterr().err


def test_time_windows_are_epoch_aligned_and_numbered_over_the_windows_with_rows(frames, tmp_path) -> None:
    """Window k of the epoch is [k·W, (k+1)·W), UTC; the earliest window with rows is 0 and an empty window (a gap
    in the data) takes no number: the processor numbers its time windows the same way."""
    frame = pd.read_parquet(frames["ordered"])
    frame = frame[(frame["ts"] < "2026-02-01 02:00") | (frame["ts"] >= "2026-02-01 05:00")].reset_index(drop=True)
    frame["ts"] = frame["ts"] + pd.Timedelta(minutes=20)  # the file starts 20 min into an hour
    frame.to_parquet(tmp_path / "gap.parquet")
    out = tmp_path / "gap.csv"
    assert cli.main(["evaluate", "--reference", str(frames["reference"]), "--analysis", str(tmp_path / "gap.parquet"),
                     *FLAGS, "--window", "1h", "--output", str(out)]) == 0
    results = pd.read_csv(out, keep_default_na=False)
    windows = results[results.period == "analysis"].groupby("window")[["window_start", "window_end", "rows"]].first()
    assert list(windows.index) == list(range(len(windows)))
    assert list(windows["window_start"][:4]) == ["2026-02-01T00:00:00Z", "2026-02-01T01:00:00Z",
                                                 "2026-02-01T02:00:00Z", "2026-02-01T05:00:00Z"]
    assert list(windows["window_end"][:4]) == ["2026-02-01T01:00:00Z", "2026-02-01T02:00:00Z",
                                               "2026-02-01T03:00:00Z", "2026-02-01T06:00:00Z"]
    hours = frame.groupby(frame["ts"].dt.floor("1h")).size()
    assert list(windows["rows"]) == list(hours) and len(windows) == len(hours)
