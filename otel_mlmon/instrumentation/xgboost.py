"""Zero-code instrumentation of XGBoost (entry point ``mlmon_xgboost``): the scikit-learn API
(``XGBClassifier``, ``XGBRegressor``, …, and the application's subclasses, defined before or after) and
``xgboost.Booster.predict`` / ``inplace_predict``.

A Booster's task comes from its objective (``binary:*``, ``multi:*`` → classification; ``reg:*`` → regression),
read once per model from its saved configuration.
"""

from __future__ import annotations

import json
from typing import Any

from otel_mlmon import semconv
from otel_mlmon.instrumentation import _patch
from otel_mlmon.instrumentation._base import MlInstrumentor
from otel_mlmon.instrumentation._outputs import RAW
from otel_mlmon.instrumentation._runtime import RUNTIME
from otel_mlmon.instrumentation._wrap import make_wrapper, suppressing


def booster_task(booster: Any) -> str | None:
    try:
        objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    except Exception:
        return None
    if objective.startswith(("binary:", "multi:")):
        return semconv.TASK_CLASSIFICATION
    if objective.startswith(("reg:", "count:", "survival:")):
        return semconv.TASK_REGRESSION
    return None


class XGBoostInstrumentor(MlInstrumentor):
    system = semconv.SYSTEM_XGBOOST
    module = "xgboost"
    dependencies = ("xgboost >= 2.0",)

    def patch(self) -> None:
        import xgboost
        from xgboost import sklearn as xgb_sklearn

        self.wrap_classes(xgb_sklearn.XGBModel, _patch.estimator_task)
        for method in ("predict", "inplace_predict"):
            RUNTIME.wrap(xgboost.Booster, method,
                         make_wrapper(semconv.OPERATION_PREDICT, RAW, self.system, booster_task), self.who)
        for owner in (xgboost, xgboost.training):
            for function in ("train", "cv"):
                if hasattr(owner, function):
                    RUNTIME.wrap(owner, function, suppressing, self.who)
