"""Event time rules the processor: the same rows, labels and sketch points in any arrival order, batching, with
retried duplicates and restarts, give exactly `mlmon evaluate`'s results on the same file; late data revises its
window up to the lateness bound and is counted past it; TTLs count in event time."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_mlmon import cli
from otel_mlmon.processor.decode import Decoded, LabelBatch, PredictionBatch
from otel_mlmon.processor.service import Processor
from otel_mlmon.processor.store import Store
from tests.conftest import assert_equals_evaluate

SECOND = 1_000_000_000
START = 1_796_000_000 * SECOND  # 2026-11-29, an exact minute
FEATURES = ["age", "plan"]


def _dataset(n: int = 1200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    shift = (np.arange(n) >= n // 2) * 1.0  # the second half drifts
    frame = pd.DataFrame({"age": rng.normal(40 + 10 * shift, 10), "plan": rng.choice(["basic", "gold"], n)})
    frame["score"] = 1 / (1 + np.exp(-(frame["age"] - 45) / 10))
    frame["prediction"] = (frame["score"] >= 0.3).astype(int)  # a decision threshold that is not 0.5
    frame["target"] = (rng.random(n) < frame["score"]).astype(int)
    # Event times a second or so apart, some shared by several rows (one predict call), ids not in time order.
    seconds = np.cumsum(rng.integers(0, 3, n))
    frame["ts"] = pd.to_datetime(START + seconds * SECOND, utc=True)
    frame["id"] = [f"r{(i * 7919) % 100003:06d}" for i in range(n)]
    return frame


def _calls(frame: pd.DataFrame) -> list[PredictionBatch]:
    """One prediction event per distinct event time, as an instrumented application would send them."""
    batches = []
    for ts, rows in frame.groupby("ts", sort=False):
        batches.append(PredictionBatch(
            "churn", "3", int(pd.Timestamp(ts).value), rows["id"].tolist(), labels=rows["prediction"].tolist(),
            scores={"": rows["score"].tolist()}, features={f: rows[f].tolist() for f in FEATURES}))
    return batches


def _split(batch: PredictionBatch, parts: int) -> list[PredictionBatch]:
    """The same rows in several events of the same time (another batching of the exporter)."""
    size = max(1, -(-len(batch) // parts))
    out = []
    for begin in range(0, len(batch), size):
        part = slice(begin, begin + size)
        out.append(PredictionBatch(batch.model, batch.version, batch.time_unix_nano, batch.ids[part],
                                   batch.labels[part] if batch.labels else None,
                                   {c: v[part] for c, v in batch.scores.items()}, None,
                                   {c: v[part] for c, v in batch.features.items()}))
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("event_time")
    reference = _dataset(1500, seed=1)
    reference["age"] = np.random.default_rng(9).normal(40, 10, len(reference))
    analysis = _dataset()
    reference.to_parquet(folder / "reference.parquet")
    analysis.drop(columns="target").to_parquet(folder / "analysis.parquet")
    analysis[["id", "target"]].to_csv(folder / "labels.csv", index=False)
    flags = ["--id-column", "id", "--timestamp-column", "ts", "--target-column", "target", "--prediction-column",
             "prediction", "--score-column", "score", "--features", ",".join(FEATURES), "--categorical", "plan"]
    out = {"analysis": folder / "analysis.parquet"}
    for name, window in (("rows", ["--chunk-size", "250"]), ("time", ["--window", "5min"])):
        profile = folder / f"{name}.json"
        assert cli.main(["reference", "build", "--data", str(folder / "reference.parquet"), "--model", "churn",
                         "--version", "3", *flags, *window, "--output", str(profile)]) == 0
        expected = folder / f"{name}.csv"
        assert cli.main(["evaluate", "--reference", str(profile), "--analysis", str(folder / "analysis.parquet"),
                         "--labels", str(folder / "labels.csv"), *flags, "--output", str(expected)]) == 0
        out[f"{name}_profile"], out[f"{name}_expected"] = profile, expected
        unlabeled = folder / f"{name}_unlabeled.csv"  # no labels have arrived: estimated performance only
        assert cli.main(["evaluate", "--reference", str(profile), "--analysis", str(folder / "analysis.parquet"),
                         *flags, "--output", str(unlabeled)]) == 0
        out[f"{name}_unlabeled"] = unlabeled
    return out


def _stream(tmp_path: Path, profile: Path, order_seed: int, parts: int, restarts: int, interleave: bool,
            labeled: bool = True) -> list:
    """Send the analysis rows and labels in a shuffled order and batching, with retried duplicates, ticking (and
    restarting) the processor on the way; its results once everything arrived and the model went quiet."""
    from otel_mlmon.engine.profile import ReferenceProfile

    frame = _dataset()
    rng = random.Random(order_seed)
    events: list[Decoded] = []
    for batch in _calls(frame):
        events += [Decoded(predictions=[b]) for b in _split(batch, parts)]
    labels = frame[["id", "target"]].sample(frac=1.0, random_state=order_seed)
    for begin in range(0, len(labels) if labeled else 0, 97):
        part = labels.iloc[begin: begin + 97]
        events.append(Decoded(labels=[LabelBatch("churn", "3", 0, part["id"].tolist(), part["target"].tolist())]))
    rng.shuffle(events)
    events += rng.sample(events, len(events) // 10)  # retries of acknowledged requests
    last = int(frame["ts"].max().value)
    now = [last]
    path = str(tmp_path / f"{uuid.uuid4().hex}.db")  # hypothesis runs examples in one tmp_path

    def start() -> Processor:
        return Processor(Store(path, max_lateness_s=86400), clock=lambda: now[0], allowed_lateness_s=60,
                         idle_timeout_s=30, sweep_s=3600)

    processor = start()
    processor.register(ReferenceProfile.load(str(profile)))
    stops = {len(events) * (k + 1) // (restarts + 1) for k in range(restarts)}
    for n, decoded in enumerate(events):
        processor.accept_logs(decoded, now[0])
        if interleave and n % 50 == 0:
            processor.tick()  # windows close early (the watermark moves with the shuffled times), then revise
        if n in stops:
            processor.store.close()
            processor.alerts.close()
            processor = start()
    now[0] = last + 3600 * SECOND  # the model is quiet: every window closes
    while processor.tick():
        pass
    # performance_change rows are the stream's own (they follow the labels' arrival order): evaluate has none
    return [r for r in processor.store.results(model="churn", version="3", period="analysis")
            if r["kind"] != "performance_change"]


@pytest.mark.parametrize("scheme", ["rows", "time"])
def test_in_order_delivery_equals_evaluate(files, tmp_path: Path, scheme: str) -> None:
    results = _stream(tmp_path, files[f"{scheme}_profile"], 0, 1, 0, interleave=False)
    assert_equals_evaluate(results, files[f"{scheme}_expected"])


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.integers(0, 10**6), parts=st.sampled_from([1, 2, 5]), restarts=st.integers(0, 2),
       scheme=st.sampled_from(["rows", "time"]))
def test_any_order_batching_retries_and_restarts_give_evaluates_results(files, tmp_path: Path, order, parts,
                                                                       restarts, scheme) -> None:
    results = _stream(tmp_path, files[f"{scheme}_profile"], order, parts, restarts, interleave=True)
    assert_equals_evaluate(results, files[f"{scheme}_expected"])


@pytest.mark.parametrize("scheme", ["rows", "time"])
def test_windows_without_labels_get_the_estimated_performance_of_evaluate(files, tmp_path: Path, scheme: str) -> None:
    results = _stream(tmp_path, files[f"{scheme}_profile"], 0, 1, 0, interleave=True, labeled=False)
    estimated = [r for r in results if r["kind"] == "estimated_performance"]
    assert estimated and {r["labeled_rows"] for r in estimated} == {0}
    assert not [r for r in results if r["kind"] == "performance"]
    merged = assert_equals_evaluate(results, files[f"{scheme}_unlabeled"])
    assert set(merged[merged.kind == "estimated_performance"]["metric"]) >= {"accuracy", "roc_auc", "f1"}
