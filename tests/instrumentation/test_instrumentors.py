"""The zero-code instrumentors on real frameworks: round trips, one operation per call, fit never recorded."""

from __future__ import annotations

from importlib.metadata import entry_points

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

from otel_mlmon import semconv
from otel_mlmon.instrumentation import force_flush
from tests.conftest import Providers, column


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n_samples=300, n_features=6, n_informative=4, n_classes=3, random_state=0)


def _names(providers: Providers) -> list[str]:
    return [s.name for s in providers.finished_spans()]


def test_entry_points_are_registered() -> None:
    found = {e.name: e.value for e in entry_points(group="opentelemetry_instrumentor")}
    assert found["mlmon_sklearn"] == "otel_mlmon.instrumentation.sklearn:SklearnInstrumentor"
    assert found["mlmon_xgboost"] == "otel_mlmon.instrumentation.xgboost:XGBoostInstrumentor"
    assert found["mlmon_lightgbm"] == "otel_mlmon.instrumentation.lightgbm:LightGBMInstrumentor"
    assert found["mlmon_torch"] == "otel_mlmon.instrumentation.torch:TorchInstrumentor"


def test_sklearn_round_trip_and_classes_defined_later(providers: Providers, data) -> None:
    from sklearn.ensemble import RandomForestClassifier

    from otel_mlmon.instrumentation.sklearn import SklearnInstrumentor

    X, y = data
    instrumentor = SklearnInstrumentor()
    for _ in range(2):  # instrument -> uninstrument -> instrument
        instrumentor.instrument(**providers.kwargs())
        model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
        assert providers.finished_spans() == ()  # fit (which predicts internally) is not recorded
        expected = model.predict_proba(X)

        class MyModel(RandomForestClassifier):  # defined after instrumentation
            def predict(self, X):
                return super().predict(X)

        mine = MyModel(n_estimators=3, random_state=0).fit(X, y)
        mine.otel_mlmon_name = "custom"
        mine.predict(X[:4])
        assert _names(providers) == ["predict_proba RandomForestClassifier", "predict custom"]
        instrumentor.uninstrument()
        np.testing.assert_array_equal(model.predict_proba(X), expected)
        mine.predict(X[:4])
        assert len(providers.finished_spans()) == 2
        providers.spans.clear()


def test_sklearn_gridsearch_is_one_operation(providers: Providers, data) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    from otel_mlmon.instrumentation.sklearn import SklearnInstrumentor

    X, y = data
    SklearnInstrumentor().instrument(**providers.kwargs())
    try:
        search = GridSearchCV(LogisticRegression(max_iter=500), {"C": [0.1, 1.0]}, cv=2).fit(X, y)
        assert providers.finished_spans() == ()
        search.predict(X[:10])
        assert _names(providers) == ["predict GridSearchCV"]
    finally:
        SklearnInstrumentor().uninstrument()


def test_xgboost_sklearn_api_and_booster(providers: Providers, data) -> None:
    import xgboost

    from otel_mlmon.instrumentation.xgboost import XGBoostInstrumentor

    X, y = data
    XGBoostInstrumentor().instrument(**providers.kwargs())
    try:
        classifier = xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(X, y)
        booster = xgboost.train({"objective": "binary:logistic"}, xgboost.DMatrix(X, label=(y == 1)), 3)
        assert providers.finished_spans() == ()
        proba = classifier.predict_proba(X)
        labels = classifier.predict(X)
        scores = booster.predict(xgboost.DMatrix(X[:20]))
        inplace = booster.inplace_predict(X[:20])
        np.testing.assert_allclose(inplace, scores, rtol=1e-6)
        assert _names(providers) == ["predict_proba XGBClassifier", "predict XGBClassifier", "predict Booster",
                                     "predict Booster"]
        spans = providers.finished_spans()
        assert spans[0].attributes[semconv.ML_SYSTEM_NAME] == "xgboost"
        assert spans[2].attributes[semconv.ML_MODEL_TASK] == "classification"
        force_flush()
        events = providers.events(semconv.EVENT_PREDICTIONS)
        score_2 = f"{semconv.ML_PREDICTION_SCORE_PREFIX}2"
        classifier_events = [e for e in events if e.attributes[semconv.ML_MODEL_NAME] == "XGBClassifier"]
        np.testing.assert_allclose(column([e for e in classifier_events if score_2 in e.attributes], score_2),
                                   proba[:, 2])
        assert column([e for e in classifier_events if score_2 not in e.attributes],
                      semconv.ML_PREDICTION_LABEL) == labels.tolist()
        booster_events = [e for e in events if e.attributes[semconv.ML_MODEL_NAME] == "Booster"]
        np.testing.assert_allclose(column(booster_events, semconv.ML_PREDICTION_SCORE)[:20], scores, rtol=1e-6)
    finally:
        XGBoostInstrumentor().uninstrument()
    import wrapt

    assert not isinstance(xgboost.Booster.__dict__["predict"], wrapt.FunctionWrapper)


def test_lightgbm_sklearn_api_and_booster(providers: Providers) -> None:
    import lightgbm

    from otel_mlmon.instrumentation.lightgbm import LightGBMInstrumentor

    X, y = make_regression(n_samples=200, n_features=5, random_state=1)
    LightGBMInstrumentor().instrument(**providers.kwargs())
    try:
        regressor = lightgbm.LGBMRegressor(n_estimators=5, verbose=-1).fit(X, y)
        booster = lightgbm.train({"objective": "regression", "verbose": -1}, lightgbm.Dataset(X, y), 3)
        assert providers.finished_spans() == ()
        values = regressor.predict(X)
        booster.predict(X[:7])
        assert _names(providers) == ["predict LGBMRegressor", "predict Booster"]
        assert all(s.attributes[semconv.ML_MODEL_TASK] == "regression" for s in providers.finished_spans())
        force_flush()
        events = [e for e in providers.events(semconv.EVENT_PREDICTIONS)
                  if e.attributes[semconv.ML_MODEL_NAME] == "LGBMRegressor"]
        np.testing.assert_allclose(column(events, semconv.ML_PREDICTION_VALUE), values)
    finally:
        LightGBMInstrumentor().uninstrument()


def test_torch_eval_mode_outermost_call_only(providers: Providers) -> None:
    torch = pytest.importorskip("torch")

    from otel_mlmon.instrumentation.torch import TorchInstrumentor

    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x = torch.randn(16, 4)
    TorchInstrumentor().instrument(**providers.kwargs())
    try:
        net.train()
        net(x).sum().backward()  # training: never recorded
        assert providers.finished_spans() == ()
        net.eval()
        with torch.no_grad():
            out = net(x)
        assert _names(providers) == ["forward Sequential"]
        assert providers.finished_spans()[0].attributes[semconv.ML_BATCH_SIZE] == 16
        force_flush()
        points = providers.sketches.points(semconv.ML_FEATURE_VALUE)
        assert len(points) == 4 and all(p.count == 16 for p in points)
        assert isinstance(out, torch.Tensor) and out.shape == (16, 3)
    finally:
        TorchInstrumentor().uninstrument()
    net(x)
    assert len(providers.finished_spans()) == 1


def test_torch_manual_classification_reads_logits(providers: Providers) -> None:
    torch = pytest.importorskip("torch")

    import otel_mlmon

    net = torch.nn.Linear(3, 4).eval()
    otel_mlmon.instrument_model(net, name="clf", task="classification", **providers.kwargs())
    x = torch.randn(5, 3)
    with torch.no_grad():
        logits = net(x)
    force_flush()
    events = providers.events(semconv.EVENT_PREDICTIONS)
    expected = torch.softmax(logits, dim=1).numpy()
    np.testing.assert_allclose(column(events, f"{semconv.ML_PREDICTION_SCORE_PREFIX}1"), expected[:, 1], rtol=1e-5)
    assert column(events, semconv.ML_PREDICTION_LABEL) == expected.argmax(1).tolist()
