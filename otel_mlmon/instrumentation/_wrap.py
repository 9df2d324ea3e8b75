"""The one wrapper factory: what happens around every instrumented model call.

Order of work in a wrapper: call through at once when instrumentation is suppressed or a call of ours is already
in progress (one user-level call = one operation: a ``predict`` that calls ``decision_function``, a Pipeline that
calls its estimator, a forest that calls its trees, are recorded once); find the model's telemetry and recorder
(guarded); the user's call, alone in its ``try``; then the call's telemetry (``_call``). The user's exception is
re-raised untouched and the return value is the very object the model returned.

"A call of ours in progress" is a ``ContextVar``: it follows the call into ``asyncio`` tasks and, through
``propagating`` (joblib's ``Parallel``), into the worker threads that scikit-learn's ensembles predict in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context

from otel_mlmon import semconv
from otel_mlmon.instrumentation._call import Call
from otel_mlmon.instrumentation._config import CONFIG_ATTRIBUTE, NAME_ATTRIBUTE, VERSION_ATTRIBUTE
from otel_mlmon.instrumentation._runtime import RUNTIME

_ACTIVE: ContextVar[bool] = ContextVar("otel_mlmon_active", default=False)

try:  # what is_instrumentation_enabled() reads, looked up in a context we fetched once anyway
    from opentelemetry.instrumentation.utils import (
        _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS,
    )
    from opentelemetry.instrumentation.utils import (
        _SUPPRESS_INSTRUMENTATION_KEY_PLAIN as _SUPPRESS_PLAIN,
    )
except ImportError:  # pragma: no cover - a future opentelemetry-instrumentation without them
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled

    def _suppressed(context: Any) -> bool:
        return not is_instrumentation_enabled()
else:
    def _suppressed(context: Any) -> bool:
        return bool(context.get(_SUPPRESS) or context.get(_SUPPRESS_PLAIN))


def suppressing(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Wrapper for ``fit`` and the like: nothing is recorded inside it (fit may call predict)."""
    token = _ACTIVE.set(True)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _ACTIVE.reset(token)


def _inside(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    token = _ACTIVE.set(True)
    try:
        return function(*args, **kwargs)
    finally:
        _ACTIVE.reset(token)


def propagating(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Wrapper for ``joblib.Parallel.__call__``: tasks started inside a recorded call run as part of it (threads
    do not inherit context variables), so a forest's trees predicting in worker threads are not recorded."""
    if not _ACTIVE.get():
        return wrapped(*args, **kwargs)
    if args:
        iterable, args = args[0], args[1:]
    else:
        iterable = kwargs.pop("iterable")
    tasks = ((functools.partial(_inside, function), task_args, task_kwargs)
             for function, task_args, task_kwargs in iterable)
    return wrapped(tasks, *args, **kwargs)


def make_wrapper(operation: str, output_kind: str, system: str,
                 task_of: Callable[[Any], str | None] | None = None,
                 recordable: Callable[[Any], bool] | None = None) -> Callable[..., Any]:
    """A wrapt wrapper recording ``operation`` of models of ``system``.

    Args:
        operation: ``ml.operation.name``.
        output_kind: what the method returns (see ``_outputs``).
        system: ``ml.system.name``.
        task_of: the task of a model when ``instrument_model`` did not say.
        recordable: False for calls that are not inference (a torch module in training mode).
    """

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _ACTIVE.get():
            return wrapped(*args, **kwargs)
        parent = otel_context.get_current()
        if _suppressed(parent):
            return wrapped(*args, **kwargs)
        call = _begin(operation, output_kind, system, task_of, recordable, instance, parent)
        if call is None:
            return wrapped(*args, **kwargs)
        token = _ACTIVE.set(True)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _ACTIVE.reset(token)
            call.fail(exc)
            raise
        _ACTIVE.reset(token)
        call.succeed(result, instance, args, kwargs)
        return result

    return wrapper


def _begin(operation: str, output_kind: str, system: str, task_of: Callable[[Any], str | None] | None,
           recordable: Callable[[Any], bool] | None, instance: Any, parent: Any) -> Call | None:
    """The call's telemetry, or None when this instance is not recorded."""
    runtime = RUNTIME
    try:
        if instance is None or (recordable is not None and not recordable(instance)):
            return None
        config = getattr(instance, "__dict__", {}).get(CONFIG_ATTRIBUTE)
        threshold = extra = event_base = None
        if config is None:
            zero_code = runtime.zero_code
            if system not in zero_code:
                return None
            telemetry = zero_code[system] or runtime.default_telemetry()
            name = str(getattr(instance, NAME_ATTRIBUTE, None) or type(instance).__name__)
            version = str(getattr(instance, VERSION_ATTRIBUTE, None) or "")
            recorder = telemetry.recorder(name, version, system, lambda: task_of(instance) if task_of else None)
        else:
            telemetry = config.telemetry or runtime.default_telemetry()
            threshold = config.decision_threshold
            recorder = config.recorder
            if recorder is None:
                task = config.task

                def resolve_task() -> str | None:
                    return task or (task_of(instance) if task_of else None)

                recorder = config.recorder = telemetry.recorder(config.name, config.version, system, resolve_task,
                                                                config.columns, config.feature_names,
                                                                config.segmenting)
            extra = config.attributes
            if extra:
                event_base = config.event_base
                if event_base is None:
                    event_base = config.event_base = {**extra, **recorder.point_attributes}
        if runtime.flusher.stopped:  # a forked child's first prediction (gunicorn --preload workers)
            runtime.flusher.ensure_started()
        return Call(telemetry, recorder, operation, output_kind, parent, threshold, extra, event_base)
    except Exception as exc:
        runtime.guard.failure("start", exc)
        return None


SYSTEMS = {"sklearn": semconv.SYSTEM_SKLEARN, "xgboost": semconv.SYSTEM_XGBOOST,
           "lightgbm": semconv.SYSTEM_LIGHTGBM, "torch": semconv.SYSTEM_TORCH}


def system_of(cls: type) -> str:
    """``ml.system.name`` of a class: the framework of the first class of its MRO that comes from one."""
    for klass in cls.__mro__:
        found = SYSTEMS.get(klass.__module__.partition(".")[0])
        if found is not None:
            return found
    return semconv.SYSTEM_OTHER
