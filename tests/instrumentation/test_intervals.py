"""Clock-aligned sketch exports: every exported sketch point lies inside one interval [k·I, (k+1)·I) of the Unix
clock (I = INTERVAL: the sketch export interval), so the processor can give each point to exactly one time window;
the parts of a model's rows merge back into exactly the sketch of all its rows (references: a direct NumericSketch
and pandas counts)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from opentelemetry.sdk.metrics.export import MetricExportResult
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import otel_mlmon
from otel_mlmon import semconv
from otel_mlmon.instrumentation import _api, force_flush
from otel_mlmon.instrumentation._events import PredictionBuffer
from otel_mlmon.instrumentation._overrides import recorded_as
from otel_mlmon.sketch import NumericSketch
from tests.conftest import Providers

INTERVAL_S = 60  # the default (OTEL_METRIC_EXPORT_INTERVAL's)
INTERVAL = INTERVAL_S * 10**9
K = 1_700_000_000 * 10**9 // INTERVAL  # an interval of 2023, long closed
SKETCHED = (semconv.ML_FEATURE_VALUE, semconv.ML_FEATURE_VALUE_M2, semconv.ML_FEATURE_MISSING,
            semconv.ML_FEATURE_CATEGORY_COUNT, semconv.ML_PREDICTION_VALUE_METRIC)  # + scores: a classifier below


class Model:
    """Regression on a frame with a numeric, a categorical column (and missing values): every sketch kind."""

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.nan_to_num(X["x"].to_numpy(dtype=float)) * 2.0


@pytest.fixture
def model(providers: Providers, monkeypatch) -> Iterator[Model]:
    monkeypatch.delenv("OTEL_PYTHON_MLMON_SKETCH_EXPORT_INTERVAL", raising=False)
    monkeypatch.delenv("OTEL_METRIC_EXPORT_INTERVAL", raising=False)
    yield otel_mlmon.instrument_model(Model(), name="m", task="regression", **providers.kwargs())


def _frame(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    x = rng.normal(5.0, 2.0, rows)
    x[rng.random(rows) < 0.1] = np.nan
    return pd.DataFrame({"x": x, "c": rng.choice(["a", "b", "c"], rows)})


def _points(providers: Providers) -> dict[str, list]:
    return {name: providers.sketches.points(name) for name in SKETCHED}


def _interval(point) -> int:
    k = point.start_time_unix_nano // INTERVAL
    assert point.start_time_unix_nano < point.time_unix_nano <= (k + 1) * INTERVAL, "a point crosses an interval"
    return k


def _x_points(points: dict[str, list]) -> list:
    return [p for p in points[semconv.ML_FEATURE_VALUE] if p.attributes[semconv.ML_FEATURE_NAME] == "x"]


def _rebuilt(point) -> NumericSketch:
    return NumericSketch.from_explicit(point.explicit_bounds, point.bucket_counts, count=point.count,
                                       total=point.sum, minimum=point.min, maximum=point.max)


def test_calls_across_a_boundary_land_in_one_point_per_interval(providers: Providers, model: Model) -> None:
    rng = np.random.default_rng(7)
    before, after = _frame(rng, 300), _frame(rng, 200)
    small = [_frame(rng, 1) for _ in range(20)]  # single rows are staged: the stage must split at the boundary
    with recorded_as(time_unix_nano=(K + 1) * INTERVAL - 1):
        model.predict(before)
        for row in small[:10]:
            model.predict(row)
    with recorded_as(time_unix_nano=(K + 1) * INTERVAL):
        model.predict(after)
        for row in small[10:]:
            model.predict(row)
    force_flush()
    points = _points(providers)
    for name in SKETCHED:
        assert points[name], f"no {name} point"
        assert {_interval(p) for p in points[name]} == {K, K + 1}, name
        for p in points[name]:  # closed intervals: the whole interval
            k = _interval(p)
            assert (p.start_time_unix_nano, p.time_unix_nano) == (k * INTERVAL, (k + 1) * INTERVAL)
    first = pd.concat([before, *small[:10]])
    second = pd.concat([after, *small[10:]])
    by_k = {_interval(p): p for p in _x_points(points)}
    for k, rows in ((K, first), (K + 1, second)):
        assert by_k[k].count == rows["x"].notna().sum()
    merged = _rebuilt(by_k[K]).merge(_rebuilt(by_k[K + 1]))
    direct = NumericSketch()
    direct.update(pd.concat([first, second])["x"].to_numpy())
    assert merged.buckets()[1].tolist() == direct.buckets()[1].tolist()
    assert merged.count == direct.count and merged.min == direct.min and merged.max == direct.max
    missing = {_interval(p): p.value for p in points[semconv.ML_FEATURE_MISSING]
               if p.attributes[semconv.ML_FEATURE_NAME] == "x"}
    assert missing == {K: first["x"].isna().sum(), K + 1: second["x"].isna().sum()}
    categories: dict[tuple[int, str], int] = {}
    for p in points[semconv.ML_FEATURE_CATEGORY_COUNT]:
        categories[_interval(p), p.attributes[semconv.ML_FEATURE_CATEGORY]] = p.value
    expected = {(k, c): n for k, rows in ((K, first), (K + 1, second)) for c, n in rows["c"].value_counts().items()}
    assert categories == expected
    outputs = {_interval(p): p.count for p in points[semconv.ML_PREDICTION_VALUE_METRIC]}
    assert outputs == {K: len(first), K + 1: len(second)}


def test_score_histograms_split_at_the_boundary_too(providers: Providers) -> None:
    X, y = load_iris(return_X_y=True)
    keep = y < 2
    classifier = LogisticRegression(max_iter=1000).fit(X[keep], y[keep])
    otel_mlmon.instrument_model(classifier, name="iris", **providers.kwargs())
    with recorded_as(time_unix_nano=(K + 1) * INTERVAL - 1):
        classifier.predict_proba(X[:30])
    with recorded_as(time_unix_nano=(K + 1) * INTERVAL):
        classifier.predict_proba(X[30:100])
    force_flush()
    scores = providers.sketches.points(semconv.ML_PREDICTION_SCORE_METRIC)
    assert {_interval(p): p.count for p in scores} == {K: 30, K + 1: 70}


def test_only_ended_intervals_leave_on_the_periodic_export(providers: Providers, model: Model) -> None:
    telemetry = _api.telemetry_for(**providers.kwargs())
    rng = np.random.default_rng(8)
    with recorded_as(time_unix_nano=K * INTERVAL + 5):
        model.predict(_frame(rng, 50))
    now = time.time_ns()
    model.predict(_frame(rng, 40))  # the current interval: still open
    assert telemetry.export_sketches(closed_only=True)  # what the flusher's tick does
    if time.time_ns() // INTERVAL != now // INTERVAL:
        pytest.skip("the test straddled an interval boundary of the clock")
    assert [_interval(p) for p in _x_points(_points(providers))] == [K]
    force_flush()  # a flush sends the open interval too, cut at the flush time
    (open_point,) = [p for p in _x_points(_points(providers)) if _interval(p) != K]
    assert open_point.start_time_unix_nano == now // INTERVAL * INTERVAL
    assert now < open_point.time_unix_nano < (now // INTERVAL + 1) * INTERVAL
    model.predict(_frame(rng, 30))  # more rows of the same interval: the next part starts where the flush cut
    force_flush()
    latest = _x_points(_points(providers))[-1]
    assert latest.start_time_unix_nano == open_point.time_unix_nano
    assert _interval(latest) == _interval(open_point)


def test_a_failed_export_is_merged_back_into_its_own_interval(providers: Providers, model: Model) -> None:
    rng = np.random.default_rng(9)
    frames = {k: _frame(rng, 100 + k - K) for k in (K, K + 1)}
    providers.sketches.mode = "fail"
    for k, frame in frames.items():
        with recorded_as(time_unix_nano=k * INTERVAL + 1):
            model.predict(frame)
    assert force_flush() is False
    providers.sketches.mode = "ok"
    late = _frame(rng, 7)
    with recorded_as(time_unix_nano=(K + 1) * INTERVAL + 2):
        model.predict(late)
    assert force_flush() is True
    counts = {_interval(p): p.count for p in _x_points(_points(providers))}
    assert counts == {K: frames[K]["x"].notna().sum(),
                      K + 1: frames[K + 1]["x"].notna().sum() + late["x"].notna().sum()}


def test_buffered_events_never_span_an_interval_boundary(providers: Providers) -> None:
    buffer = PredictionBuffer(providers.logger_provider.get_logger("t"), max_rows=100, flush_interval_s=60,
                              interval_ns=INTERVAL)
    base = {semconv.ML_MODEL_NAME: "m", semconv.ML_MODEL_VERSION: ""}
    for i, t in enumerate([K * INTERVAL + 5, K * INTERVAL + 9, (K + 1) * INTERVAL - 1, (K + 1) * INTERVAL]):
        buffer.add(base, {semconv.ML_PREDICTION_ID: [f"id{i}"]}, 1, t)
    buffer.flush()
    events = [(r.log_record.timestamp, list(r.log_record.attributes[semconv.ML_PREDICTION_ID]))
              for r in providers.logs.get_finished_logs()]
    assert sorted(events) == [(K * INTERVAL + 5, ["id0", "id1", "id2"]), ((K + 1) * INTERVAL, ["id3"])]


def test_a_backlog_after_an_outage_leaves_one_interval_per_request(providers: Providers, model: Model) -> None:
    """Intervals kept back during an outage are exported one per request, oldest first (a backlog in one request
    could pass a receiver's body cap, which refuses all of it); when a later export fails again midway, what did
    not go is kept, and nothing is lost or sent twice."""
    rng = np.random.default_rng(4)
    frames = {k: _frame(rng, 50 + k - K) for k in range(K, K + 4)}
    providers.sketches.mode = "fail"
    for k, frame in frames.items():
        with recorded_as(time_unix_nano=k * INTERVAL + 5):
            model.predict(frame)
    assert force_flush() is False
    providers.sketches.mode = "ok"
    exporter, calls = providers.sketches, []
    real = exporter.export

    def second_fails(data, timeout_millis=10_000, **kwargs):  # the outage comes back after one request
        calls.append(1)
        return MetricExportResult.FAILURE if len(calls) == 2 else real(data, timeout_millis)

    exporter.export = second_fails
    before = len(exporter.batches)
    assert force_flush() is False  # K went; K + 1 failed: K + 1 .. K + 3 kept
    assert force_flush() is True
    batches = exporter.batches[before:]
    assert len(batches) == 4 and len(calls) == 5  # one request per interval; the failed one again
    for batch, k in zip(batches, range(K, K + 4)):
        points = [p for rm in batch.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                  for p in m.data.data_points]
        assert points and {_interval(p) for p in points} == {k}
    counts = {_interval(p): p.count for p in _x_points(_points(providers))}
    assert counts == {k: frame["x"].notna().sum() for k, frame in frames.items()}
