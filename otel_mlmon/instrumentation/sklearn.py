"""Zero-code instrumentation of scikit-learn estimators and Pipelines (entry point ``mlmon_sklearn``).

Every subclass of ``sklearn.base.BaseEstimator`` — scikit-learn's own and the application's, defined before or
after instrumentation — has the ``predict``, ``predict_proba`` and ``decision_function`` it resolves to wrapped
(where they are defined: a mixin such as ``LinearClassifierMixin`` included), and its ``fit``-like methods and
``score`` suppressed. Work that an estimator hands to joblib's worker threads (a forest's trees) belongs to the
call that started it. XGBoost and LightGBM estimators are left to their own instrumentors.
"""

from __future__ import annotations

from otel_mlmon import semconv
from otel_mlmon.instrumentation._base import MlInstrumentor
from otel_mlmon.instrumentation._patch import estimator_task
from otel_mlmon.instrumentation._runtime import RUNTIME
from otel_mlmon.instrumentation._wrap import propagating


class SklearnInstrumentor(MlInstrumentor):
    system = semconv.SYSTEM_SKLEARN
    module = "sklearn.base"
    dependencies = ("scikit-learn >= 1.2",)

    def patch(self) -> None:
        import joblib.parallel
        from sklearn.base import BaseEstimator

        self.wrap_classes(BaseEstimator, estimator_task)
        RUNTIME.wrap(joblib.parallel.Parallel, "__call__", propagating, self.who)
