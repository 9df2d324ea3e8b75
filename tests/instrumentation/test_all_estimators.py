"""Zero-code over every scikit-learn estimator that predicts, and over XGBoost, LightGBM and torch: each call of
``predict`` / ``predict_proba`` (``forward`` for torch) is recorded exactly once, as the operation the user
called, under the model's class name, with ``ml.predictions`` equal to the rows; nothing nested (trees, steps,
a ``predict`` that calls ``decision_function``), nothing inside ``fit``.

Events are per call here (``OTEL_PYTHON_MLMON_EVENT_MODE=per_call``), so each call's event can be checked as soon as
it returns; the ``ml.predictions`` counter is checked at the end, one series per model and operation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

from otel_mlmon import environment_variables as env
from otel_mlmon import semconv
from tests.conftest import Providers

ROWS = 7  # rows of each predict call

def _meta() -> dict[str, Callable[[type], Any]]:
    """Estimators whose constructor needs an argument (meta-estimators), built around small base estimators."""
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    def classifier(cls: type) -> Any:
        return cls(LogisticRegression())

    def regressor(cls: type) -> Any:
        return cls(LinearRegression())

    return {
        "ClassifierChain": classifier, "FixedThresholdClassifier": classifier,
        "MultiOutputClassifier": classifier, "OneVsOneClassifier": classifier, "OneVsRestClassifier": classifier,
        "OutputCodeClassifier": classifier, "SelfTrainingClassifier": classifier,
        "TunedThresholdClassifierCV": classifier,
        "StackingClassifier": lambda cls: cls([("lr", LogisticRegression()), ("tree", DecisionTreeClassifier())]),
        "VotingClassifier": lambda cls: cls([("lr", LogisticRegression()), ("tree", DecisionTreeClassifier())]),
        "MultiOutputRegressor": regressor, "RegressorChain": regressor,
        "StackingRegressor": lambda cls: cls([("lr", LinearRegression()), ("tree", DecisionTreeRegressor())]),
        "VotingRegressor": lambda cls: cls([("lr", LinearRegression()), ("tree", DecisionTreeRegressor())]),
    }


# Estimators that need a target of two columns with default parameters (n_components=2, multi-task, chains).
TWO_TARGETS = {"CCA", "PLSCanonical", "MultiTaskElasticNet", "MultiTaskElasticNetCV", "MultiTaskLasso",
               "MultiTaskLassoCV", "ClassifierChain", "MultiOutputClassifier", "MultiOutputRegressor",
               "RegressorChain"}
# Estimators that need other data with default parameters.
ONE_FEATURE = {"IsotonicRegression"}  # X of one feature
BINARY = {"FixedThresholdClassifier", "TunedThresholdClassifierCV"}  # two classes
# Estimators that cannot fit with default parameters on any small data, and why (none today).
SKIPS: dict[str, str] = {}


class Vote:
    """An application's mixin (no framework class): ``predict`` from ``predict_proba``."""

    def predict(self, X: Any) -> Any:
        return self.predict_proba(X).argmax(axis=1)  # type: ignore[attr-defined]


@pytest.fixture
def per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env.OTEL_PYTHON_MLMON_EVENT_MODE, "per_call")
    monkeypatch.setenv(env.OTEL_PYTHON_MLMON_MAX_MODELS, "1000")  # every estimator is a model of its own


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Native thread pools of one thread: the fits are small, and the machine may be busy."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _estimators() -> list[tuple[str, type, str]]:
    from sklearn.base import OutlierMixin
    from sklearn.utils import all_estimators

    found: dict[str, tuple[str, type, str]] = {}
    for kind in ("classifier", "regressor", "cluster"):
        for name, cls in all_estimators(type_filter=kind):
            found.setdefault(name, (name, cls, kind))
    for name, cls in all_estimators():
        if issubclass(cls, OutlierMixin):
            found.setdefault(name, (name, cls, "outlier"))
    return sorted(found.values())


class Check:
    """Calls a model's methods and checks what each call recorded."""

    def __init__(self, providers: Providers, system: str) -> None:
        self.providers = providers
        self.system = system
        self.expected_rows: dict[tuple[str, str], int] = {}
        self.problems: list[str] = []

    def nothing_recorded(self, what: str) -> None:
        spans = self.providers.spans.get_finished_spans()
        if spans:
            self.problems.append(f"{what}: recorded {[s.name for s in spans]}")
        self.clear()

    def clear(self) -> None:
        self.providers.spans.clear()
        self.providers.logs.clear()

    def call(self, model: Any, name: str, method: str, operation: str, *args: Any, rows: int = ROWS) -> Any:
        self.clear()
        result = getattr(model, method)(*args)
        spans = self.providers.spans.get_finished_spans()
        events = [r.log_record for r in self.providers.logs.get_finished_logs()
                  if r.log_record.event_name == semconv.EVENT_PREDICTIONS]
        what = f"{name}.{method}"
        if [s.name for s in spans] != [f"{operation} {name}"]:
            self.problems.append(f"{what}: spans {[s.name for s in spans]}, expected one '{operation} {name}'")
        else:
            attributes = spans[0].attributes
            wanted = {semconv.ML_MODEL_NAME: name, semconv.ML_OPERATION_NAME: operation,
                      semconv.ML_SYSTEM_NAME: self.system, semconv.ML_BATCH_SIZE: rows}
            got = {k: attributes.get(k) for k in wanted}
            if got != wanted:
                self.problems.append(f"{what}: span attributes {got}, expected {wanted}")
        if len(events) != 1 or events[0].attributes[semconv.ML_MODEL_NAME] != name or \
                len(events[0].attributes[semconv.ML_PREDICTION_ID]) != rows:
            self.problems.append(f"{what}: events {[dict(e.attributes) for e in events]}, expected one of {rows} "
                                 f"rows of {name}")
        key = (name, operation)
        self.expected_rows[key] = self.expected_rows.get(key, 0) + rows
        return result

    def counted_rows(self) -> None:
        points = self.providers.metric_points(semconv.ML_PREDICTIONS)
        counted = {(p.attributes[semconv.ML_MODEL_NAME], p.attributes[semconv.ML_OPERATION_NAME]): p.value
                   for p in points}
        if counted != self.expected_rows:
            wrong = {k: (counted.get(k), v) for k, v in self.expected_rows.items() if counted.get(k) != v}
            extra = {k: v for k, v in counted.items() if k not in self.expected_rows}
            self.problems.append(f"ml.predictions (counted, expected): {wrong}; not expected: {extra}")


def test_every_scikit_learn_estimator_that_predicts(providers: Providers, per_call: None, one_thread: None) -> None:
    from sklearn.base import is_classifier

    from otel_mlmon.instrumentation import _guard as guard
    from otel_mlmon.instrumentation.sklearn import SklearnInstrumentor

    meta = _meta()
    X, y = make_classification(n_samples=60, n_features=4, n_informative=3, n_redundant=0, n_classes=3,
                               random_state=0)
    X = np.abs(X)  # the count-based naive Bayes models need non-negative features
    Xr, yr = make_regression(n_samples=60, n_features=4, random_state=0)
    Xr, yr = np.abs(Xr), np.abs(yr) + 1.0  # Poisson and Gamma regressors need positive targets
    check = Check(providers, semconv.SYSTEM_SKLEARN)
    tested: list[str] = []
    SklearnInstrumentor().instrument(**providers.kwargs())
    try:
        for name, cls, kind in _estimators():
            if name in SKIPS:
                continue
            model = meta[name](cls) if name in meta else cls()
            if kind == "classifier" or is_classifier(model):
                data, target = X, y
                if name in TWO_TARGETS:
                    target = np.column_stack([y == 0, y == 1]).astype(int)  # chains score binary targets
                elif name in BINARY:
                    target = (y == 0).astype(int)
            elif kind == "regressor":
                data, target = Xr, yr
                if name in TWO_TARGETS:
                    target = np.column_stack([yr, yr ** 0.5])
            else:
                data, target = X, None
            if name in ONE_FEATURE:
                data = data[:, :1]
            check.clear()
            try:
                model.fit(data) if target is None else model.fit(data, target)
            except Exception as exc:
                pytest.fail(f"{name}() does not fit with default parameters ({type(exc).__name__}: {exc}); "
                            "give it the data it needs or list it in SKIPS with the reason")
            check.nothing_recorded(f"{name}.fit")
            for method, operation in (("predict", semconv.OPERATION_PREDICT),
                                      ("predict_proba", semconv.OPERATION_PREDICT_PROBA)):
                if hasattr(model, method):
                    check.call(model, name, method, operation, data[:ROWS])
                    tested.append(f"{name}.{method}")
        check.counted_rows()
    finally:
        SklearnInstrumentor().uninstrument()
    assert check.problems == []
    assert guard.counts() == {}  # every call's outputs were read
    # The ones the issue found unrecorded, and the meta-estimators, are among those checked.
    for call in ("LogisticRegression.predict", "LinearDiscriminantAnalysis.predict", "SGDClassifier.predict",
                 "RidgeClassifierCV.predict", "QuadraticDiscriminantAnalysis.predict_proba",
                 "OneVsRestClassifier.predict", "StackingClassifier.predict_proba", "IsolationForest.predict",
                 "KMeans.predict"):
        assert call in tested
    assert len(tested) > 120


def test_xgboost_estimators_and_boosters(providers: Providers, per_call: None, one_thread: None) -> None:
    xgboost = pytest.importorskip("xgboost")

    from otel_mlmon.instrumentation.xgboost import XGBoostInstrumentor

    X, y = make_classification(n_samples=80, n_features=4, n_informative=3, n_redundant=0, n_classes=3,
                               random_state=1)
    check = Check(providers, semconv.SYSTEM_XGBOOST)
    XGBoostInstrumentor().instrument(**providers.kwargs())
    try:
        class Later(Vote, xgboost.XGBClassifier):  # defined after instrumentation, predict from a mixin
            pass

        qid = np.repeat(np.arange(8), 10)
        models = [
            ("XGBClassifier", xgboost.XGBClassifier(n_estimators=4), X, y),
            ("XGBRegressor", xgboost.XGBRegressor(n_estimators=4), X, y.astype(float)),
            ("XGBRFClassifier", xgboost.XGBRFClassifier(n_estimators=4), X, y),
            ("XGBRFRegressor", xgboost.XGBRFRegressor(n_estimators=4), X, y.astype(float)),
            ("Later", Later(n_estimators=4), X, y),
        ]
        for name, model, data, target in models:
            check.clear()
            model.fit(data, target)
            check.nothing_recorded(f"{name}.fit")
            check.call(model, name, "predict", semconv.OPERATION_PREDICT, data[:ROWS])
            if hasattr(model, "predict_proba"):
                check.call(model, name, "predict_proba", semconv.OPERATION_PREDICT_PROBA, data[:ROWS])
        check.clear()
        ranker = xgboost.XGBRanker(n_estimators=4).fit(X, y, qid=qid)
        check.nothing_recorded("XGBRanker.fit")
        check.call(ranker, "XGBRanker", "predict", semconv.OPERATION_PREDICT, X[:ROWS])
        check.clear()
        booster = xgboost.train({"objective": "multi:softprob", "num_class": 3}, xgboost.DMatrix(X, label=y), 3)
        check.nothing_recorded("xgboost.train")
        check.call(booster, "Booster", "predict", semconv.OPERATION_PREDICT, xgboost.DMatrix(X[:ROWS]))
        check.call(booster, "Booster", "inplace_predict", semconv.OPERATION_PREDICT, X[:ROWS])
        check.counted_rows()
    finally:
        XGBoostInstrumentor().uninstrument()
    assert check.problems == []


def test_lightgbm_estimators_and_boosters(providers: Providers, per_call: None, one_thread: None) -> None:
    lightgbm = pytest.importorskip("lightgbm")

    from otel_mlmon.instrumentation.lightgbm import LightGBMInstrumentor

    X, y = make_classification(n_samples=80, n_features=4, n_informative=3, n_redundant=0, n_classes=3,
                               random_state=2)
    check = Check(providers, semconv.SYSTEM_LIGHTGBM)
    LightGBMInstrumentor().instrument(**providers.kwargs())
    try:
        class Later(Vote, lightgbm.LGBMClassifier):  # defined after instrumentation, predict from a mixin
            pass

        small = {"n_estimators": 4, "verbose": -1, "min_child_samples": 5}
        models = [
            ("LGBMClassifier", lightgbm.LGBMClassifier(**small), y),
            ("LGBMRegressor", lightgbm.LGBMRegressor(**small), y.astype(float)),
            ("Later", Later(**small), y),
        ]
        for name, model, target in models:
            check.clear()
            model.fit(X, target)
            check.nothing_recorded(f"{name}.fit")
            check.call(model, name, "predict", semconv.OPERATION_PREDICT, X[:ROWS])
            if hasattr(model, "predict_proba"):
                check.call(model, name, "predict_proba", semconv.OPERATION_PREDICT_PROBA, X[:ROWS])
        check.clear()
        ranker = lightgbm.LGBMRanker(**small).fit(X, y, group=[10] * 8)
        check.nothing_recorded("LGBMRanker.fit")
        check.call(ranker, "LGBMRanker", "predict", semconv.OPERATION_PREDICT, X[:ROWS])
        check.clear()
        booster = lightgbm.train({"objective": "multiclass", "num_class": 3, "verbose": -1},
                                 lightgbm.Dataset(X, y), 3)
        check.nothing_recorded("lightgbm.train")
        check.call(booster, "Booster", "predict", semconv.OPERATION_PREDICT, X[:ROWS])
        check.counted_rows()
    finally:
        LightGBMInstrumentor().uninstrument()
    assert check.problems == []


def test_torch_modules(providers: Providers, per_call: None) -> None:
    torch = pytest.importorskip("torch")

    from otel_mlmon.instrumentation.torch import TorchInstrumentor

    check = Check(providers, semconv.SYSTEM_TORCH)
    TorchInstrumentor().instrument(**providers.kwargs())
    try:
        class Later(torch.nn.Module):  # defined after instrumentation; calls submodules, one of them twice
            def __init__(self) -> None:
                super().__init__()
                self.inner = torch.nn.Linear(4, 4)
                self.head = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(4, 2))

            def forward(self, x: Any) -> Any:
                return self.head(self.inner(self.inner(x)))

        models = [
            ("Linear", torch.nn.Linear(4, 3)),
            ("Sequential", torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))),
            ("Later", Later()),
            ("TransformerEncoderLayer", torch.nn.TransformerEncoderLayer(d_model=4, nhead=2, batch_first=True)),
        ]
        x = torch.randn(ROWS, 4)
        for name, module in models:
            check.clear()
            module.train()
            module(x).sum().backward()
            check.nothing_recorded(f"{name} in training mode")
            module.eval()
            with torch.no_grad():
                check.call(module, name, "__call__", semconv.OPERATION_FORWARD, x)
        check.counted_rows()
    finally:
        TorchInstrumentor().uninstrument()
    assert check.problems == []
