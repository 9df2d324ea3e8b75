"""The drift and performance engine: reference profiles, drift methods, thresholds, windows, window results.

numpy and scipy only, no OpenTelemetry import: the batch path (``mlmon evaluate``) and the streaming processor
both call ``evaluate_window`` on the same sketches.
"""

from __future__ import annotations

from otel_mlmon.engine.drift import METHODS, DriftMethod, DriftValue
from otel_mlmon.engine.evaluate import LabeledRows, Policy, WindowData, evaluate_window, reference_results
from otel_mlmon.engine.profile import ColumnProfile, ReferenceProfile
from otel_mlmon.engine.results import COLUMNS, WindowResult
from otel_mlmon.engine.windows import WindowSpec

__all__ = ["COLUMNS", "METHODS", "ColumnProfile", "DriftMethod", "DriftValue", "LabeledRows", "Policy",
           "ReferenceProfile", "WindowData", "WindowResult", "WindowSpec", "evaluate_window", "reference_results"]
