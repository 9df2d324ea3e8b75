"""instrument_model(decision_threshold=t): a binary classifier whose caller thresholds predict_proba itself is
recorded with the labels the caller used, checked against the same threshold applied to scikit-learn's scores."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.linear_model import LogisticRegression

import otel_mlmon
from otel_mlmon import semconv
from otel_mlmon.instrumentation import _guard
from tests.conftest import Providers, column


@pytest.fixture(scope="module")
def fitted() -> tuple[LogisticRegression, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    y = np.where(y == 1, "benign", "malignant")  # classes_ = ['benign', 'malignant']: positive = 'malignant'
    return LogisticRegression(max_iter=5000).fit(X, y), X


def test_predict_proba_is_labelled_with_the_callers_threshold(providers: Providers, fitted) -> None:
    model, X = fitted
    threshold = 0.2
    scores = model.predict_proba(X)[:, 1]
    used_by_caller = np.where(scores >= threshold, model.classes_[1], model.classes_[0]).tolist()
    own = model.predict(X).tolist()
    assert used_by_caller != own  # the threshold changes some labels on this data
    otel_mlmon.instrument_model(model, name="bc", decision_threshold=threshold, **providers.kwargs())
    model.predict_proba(X)
    events = providers.events(semconv.EVENT_PREDICTIONS)
    assert column(events, semconv.ML_PREDICTION_LABEL) == used_by_caller
    np.testing.assert_array_equal(column(events, semconv.ML_PREDICTION_SCORE), scores)


def test_a_score_equal_to_the_threshold_is_positive(providers: Providers, fitted) -> None:
    model, X = fitted
    score = float(model.predict_proba(X[:1])[0, 1])
    otel_mlmon.instrument_model(model, name="bc", decision_threshold=score, **providers.kwargs())
    model.predict_proba(X[:1])
    assert column(providers.events(semconv.EVENT_PREDICTIONS), semconv.ML_PREDICTION_LABEL) == [model.classes_[1]]


def test_predict_keeps_the_models_own_labels(providers: Providers, fitted) -> None:
    model, X = fitted
    own = model.predict(X).tolist()
    otel_mlmon.instrument_model(model, name="bc", decision_threshold=0.01, **providers.kwargs())
    model.predict(X)
    assert column(providers.events(semconv.EVENT_PREDICTIONS), semconv.ML_PREDICTION_LABEL) == own


@pytest.mark.parametrize(("value", "error"), [(1.5, ValueError), (-0.1, ValueError), (float("nan"), ValueError),
                                              ("0.3", TypeError), (True, TypeError)])
def test_a_bad_threshold_is_refused_at_setup(fitted, value, error) -> None:
    model, _ = fitted
    with pytest.raises(error, match="decision_threshold"):
        otel_mlmon.instrument_model(model, name="bc", decision_threshold=value)


def test_a_threshold_for_a_multiclass_model_is_refused(providers: Providers) -> None:
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    with pytest.raises(ValueError, match="3 classes"):
        otel_mlmon.instrument_model(model, name="iris", decision_threshold=0.3, **providers.kwargs())
    with pytest.raises(ValueError, match="regression"):
        otel_mlmon.instrument_model(model, name="iris", task="regression", decision_threshold=0.3)
    assert _guard.counts() == {}
