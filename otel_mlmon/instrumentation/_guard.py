"""The guard around all telemetry work done in the user's process: catch, log once per kind, count, drop.

Telemetry code never runs inside the ``try`` that holds the user's call, and nothing here ever raises into the
application. Each failure kind is logged with its traceback the first time only, and counted (``counts()``, and
the ``ml.instrumentation.errors`` counter when one is attached).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

_logger = logging.getLogger("otel_mlmon")

T = TypeVar("T")

_lock = threading.Lock()
_counts: Counter[str] = Counter()
_logged: set[str] = set()
_listeners: list[Callable[[str], None]] = []


def failure(kind: str, exc: BaseException | None = None, message: str | None = None) -> None:
    """Record one failure of ``kind``: counted always, logged the first time."""
    with _lock:
        _counts[kind] += 1
        first = kind not in _logged
        _logged.add(kind)
        listeners = list(_listeners)
    if first:
        text = message or f"otel-mlmon dropped telemetry ({kind})"
        if exc is not None:
            _logger.warning("%s: %s: %s (logged once; later failures of this kind are only counted)",
                            text, type(exc).__name__, exc, exc_info=exc)
        else:
            _logger.warning("%s (logged once; later occurrences are only counted)", text)
    for listener in listeners:
        try:
            listener(kind)
        except Exception:  # a broken listener must not break the guard
            pass


def call(kind: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Run ``function``; on any exception record a failure of ``kind`` and return None."""
    try:
        return function(*args, **kwargs)
    except Exception as exc:
        failure(kind, exc)
        return None


def counts() -> dict[str, int]:
    """Failures per kind since start (or ``reset()``)."""
    with _lock:
        return dict(_counts)


def add_listener(listener: Callable[[str], None]) -> None:
    with _lock:
        _listeners.append(listener)


def remove_listener(listener: Callable[[str], None]) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def reset() -> None:
    """Forget counts and which kinds were logged (tests)."""
    with _lock:
        _counts.clear()
        _logged.clear()
