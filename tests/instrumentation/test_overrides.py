"""recorded_as(): predictions recorded as of a given event time and with given predicted labels (what `mlmon replay`
uses), through the real SDK and a real scikit-learn model."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

import otel_mlmon
from otel_mlmon import semconv
from otel_mlmon.instrumentation import _guard
from otel_mlmon.instrumentation._overrides import recorded_as
from tests.conftest import Providers, column

T0 = 1_600_000_000_123_456_789  # 2020-09-13, long before the test runs


@pytest.fixture(scope="module")
def fitted() -> tuple[LogisticRegression, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    return LogisticRegression(max_iter=5000).fit(X, y), X


@pytest.mark.parametrize("event_mode", ["buffered", "per_call"])
def test_calls_in_the_block_carry_its_time_and_labels(providers: Providers, fitted, monkeypatch,
                                                      event_mode: str) -> None:
    monkeypatch.setenv("OTEL_PYTHON_MLMON_EVENT_MODE", event_mode)
    model, X = fitted
    expected_scores = model.predict_proba(X[:5])[:, 1]
    own_labels = model.predict(X[:5]).tolist()
    second_labels = model.predict(X[5:10]).tolist()
    given = ["no", "yes", "yes", "no", "yes"]  # e.g. a file's prediction column, another threshold's labels
    otel_mlmon.instrument_model(model, name="bc", **providers.kwargs())
    before = time.time_ns()
    with otel_mlmon.prediction_ids(ids=list("abcde")), recorded_as(time_unix_nano=T0, labels=given):
        model.predict_proba(X[:5])
    with otel_mlmon.prediction_ids(ids=list("fghij")), recorded_as(time_unix_nano=T0 + 10**9):
        model.predict_proba(X[5:10])
    with otel_mlmon.prediction_ids(ids=list("klmno")):
        model.predict_proba(X[10:15])  # outside any block: its own time and labels
    after = time.time_ns()

    events = providers.events(semconv.EVENT_PREDICTIONS)
    ids = column(events, semconv.ML_PREDICTION_ID)
    assert sorted(ids) == list("abcdefghijklmno")
    # Each row's event time: its own entry of ml.prediction.time when its event holds calls of several times
    # (buffered: the two blocks, one interval of 2020, share an event), else its event's timestamp.
    times = [t for e in events for t in e.attributes.get(semconv.ML_PREDICTION_TIME,
                                                         [e.timestamp] * len(e.attributes[semconv.ML_PREDICTION_ID]))]
    at = dict(zip(ids, times, strict=True))
    assert len(events) == (2 if event_mode == "buffered" else 3)
    assert {at[i] for i in "abcde"} == {T0} and {at[i] for i in "fghij"} == {T0 + 10**9}
    assert all(before <= at[i] <= after for i in "klmno") and len({at[i] for i in "klmno"}) == 1
    labels = dict(zip(ids, column(events, semconv.ML_PREDICTION_LABEL), strict=True))
    scores = dict(zip(ids, column(events, semconv.ML_PREDICTION_SCORE), strict=True))
    assert [labels[i] for i in "abcde"] == given
    np.testing.assert_allclose([scores[i] for i in "abcde"], expected_scores, rtol=0, atol=0)
    assert [labels[i] for i in "fghij"] == second_labels
    assert own_labels != given  # the override really changed what was recorded
    spans = providers.finished_spans()
    assert len(spans) == 3
    for span in spans:  # spans keep the real times
        assert before <= span.start_time <= span.end_time <= after


def test_labels_of_the_wrong_length_are_ignored_without_raising(providers: Providers, fitted) -> None:
    model, X = fitted
    expected = model.predict(X[:3])
    otel_mlmon.instrument_model(model, name="bc", **providers.kwargs())
    with recorded_as(time_unix_nano=T0, labels=[1, 0]):
        result = model.predict(X[:3])
    np.testing.assert_array_equal(result, expected)
    (event,) = providers.events(semconv.EVENT_PREDICTIONS)
    assert list(event.attributes[semconv.ML_PREDICTION_LABEL]) == result.tolist()
    assert event.timestamp == T0  # the time still applies
    assert _guard.counts().get("override_labels_mismatch") == 1


def test_labels_given_as_numpy_arrive_as_plain_values(providers: Providers, fitted) -> None:
    model, X = fitted
    otel_mlmon.instrument_model(model, name="bc", **providers.kwargs())
    with recorded_as(labels=np.array([1, 1, 0])):
        model.predict(X[:3])
    assert column(providers.events(semconv.EVENT_PREDICTIONS), semconv.ML_PREDICTION_LABEL) == [1, 1, 0]


def test_the_block_belongs_to_its_thread_and_task(providers: Providers, fitted) -> None:
    model, X = fitted
    otel_mlmon.instrument_model(model, name="bc", **providers.kwargs())
    started = time.time_ns()

    def other_thread() -> None:
        with otel_mlmon.prediction_ids(ids=["thread"]):
            model.predict(X[:1])

    with recorded_as(time_unix_nano=T0):
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()

    async def task(name: str, t: int | None) -> None:
        if t is None:
            with otel_mlmon.prediction_ids(ids=[name]):
                await asyncio.sleep(0.01)
                model.predict(X[:1])
            return
        with recorded_as(time_unix_nano=t), otel_mlmon.prediction_ids(ids=[name]):
            await asyncio.sleep(0.01)  # the other task runs meanwhile
            model.predict(X[:1])

    async def both() -> None:
        await asyncio.gather(task("task-a", T0 + 7), task("task-b", None))

    asyncio.run(both())
    times = {i: e.timestamp for e in providers.events(semconv.EVENT_PREDICTIONS)
             for i in e.attributes[semconv.ML_PREDICTION_ID]}
    assert times["thread"] >= started and times["task-b"] >= started
    assert times["task-a"] == T0 + 7


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"time_unix_nano": 1.5e18}, TypeError), ({"time_unix_nano": -1}, ValueError),
    ({"labels": "yes"}, TypeError), ({"labels": [1, None]}, ValueError), ({"labels": [[1], [0]]}, ValueError)])
def test_a_bad_block_is_refused_at_setup(kwargs, error) -> None:
    with pytest.raises(error), recorded_as(**kwargs):
        pass
