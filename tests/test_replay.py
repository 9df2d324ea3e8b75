"""``mlmon replay``: the events carry the file's own answers, times and ids; delivery is counted, not assumed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from otel_mlmon import cli, semconv
from tests.otlp_receiver import OtlpReceiver, attributes

pytestmark = pytest.mark.integration


def _rows(receiver: OtlpReceiver) -> list[dict[str, Any]]:
    """Every replayed row as it arrived: its id, label, score(s), features and its event's time."""
    out = []
    for event in receiver.logs(semconv.EVENT_PREDICTIONS):
        found = attributes(event)
        ids = found[semconv.ML_PREDICTION_ID]
        for i, pid in enumerate(ids):
            row = {key: values[i] for key, values in found.items() if isinstance(values, list)}
            row["time_ns"] = event.time_unix_nano
            row["id"] = pid
            out.append(row)
    return out


def _binary(n: int, seed: int) -> pd.DataFrame:
    """A binary classifier's outputs whose decision threshold is 0.3, not 0.5; timestamps unsorted, with ties."""
    rng = np.random.default_rng(seed)
    score = rng.random(n)
    return pd.DataFrame({
        "id": [f"row-{i}" for i in rng.permutation(n)],
        "ts": pd.to_datetime(1_700_000_000_000_000 + rng.integers(0, 40, n) * 1_500_000 + 7, unit="us"),
        "x": rng.normal(size=n), "plan": rng.choice(["a", "b"], n),
        "score": score, "pred": (score >= 0.3).astype(int), "y": rng.integers(0, 2, n)})


def test_replay_sends_the_files_own_labels_scores_times_and_ids(tmp_path: Path) -> None:
    frame = _binary(400, 1)
    assert ((frame.score >= 0.5).astype(int) != frame.pred).sum() > 50  # the threshold matters
    assert not frame.ts.is_monotonic_increasing and frame.ts.duplicated().any()
    frame.to_parquet(tmp_path / "data.parquet")
    with OtlpReceiver() as receiver:
        code = cli.main(["replay", "--analysis", str(tmp_path / "data.parquet"), "--model", "credit",
                         "--id-column", "id", "--timestamp-column", "ts", "--target-column", "y",
                         "--prediction-column", "pred", "--score-column", "score", "--endpoint", receiver.endpoint])
        rows = _rows(receiver)
        labels = [attributes(e) for e in receiver.logs(semconv.EVENT_LABELS)]
        sketches = receiver.metrics(semconv.ML_FEATURE_VALUE)
    assert code == 0
    by_id = {r["id"]: r for r in rows}
    assert len(rows) == len(by_id) == 400
    expected = frame.set_index("id")
    wrong = [pid for pid, row in by_id.items() if str(row[semconv.ML_PREDICTION_LABEL]) != str(expected.pred[pid])]
    assert wrong == []  # the file's label, not score >= 0.5
    for pid, row in by_id.items():
        assert row[semconv.ML_PREDICTION_LABEL] == expected.pred[pid]  # and of the file's type (int)
        assert row[semconv.ML_PREDICTION_SCORE] == expected.score[pid]
        assert row[semconv.ML_FEATURE_PREFIX + "x"] == expected.x[pid]
        assert row[semconv.ML_FEATURE_PREFIX + "plan"] == expected.plan[pid]
        assert row["time_ns"] == expected.ts[pid].value  # the file's time, to the nanosecond it holds
    sent = [(r["time_ns"], r["id"]) for r in rows]
    assert sent == sorted(sent)  # an unsorted file goes out in (time, id) order
    joined = {pid: y for event in labels for pid, y in zip(event[semconv.ML_PREDICTION_ID],
                                                             event[semconv.ML_LABEL_VALUE])}
    assert joined == {pid: int(y) for pid, y in expected.y.items()}
    assert sketches == []  # features are captured in the events; no sketch points (they carry the send time)


def test_replay_without_times_or_ids_keeps_the_files_order(tmp_path: Path) -> None:
    frame = _binary(250, 2).drop(columns=["ts", "id"])
    frame.to_csv(tmp_path / "data.csv", index=False)
    with OtlpReceiver() as receiver:
        assert cli.main(["replay", "--analysis", str(tmp_path / "data.csv"), "--model", "m", "--target-column", "y",
                         "--prediction-column", "pred", "--score-column", "score", "--endpoint",
                         receiver.endpoint]) == 0
        rows = _rows(receiver)
    ordered = sorted(rows, key=lambda r: (r["time_ns"], r["id"]))
    assert [r["id"] for r in ordered] == [f"{i:03d}" for i in range(250)]  # row numbers, one width
    assert [r[semconv.ML_PREDICTION_SCORE] for r in ordered] == frame.score.tolist()
    assert [r[semconv.ML_PREDICTION_LABEL] for r in ordered] == frame.pred.tolist()


def test_replay_without_times_keeps_the_file_order_of_unsorted_ids(tmp_path: Path) -> None:
    frame = _binary(300, 3).drop(columns=["ts"])
    frame.to_parquet(tmp_path / "data.parquet")
    with OtlpReceiver() as receiver:
        assert cli.main(["replay", "--analysis", str(tmp_path / "data.parquet"), "--model", "m", "--id-column", "id",
                         "--prediction-column", "pred", "--score-column", "score", "--endpoint",
                         receiver.endpoint]) == 0
        rows = _rows(receiver)
    ordered = sorted(rows, key=lambda r: (r["time_ns"], r["id"]))  # the processor's row order
    assert [r["id"] for r in ordered] == frame.id.tolist()


def test_replay_of_a_multiclass_file_sends_its_labels_and_every_score(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    scores = rng.dirichlet([1, 1, 1], 200)
    frame = pd.DataFrame({"id": [f"m{i}" for i in range(200)], "x": rng.normal(size=200),
                          "p_a": scores[:, 0], "p_b": scores[:, 1], "p_c": scores[:, 2],
                          "pred": rng.choice(["a", "b", "c"], 200)})  # not the argmax: the file's own decision
    frame.to_parquet(tmp_path / "data.parquet")
    with OtlpReceiver() as receiver:
        assert cli.main(["replay", "--analysis", str(tmp_path / "data.parquet"), "--model", "m", "--id-column", "id",
                         "--prediction-column", "pred", "--score-columns", "a=p_a,b=p_b,c=p_c", "--endpoint",
                         receiver.endpoint]) == 0
        rows = {r["id"]: r for r in _rows(receiver)}
    expected = frame.set_index("id")
    assert len(rows) == 200
    for pid, row in rows.items():
        assert row[semconv.ML_PREDICTION_LABEL] == expected.pred[pid]
        assert [row[semconv.ML_PREDICTION_SCORE_PREFIX + c] for c in "abc"] == \
            [expected.p_a[pid], expected.p_b[pid], expected.p_c[pid]]
