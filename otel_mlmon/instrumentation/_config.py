"""What ``instrument_model`` attaches to a model (``ModelConfig``), and the attribute names models are read by.

Which instances are recorded: those configured by ``instrument_model`` (attribute ``_otel_mlmon``), and every
instance of a framework whose zero-code instrumentor is active. Zero-code names default to the class name unless
the model carries ``otel_mlmon_name`` / ``otel_mlmon_version`` attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from otel_mlmon import semconv
from otel_mlmon.instrumentation._recorder import ColumnSpec, ModelRecorder
from otel_mlmon.instrumentation._segments import SegmentConfig
from otel_mlmon.instrumentation._telemetry import Telemetry

CONFIG_ATTRIBUTE = "_otel_mlmon"
NAME_ATTRIBUTE = "otel_mlmon_name"
VERSION_ATTRIBUTE = "otel_mlmon_version"

# Attribute keys otel-mlmon sets itself: ``instrument_model(attributes=...)`` may not take them.
RESERVED_ATTRIBUTES = frozenset({
    semconv.ML_MODEL_NAME, semconv.ML_MODEL_VERSION, semconv.ML_MODEL_TASK, semconv.ML_SYSTEM_NAME,
    semconv.ML_OPERATION_NAME, semconv.ML_BATCH_SIZE, semconv.ERROR_TYPE, semconv.ML_PREDICTION_ID,
    semconv.ML_PREDICTION_LABEL, semconv.ML_PREDICTION_SCORE, semconv.ML_PREDICTION_VALUE,
    semconv.ML_PREDICTION_TIME, semconv.ML_FEATURES, semconv.ML_LABEL_VALUE, semconv.ML_SEGMENT,
    semconv.ML_FAIRNESS_GROUP})
RESERVED_PREFIXES = (semconv.ML_PREDICTION_SCORE_PREFIX, semconv.ML_FEATURE_PREFIX)


@dataclass
class ModelConfig:
    """What ``instrument_model`` set on a model. Pickles without its runtime telemetry."""

    name: str
    version: str = ""
    task: str | None = None
    feature_names: tuple[str, ...] | None = None
    columns: Mapping[str, ColumnSpec] = field(default_factory=dict)
    telemetry: Telemetry | None = None
    recorder: ModelRecorder | None = None  # resolved at the first call
    decision_threshold: float | None = None  # binary classifiers: label = positive class when score >= it
    attributes: Mapping[str, Any] | None = None  # extra span and event attributes (e.g. a registry's run id)
    event_base: dict[str, Any] | None = None  # event attributes: the extras, then model name and version
    segmenting: SegmentConfig | None = None  # segments and fairness groups (None: from the settings)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["telemetry"] = state["recorder"] = None
        return state
