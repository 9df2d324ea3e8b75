"""Zero-code prediction ids: from an input column the model ignores (OTEL_PYTHON_MLMON_ID_COLUMN) or from a W3C
baggage entry (OTEL_PYTHON_MLMON_ID_BAGGAGE_KEY); an explicit prediction_ids(ids=...) wins over both."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import otel_mlmon
from otel_mlmon import semconv
from otel_mlmon.instrumentation import _guard
from tests.conftest import Providers, column

FEATURES = ["mean radius", "mean texture", "worst area"]


@pytest.fixture(scope="module")
def data() -> tuple[object, pd.DataFrame]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    select = ColumnTransformer([("f", "passthrough", FEATURES)], remainder="drop")  # ignores other columns
    model = make_pipeline(select, LogisticRegression(max_iter=5000)).fit(X[FEATURES], y)
    frame = X[FEATURES].iloc[:6].assign(order_id=[f"o{i}" for i in range(6)])
    return model, frame


def test_ids_come_from_the_id_column_which_is_not_a_feature(providers: Providers, data, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_MLMON_ID_COLUMN", "order_id")
    monkeypatch.setenv("OTEL_PYTHON_MLMON_CAPTURE_FEATURES", "true")
    model, frame = data
    expected = model.predict(frame[FEATURES])
    otel_mlmon.instrument_model(model, name="m", **providers.kwargs())
    with otel_mlmon.prediction_ids() as block:  # a block without ids: the column's ids, told in p.ids
        result = model.predict(frame)
    np.testing.assert_array_equal(result, expected)  # the model saw the frame as given and ignored the column
    assert block.ids == frame["order_id"].tolist()
    (event,) = providers.events(semconv.EVENT_PREDICTIONS)
    assert list(event.attributes[semconv.ML_PREDICTION_ID]) == frame["order_id"].tolist()
    assert semconv.ML_FEATURE_PREFIX + "order_id" not in event.attributes
    assert list(event.attributes[semconv.ML_FEATURE_PREFIX + "mean radius"]) == frame["mean radius"].tolist()
    sketched = {p.attributes[semconv.ML_FEATURE_NAME] for name in (semconv.ML_FEATURE_VALUE,
                                                                   semconv.ML_FEATURE_CATEGORY_COUNT)
                for p in providers.sketches.points(name)}
    assert sketched == set(FEATURES)


def test_explicit_ids_win_and_missing_ids_are_generated(providers: Providers, data, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_MLMON_ID_COLUMN", "order_id")
    model, frame = data
    otel_mlmon.instrument_model(model, name="m", **providers.kwargs())
    given = [f"x{i}" for i in range(6)]
    with otel_mlmon.prediction_ids(ids=given):
        model.predict(frame)
    holes = frame.assign(order_id=["a", None, "c", np.nan, "e", "f"])
    model.predict(holes)
    recorded = column(providers.events(semconv.EVENT_PREDICTIONS), semconv.ML_PREDICTION_ID)
    assert recorded[:6] == given
    ids = recorded[6:]
    assert [ids[i] for i in (0, 2, 4, 5)] == ["a", "c", "e", "f"]
    assert len(ids[1]) == len(ids[3]) == 32 and ids[1] != ids[3]
    assert _guard.counts()["id_column_missing"] == 1


def test_ids_from_a_dict_of_columns_and_a_list_of_rows(providers: Providers, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_MLMON_ID_COLUMN", "key")

    class RowsModel:
        def predict(self, X):
            rows = X if isinstance(X, list) else [dict(zip(X, values)) for values in zip(*X.values())]
            return np.asarray([float(row["x"]) for row in rows])

    model = otel_mlmon.instrument_model(RowsModel(), name="rows", task="regression", **providers.kwargs())
    model.predict({"key": [7, 8], "x": [1.0, 2.0]})
    model.predict([{"key": "k1", "x": 3.0}])
    assert column(providers.events(semconv.EVENT_PREDICTIONS), semconv.ML_PREDICTION_ID) == ["7", "8", "k1"]
    names = {p.attributes[semconv.ML_FEATURE_NAME] for p in providers.sketches.points(semconv.ML_FEATURE_VALUE)}
    assert names == {"x"}


def test_ids_from_baggage(providers: Providers, data, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_MLMON_ID_BAGGAGE_KEY", "request.id")
    model, frame = data
    features = frame[FEATURES]
    otel_mlmon.instrument_model(model, name="m", **providers.kwargs())
    token = otel_context.attach(baggage.set_baggage("request.id", "req-42"))
    try:
        model.predict(features.iloc[:1])
        model.predict(features.iloc[:3])
        with otel_mlmon.prediction_ids(ids=["mine"]):
            model.predict(features.iloc[:1])
    finally:
        otel_context.detach(token)
    model.predict(features.iloc[:1])  # no baggage: generated
    ids = column(providers.events(semconv.EVENT_PREDICTIONS), semconv.ML_PREDICTION_ID)
    assert ids[:5] == ["req-42", "req-42-0", "req-42-1", "req-42-2", "mine"]
    assert len(ids) == 6 and len(ids[5]) == 32
