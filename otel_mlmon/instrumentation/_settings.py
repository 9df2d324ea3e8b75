"""Settings of the instrumentation, read once from ``OTEL_PYTHON_MLMON_*`` (see ``environment_variables``).

A malformed value warns, naming the variable, and falls back to the default: the application never stops
because of monitoring configuration.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from otel_mlmon import environment_variables as env

_logger = logging.getLogger(__name__)

EVENT_MODES = ("buffered", "per_call")
SPAN_MODES = ("current", "deferred")


@dataclass(frozen=True)
class Settings:
    capture_features: bool = False
    feature_sketches: bool = True
    sketch_export_interval_s: float = 60.0
    sketch_precision: int = 7
    event_mode: str = "buffered"
    span_mode: str = "current"
    event_flush_interval_s: float = 1.0
    event_max_rows: int = 4096
    category_top_k: int = 50
    max_categories: int = 1000
    max_models: int = 100
    max_features: int = 1000
    id_column: str | None = None
    id_baggage_key: str | None = None
    segment_column: str | None = None
    segment_baggage_key: str | None = None
    max_segments: int = 10  # engine.segments.MAX_SEGMENTS (not imported: the engine pulls in scipy)
    sensitive_column: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        default = cls()
        interval_default_ms = _integer(environ, "OTEL_METRIC_EXPORT_INTERVAL", 60000, 1, None)
        return cls(
            capture_features=_boolean(environ, env.OTEL_PYTHON_MLMON_CAPTURE_FEATURES, default.capture_features),
            feature_sketches=_boolean(environ, env.OTEL_PYTHON_MLMON_FEATURE_SKETCHES, default.feature_sketches),
            sketch_export_interval_s=_integer(environ, env.OTEL_PYTHON_MLMON_SKETCH_EXPORT_INTERVAL,
                                              interval_default_ms, 1, None) / 1000.0,
            sketch_precision=_integer(environ, env.OTEL_PYTHON_MLMON_SKETCH_PRECISION, default.sketch_precision,
                                      1, 10),
            event_mode=_choice(environ, env.OTEL_PYTHON_MLMON_EVENT_MODE, default.event_mode, EVENT_MODES),
            span_mode=_choice(environ, env.OTEL_PYTHON_MLMON_SPAN_MODE, default.span_mode, SPAN_MODES),
            event_flush_interval_s=_integer(environ, env.OTEL_PYTHON_MLMON_EVENT_FLUSH_INTERVAL, 1000, 1,
                                            None) / 1000.0,
            event_max_rows=_integer(environ, env.OTEL_PYTHON_MLMON_EVENT_MAX_ROWS, default.event_max_rows, 1,
                                    None),
            category_top_k=_integer(environ, env.OTEL_PYTHON_MLMON_CATEGORY_TOP_K, default.category_top_k, 1,
                                    None),
            max_categories=_integer(environ, env.OTEL_PYTHON_MLMON_MAX_CATEGORIES, default.max_categories, 1,
                                    None),
            max_models=_integer(environ, env.OTEL_PYTHON_MLMON_MAX_MODELS, default.max_models, 1, None),
            max_features=_integer(environ, env.OTEL_PYTHON_MLMON_MAX_FEATURES, default.max_features, 1, None),
            id_column=_raw(environ, env.OTEL_PYTHON_MLMON_ID_COLUMN),
            id_baggage_key=_raw(environ, env.OTEL_PYTHON_MLMON_ID_BAGGAGE_KEY),
            segment_column=_raw(environ, env.OTEL_PYTHON_MLMON_SEGMENT_COLUMN),
            segment_baggage_key=_raw(environ, env.OTEL_PYTHON_MLMON_SEGMENT_BAGGAGE_KEY),
            max_segments=_integer(environ, env.OTEL_PYTHON_MLMON_MAX_SEGMENTS, default.max_segments, 2, None),
            sensitive_column=_raw(environ, env.OTEL_PYTHON_MLMON_SENSITIVE_COLUMN),
        )


def _raw(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _boolean(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = _raw(environ, name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    _logger.warning("%s=%r is not a boolean (true|false); using the default %s", name, value, default)
    return default


def _integer(environ: Mapping[str, str], name: str, default: int, low: int, high: int | None) -> int:
    value = _raw(environ, name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        _logger.warning("%s=%r is not an integer; using the default %s", name, value, default)
        return default
    if number < low or (high is not None and number > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        _logger.warning("%s=%r must be %s; using the default %s", name, value, bounds, default)
        return default
    return number


def _choice(environ: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _raw(environ, name)
    if value is None:
        return default
    if value.lower() in choices:
        return value.lower()
    _logger.warning("%s=%r is not one of %s; using the default %r", name, value, "|".join(choices), default)
    return default
