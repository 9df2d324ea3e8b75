"""What gets wrapped: the predict-like and fit-like methods a class resolves to, and classes defined later.

A method is wrapped where it is defined: on the class of the MRO whose ``__dict__`` holds it (a mixin such as
scikit-learn's ``LinearClassifierMixin`` included), once, whoever asks first. The runtime keeps the original
object and who needs the wrapper, so that uninstrumenting puts back exactly what was there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from otel_mlmon import semconv
from otel_mlmon.instrumentation import _guard
from otel_mlmon.instrumentation._outputs import LABELS, NONE, PROBA
from otel_mlmon.instrumentation._runtime import RUNTIME
from otel_mlmon.instrumentation._wrap import make_wrapper, suppressing, system_of

MANUAL = "manual"

# Method name -> (ml.operation.name, output kind) for scikit-learn-style estimators.
PREDICT_METHODS: dict[str, tuple[str, str]] = {
    "predict": (semconv.OPERATION_PREDICT, LABELS),
    "predict_proba": (semconv.OPERATION_PREDICT_PROBA, PROBA),
    "decision_function": (semconv.OPERATION_DECISION_FUNCTION, NONE),
}
# Never recorded, and nothing inside them is: training and scoring may call predict.
FIT_METHODS = ("fit", "partial_fit", "fit_predict", "fit_transform", "score")

__all__ = ["FIT_METHODS", "MANUAL", "PREDICT_METHODS", "SubclassHook", "estimator_task", "owner_of",
           "subclasses", "system_of", "wrap_resolved"]


def owner_of(cls: type, name: str) -> type | None:
    """The class of ``cls``'s MRO that defines ``name`` as a method (None: none does, or only ``object``)."""
    for klass in cls.__mro__:
        attribute = klass.__dict__.get(name)
        if attribute is not None or name in klass.__dict__:
            if klass is object or not _is_method(attribute):
                return None
            return klass
    return None


def wrap_resolved(cls: type, who: str, system: str, task_of: Callable[[Any], str | None] | None,
                  model: Any = None, methods: Iterable[str] = PREDICT_METHODS,
                  accept: Callable[[type], bool] | None = None) -> int:
    """Wrap the predict-like methods ``cls`` resolves to (recorded) and its fit-like ones (nothing recorded inside).

    ``who`` (an instrumentor) or ``model`` (``instrument_model``) is noted as needing each wrapper. ``accept``:
    whether a defining class may be wrapped by this caller (an instrumentor leaves other frameworks' classes to
    their own). Returns how many predict-like methods are wrapped for ``cls``.
    """
    found = 0
    for name in methods:
        owner = owner_of(cls, name)
        if owner is None or (accept is not None and not accept(owner)):
            continue
        operation, output_kind = PREDICT_METHODS[name]
        RUNTIME.wrap(owner, name, make_wrapper(operation, output_kind, system, task_of), who, model)
        found += 1
    for name in FIT_METHODS:
        owner = owner_of(cls, name)
        if owner is not None and (accept is None or accept(owner)):
            RUNTIME.wrap(owner, name, suppressing, who, model)
    return found


def _is_method(attribute: Any) -> bool:
    """A function, or a method descriptor such as scikit-learn's ``available_if`` (wrapt binds through it)."""
    if attribute is None or isinstance(attribute, (property, staticmethod, classmethod)):
        return False
    return callable(attribute) or (hasattr(attribute, "__get__") and not isinstance(attribute, type))


def estimator_task(instance: Any) -> str | None:
    """classification | regression from scikit-learn conventions (tags, ``_estimator_type``, ``classes_``)."""
    kind = None
    tags = getattr(instance, "__sklearn_tags__", None)
    if callable(tags):
        try:
            kind = getattr(tags(), "estimator_type", None)
        except Exception:
            kind = None
    kind = kind or getattr(instance, "_estimator_type", None)
    if kind == "classifier":
        return semconv.TASK_CLASSIFICATION
    if kind == "regressor":
        return semconv.TASK_REGRESSION
    if hasattr(instance, "classes_"):
        return semconv.TASK_CLASSIFICATION
    return None


def subclasses(base: type) -> list[type]:
    """``base`` and all its subclasses defined so far."""
    seen: list[type] = []
    stack = [base]
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.append(cls)
        try:
            stack.extend(cls.__subclasses__())
        except TypeError:
            pass
    return seen


class SubclassHook:
    """Calls ``callback(cls)`` for every class defined later under ``base`` (via ``__init_subclass__``)."""

    def __init__(self, base: type, callback: Callable[[type], None]) -> None:
        self.base = base
        self.callback = callback
        self._original = base.__dict__.get("__init_subclass__")
        original, callback_ref, hook_base = self._original, callback, base

        def __init_subclass__(cls: type, **kwargs: Any) -> None:
            if original is not None:
                original.__get__(None, cls)(**kwargs)
            else:
                super(hook_base, cls).__init_subclass__(**kwargs)  # type: ignore[misc,arg-type]
            _guard.call("patch", callback_ref, cls)

        self._installed: classmethod[Any, Any, None] = classmethod(__init_subclass__)
        base.__init_subclass__ = self._installed  # type: ignore[assignment]

    def remove(self) -> None:
        if self.base.__dict__.get("__init_subclass__") is not self._installed:
            return  # replaced since: leave what is there
        if self._original is None:
            delattr(self.base, "__init_subclass__")
        else:
            self.base.__init_subclass__ = self._original  # type: ignore[method-assign]
