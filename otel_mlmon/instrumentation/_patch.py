"""Wrapping and unwrapping methods on classes, shared by the instrumentors and ``instrument_model``.

One registry of what otel-mlmon wrapped, so that a method is wrapped once whoever asks first, and an
instrumentor's ``uninstrument()`` restores exactly what it wrapped (but never a method that ``instrument_model``
relies on).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import wrapt

from otel_mlmon import semconv
from otel_mlmon.instrumentation import _guard
from otel_mlmon.instrumentation._outputs import LABELS, NONE, PROBA
from otel_mlmon.instrumentation._wrap import make_wrapper, suppressing

MANUAL = "manual"

# Method name -> (ml.operation.name, output kind) for scikit-learn-style estimators.
PREDICT_METHODS: dict[str, tuple[str, str]] = {
    "predict": (semconv.OPERATION_PREDICT, LABELS),
    "predict_proba": (semconv.OPERATION_PREDICT_PROBA, PROBA),
    "decision_function": (semconv.OPERATION_DECISION_FUNCTION, NONE),
}
# Never recorded, and nothing inside them is: training and scoring may call predict.
FIT_METHODS = ("fit", "partial_fit", "fit_predict", "fit_transform", "score")

SYSTEMS = {"sklearn": semconv.SYSTEM_SKLEARN, "xgboost": semconv.SYSTEM_XGBOOST,
           "lightgbm": semconv.SYSTEM_LIGHTGBM, "torch": semconv.SYSTEM_TORCH}

_lock = threading.RLock()
_owners: dict[tuple[Any, str], str] = {}  # (class or module, attribute) -> who wrapped it
_pinned: set[tuple[Any, str]] = set()  # needed by instrument_model: never unwrapped


def system_of(cls: type) -> str:
    return SYSTEMS.get(cls.__module__.partition(".")[0], semconv.SYSTEM_OTHER)


def wrap(owner: Any, name: str, wrapper: Callable[..., Any], who: str) -> bool:
    """Wrap ``owner.name`` unless otel-mlmon already did; True when this call wrapped it."""
    key = (owner, name)
    with _lock:
        if who == MANUAL:
            _pinned.add(key)
        if key in _owners:
            return False
        wrapt.wrap_function_wrapper(owner, name, wrapper)
        _owners[key] = who
        return True


def unwrap_all(who: str) -> None:
    """Restore every attribute ``who`` wrapped (except those pinned by ``instrument_model``)."""
    with _lock:
        for key in [k for k, owner in _owners.items() if owner == who and k not in _pinned]:
            owner, name = key
            attribute = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
            wrapped = getattr(attribute, "__wrapped__", None)
            if wrapped is not None:
                setattr(owner, name, wrapped)
            del _owners[key]


def wrap_estimator_class(cls: type, who: str, system: str, task_of: Callable[[Any], str | None],
                         methods: Iterable[str] = PREDICT_METHODS) -> None:
    """Wrap the predict-like and fit-like methods that ``cls`` itself defines."""
    for name in methods:
        if _is_method(cls.__dict__.get(name)):
            operation, output_kind = PREDICT_METHODS[name]
            wrap(cls, name, make_wrapper(operation, output_kind, system, task_of), who)
    for name in FIT_METHODS:
        if _is_method(cls.__dict__.get(name)):
            wrap(cls, name, suppressing, who)


def _is_method(attribute: Any) -> bool:
    """A function, or a method descriptor such as scikit-learn's ``available_if`` (wrapt binds through it)."""
    if attribute is None or isinstance(attribute, (property, staticmethod)):
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

        base.__init_subclass__ = classmethod(__init_subclass__)  # type: ignore[assignment]

    def remove(self) -> None:
        if self._original is None:
            if "__init_subclass__" in self.base.__dict__:
                delattr(self.base, "__init_subclass__")
        else:
            self.base.__init_subclass__ = self._original  # type: ignore[method-assign]
