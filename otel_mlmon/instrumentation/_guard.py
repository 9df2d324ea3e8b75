"""The guard around all telemetry work done in the user's process: catch, log once per kind, count, drop.

Telemetry code never runs inside the ``try`` that holds the user's call, and nothing here ever raises into the
application. Each failure kind is logged with its traceback the first time only, and counted (``counts()``, and
the ``ml.instrumentation.errors`` counter when one is attached). The state is the runtime's (``RUNTIME.guard``);
these functions are its short names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from otel_mlmon.instrumentation._runtime import RUNTIME

T = TypeVar("T")


def failure(kind: str, exc: BaseException | None = None, message: str | None = None) -> None:
    """Record one failure of ``kind``: counted always, logged the first time."""
    RUNTIME.guard.failure(kind, exc, message)


def call(kind: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Run ``function``; on any exception record a failure of ``kind`` and return None."""
    return RUNTIME.guard.call(kind, function, *args, **kwargs)


def counts() -> dict[str, int]:
    """Failures per kind since start (or ``reset()``)."""
    return RUNTIME.guard.counts()


def add_listener(listener: Callable[[str], None]) -> None:
    RUNTIME.guard.add_listener(listener)


def remove_listener(listener: Callable[[str], None]) -> None:
    RUNTIME.guard.remove_listener(listener)


def reset() -> None:
    """Forget counts and which kinds were logged (tests)."""
    RUNTIME.guard.reset()
