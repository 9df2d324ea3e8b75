"""otel-mlmon: monitoring of machine-learning models on OpenTelemetry.

The facade only: ``instrument_model``, ``uninstrument_model``, ``prediction_ids``, ``record_labels`` and
``__version__``. Importing it imports neither numpy, scipy, grpc nor any ML framework; the implementation loads at
first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from otel_mlmon._version import __version__

if TYPE_CHECKING:
    from otel_mlmon.instrumentation._api import instrument_model, prediction_ids, record_labels, uninstrument_model

__all__ = ["__version__", "instrument_model", "prediction_ids", "record_labels", "uninstrument_model"]

_LAZY = {"instrument_model", "prediction_ids", "record_labels", "uninstrument_model"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from otel_mlmon.instrumentation import _api

        value = getattr(_api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'otel_mlmon' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
