"""Zero-code instrumentation of scikit-learn estimators and Pipelines (entry point ``mlmon_sklearn``).

Every subclass of ``sklearn.base.BaseEstimator`` — scikit-learn's own and the application's, defined before or
after instrumentation — has the ``predict``, ``predict_proba`` and ``decision_function`` it defines wrapped, and
its ``fit``-like methods suppressed. XGBoost and LightGBM estimators are left to their own instrumentors.
"""

from __future__ import annotations

from otel_mlmon import semconv
from otel_mlmon.instrumentation._base import MlInstrumentor
from otel_mlmon.instrumentation._patch import SubclassHook, estimator_task, subclasses

_OWN_INSTRUMENTORS = ("xgboost", "lightgbm")


class SklearnInstrumentor(MlInstrumentor):
    _hook: SubclassHook | None = None
    system = semconv.SYSTEM_SKLEARN
    module = "sklearn.base"
    dependencies = ("scikit-learn >= 1.2",)

    def patch(self) -> None:
        from sklearn.base import BaseEstimator

        self.wrap_classes([c for c in subclasses(BaseEstimator) if self._ours(c)], estimator_task)
        if self._hook is None:
            self._hook = SubclassHook(BaseEstimator, self._on_class)

    def _on_class(self, cls: type) -> None:
        if getattr(self, "_active", False) and self._ours(cls):
            self.wrap_classes([cls], estimator_task)

    @staticmethod
    def _ours(cls: type) -> bool:
        return cls.__module__.partition(".")[0] not in _OWN_INSTRUMENTORS

    def unpatch(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

