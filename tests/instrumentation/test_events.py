"""The ml.predictions event buffer: full events leave the caller's thread, are emitted exactly once and in order,
and a flusher that falls behind never lets the buffer grow without bound."""

from __future__ import annotations

import numpy as np

import otel_mlmon
from otel_mlmon import semconv
from otel_mlmon.instrumentation._events import READY_LIMIT, PredictionBuffer
from tests.conftest import Providers, eventually

BASE = {semconv.ML_MODEL_NAME: "m", semconv.ML_MODEL_VERSION: ""}


def _rows(providers: Providers) -> list[list[str]]:
    return [list(r.log_record.attributes[semconv.ML_PREDICTION_ID]) for r in providers.logs.get_finished_logs()
            if r.log_record.event_name == semconv.EVENT_PREDICTIONS]


def test_a_full_event_is_handed_to_the_flusher_not_emitted_by_the_call(providers: Providers) -> None:
    woken: list[int] = []
    buffer = PredictionBuffer(providers.logger_provider.get_logger("t"), max_rows=3, flush_interval_s=60,
                              wake=lambda: woken.append(1))
    for i in range(7):
        buffer.add(BASE, {semconv.ML_PREDICTION_ID: [f"id{i}"]}, 1)
    assert _rows(providers) == []  # two events filled up, neither emitted by the calls that filled them
    assert len(woken) == 2
    buffer.flush(only_due=True)  # what the flusher's tick does: full events go, the young partial one stays
    assert _rows(providers) == [["id0", "id1", "id2"], ["id3", "id4", "id5"]]
    buffer.flush()
    assert _rows(providers) == [["id0", "id1", "id2"], ["id3", "id4", "id5"], ["id6"]]
    buffer.flush()
    assert len(_rows(providers)) == 3  # nothing twice


def test_a_flusher_that_falls_behind_makes_the_caller_emit(providers: Providers) -> None:
    buffer = PredictionBuffer(providers.logger_provider.get_logger("t"), max_rows=2, flush_interval_s=60,
                              wake=lambda: None)  # a flusher that never comes
    ids = [f"id{i}" for i in range(2 * (READY_LIMIT + 1))]
    for i in range(0, 2 * READY_LIMIT, 2):
        buffer.add(BASE, {semconv.ML_PREDICTION_ID: ids[i: i + 2]}, 2)
    assert _rows(providers) == []
    buffer.add(BASE, {semconv.ML_PREDICTION_ID: ids[-2:]}, 2)  # one more than READY_LIMIT: the caller emits all
    emitted = _rows(providers)
    assert [i for event in emitted for i in event] == ids and all(len(e) == 2 for e in emitted)
    buffer.flush()
    assert len(_rows(providers)) == READY_LIMIT + 1


def test_the_flusher_thread_emits_full_events_without_a_flush(providers: Providers, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_MLMON_EVENT_MAX_ROWS", "4")
    monkeypatch.setenv("OTEL_PYTHON_MLMON_EVENT_FLUSH_INTERVAL", "3600000")  # only fullness can send them

    class Doubler:
        def predict(self, X: np.ndarray) -> np.ndarray:
            return X[:, 0] * 2

    model = otel_mlmon.instrument_model(Doubler(), name="d", task="regression", **providers.kwargs())
    for _ in range(9):
        model.predict(np.ones((1, 2)))
    rows = eventually(lambda: len(_rows(providers)) == 2 and _rows(providers), timeout_s=10, interval_s=0.05)
    assert [len(event) for event in rows] == [4, 4]  # the ninth row waits for its interval or a flush
