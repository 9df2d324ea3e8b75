"""Instrumentation of model inference: the wrapper, the per-framework instrumentors and their helpers.

Instrumentors (entry-point group ``opentelemetry_instrumentor``): ``mlmon_sklearn``, ``mlmon_xgboost``,
``mlmon_lightgbm``, ``mlmon_torch``. Importing this package imports no ML framework.
"""

from __future__ import annotations

__all__ = ["force_flush"]


def force_flush(timeout_millis: int = 10_000) -> bool:
    """Emit buffered ``ml.predictions`` events and export feature sketches now (e.g. before a test asserts)."""
    from otel_mlmon.instrumentation._runtime import RUNTIME

    return RUNTIME.force_flush(timeout_millis)

