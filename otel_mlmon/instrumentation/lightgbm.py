"""Zero-code instrumentation of LightGBM (entry point ``mlmon_lightgbm``): the scikit-learn API
(``LGBMClassifier``, ``LGBMRegressor``, …, and the application's subclasses, defined before or after) and
``lightgbm.Booster.predict``.

A Booster's task comes from its objective (``binary``, ``multiclass*``, ``cross_entropy*`` → classification;
ranking objectives → none; others → regression).
"""

from __future__ import annotations

import re
from typing import Any

from otel_mlmon import semconv
from otel_mlmon.instrumentation import _patch
from otel_mlmon.instrumentation._base import MlInstrumentor
from otel_mlmon.instrumentation._outputs import RAW
from otel_mlmon.instrumentation._runtime import RUNTIME
from otel_mlmon.instrumentation._wrap import make_wrapper, suppressing

_CLASSIFICATION = ("binary", "multiclass", "multiclassova", "softmax", "ova", "cross_entropy", "xentropy",
                   "cross_entropy_lambda", "xentlambda")
_RANKING = ("lambdarank", "rank_xendcg", "xendcg")


def booster_task(booster: Any) -> str | None:
    objective = (getattr(booster, "params", None) or {}).get("objective")
    if objective is None:
        try:
            match = re.search(r"^objective=(\S+)", booster.model_to_string(num_iteration=0), re.MULTILINE)
        except Exception:
            match = None
        objective = match.group(1) if match else None
    if not isinstance(objective, str):
        return None
    name = objective.split()[0]
    if name in _CLASSIFICATION:
        return semconv.TASK_CLASSIFICATION
    if name in _RANKING:
        return None
    return semconv.TASK_REGRESSION


class LightGBMInstrumentor(MlInstrumentor):
    system = semconv.SYSTEM_LIGHTGBM
    module = "lightgbm"
    dependencies = ("lightgbm >= 4.0",)

    def patch(self) -> None:
        import lightgbm
        from lightgbm import engine
        from lightgbm import sklearn as lgb_sklearn

        self.wrap_classes(lgb_sklearn.LGBMModel, _patch.estimator_task)
        RUNTIME.wrap(lightgbm.Booster, "predict",
                    make_wrapper(semconv.OPERATION_PREDICT, RAW, self.system, booster_task), self.who)
        for owner in (lightgbm, engine):
            for function in ("train", "cv"):
                if hasattr(owner, function):
                    RUNTIME.wrap(owner, function, suppressing, self.who)
