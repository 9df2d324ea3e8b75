"""Every ``ml.*`` name otel-mlmon puts on the wire: attributes, metrics, events, units and bucket advisories.

No other module spells a telemetry name as a literal; they import it from here. Processor-side names (drift,
evaluation, alerts) live here too, so that both halves of the product agree on one vocabulary.
"""

from __future__ import annotations

from typing import Final

INSTRUMENTATION_SCOPE: Final = "otel_mlmon"

# --- Attributes on spans, metric points and events -----------------------------------------------------------
ML_MODEL_NAME: Final = "ml.model.name"
ML_MODEL_VERSION: Final = "ml.model.version"
ML_MODEL_RUN_ID: Final = "ml.model.run_id"  # the MLflow run that logged the model (spans, events; never metrics)
ML_MODEL_TASK: Final = "ml.model.task"
ML_SYSTEM_NAME: Final = "ml.system.name"
ML_OPERATION_NAME: Final = "ml.operation.name"
ML_BATCH_SIZE: Final = "ml.batch.size"
ERROR_TYPE: Final = "error.type"

ML_FEATURE_NAME: Final = "ml.feature.name"
ML_FEATURE_CATEGORY: Final = "ml.feature.category"
ML_FEATURE_MISSING_REASON: Final = "ml.feature.missing.reason"
ML_PREDICTION_CLASS: Final = "ml.prediction.class"
# Parameters of a numeric sketch's bucketing, carried on its data point so a receiver can rebuild it exactly.
ML_SKETCH_CENTER: Final = "ml.sketch.center"
ML_SKETCH_SCALE: Final = "ml.sketch.scale"
ML_SKETCH_PRECISION: Final = "ml.sketch.precision"

# Event attributes (columnar arrays, one element per row).
ML_PREDICTION_ID: Final = "ml.prediction.id"
ML_PREDICTION_LABEL: Final = "ml.prediction.label"
ML_PREDICTION_SCORE: Final = "ml.prediction.score"
ML_PREDICTION_SCORE_PREFIX: Final = "ml.prediction.score."  # + class label, multiclass
ML_PREDICTION_VALUE: Final = "ml.prediction.value"
# Event time of each row (int array, ns since the Unix epoch, in row order): the time of the predict call that made
# the row. Only on an ml.predictions event whose rows do not all share the log record's timestamp (rows of several
# calls buffered together); absent, every row's time is the record's timestamp.
ML_PREDICTION_TIME: Final = "ml.prediction.time"
ML_LABEL_VALUE: Final = "ml.label.value"
# The segment of each row (string array, one per row, in row order) on ml.predictions events, and the segment of a
# sketch point (a string) on every pre-aggregated point (ml.feature.value, ml.feature.value.m2, ml.feature.missing,
# ml.feature.category.count, ml.prediction.score, ml.prediction.value) when segments are configured: one point per
# feature per segment per interval, the model's whole sketch being their merge. Never on spans, ml.operation.duration
# or the ml.predictions counter. Bounded per model (OTEL_PYTHON_MLMON_MAX_SEGMENTS): values beyond the bound are
# __other__, rows without a value __missing__.
ML_SEGMENT: Final = "ml.segment"
# The value of the sensitive column of each row (string array, one per row) on ml.predictions events only (opt-in
# personal data: never on metrics or spans); bounded like segments.
ML_FAIRNESS_GROUP: Final = "ml.fairness.group"
# The sensitive column's name (a string) on the ml.predictions events that carry ml.fairness.group: the column the
# processor's fairness results are on.
ML_FAIRNESS_ATTRIBUTE: Final = "ml.fairness.attribute"
ML_FEATURE_PREFIX: Final = "ml.feature."  # + feature name; raw values, only with capture enabled
# Captured raw values of a wide model (more attributes than CAPTURE_PER_KEY_LIMIT): one map attribute (OTLP
# kvlist_value) of feature name -> array of the rows' values, instead of one ml.feature.<name> attribute per feature.
ML_FEATURES: Final = "ml.features"
CAPTURE_PER_KEY_LIMIT: Final = 64  # attributes of an event (all keys) up to which features go one key each

# Values of ml.model.task
TASK_CLASSIFICATION: Final = "classification"
TASK_REGRESSION: Final = "regression"
TASKS: Final = (TASK_CLASSIFICATION, TASK_REGRESSION)

# Values of ml.operation.name
OPERATION_PREDICT: Final = "predict"
OPERATION_PREDICT_PROBA: Final = "predict_proba"
OPERATION_DECISION_FUNCTION: Final = "decision_function"
OPERATION_FORWARD: Final = "forward"

# Values of ml.system.name
SYSTEM_SKLEARN: Final = "sklearn"
SYSTEM_XGBOOST: Final = "xgboost"
SYSTEM_LIGHTGBM: Final = "lightgbm"
SYSTEM_TORCH: Final = "pytorch"
SYSTEM_OTHER: Final = "other"

# Values of ml.feature.missing.reason
MISSING_NULL: Final = "missing"  # None / NaN / NA
MISSING_NON_FINITE: Final = "non_finite"  # +inf / -inf
MISSING_INVALID: Final = "invalid"  # not a number in a numeric column (e.g. a string)

# Overflow buckets (bounded cardinality)
OTHER_CATEGORY: Final = "__other__"
MISSING_SEGMENT: Final = "__missing__"  # ml.segment / ml.fairness.group of a row without a value
OVERFLOW_MODEL_NAME: Final = "__overflow__"

# --- Metrics emitted by the instrumentation ------------------------------------------------------------------
ML_OPERATION_DURATION: Final = "ml.operation.duration"
ML_OPERATION_DURATION_UNIT: Final = "s"
ML_OPERATION_DURATION_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)

ML_PREDICTIONS: Final = "ml.predictions"  # counter of rows; also the name of the predictions event
ML_PREDICTIONS_UNIT: Final = "{prediction}"

ML_PREDICTION_SCORE_METRIC: Final = "ml.prediction.score"
ML_PREDICTION_SCORE_UNIT: Final = "1"
ML_PREDICTION_SCORE_BUCKETS: Final = tuple(round(0.05 * i, 2) for i in range(1, 20))

ML_PREDICTION_VALUE_METRIC: Final = "ml.prediction.value"  # regression output sketch
ML_FEATURE_VALUE: Final = "ml.feature.value"  # numeric feature sketch (explicit-bound histogram)
ML_FEATURE_VALUE_M2: Final = "ml.feature.value.m2"  # sum of squared deviations of the same points
ML_FEATURE_MISSING: Final = "ml.feature.missing"
ML_FEATURE_CATEGORY_COUNT: Final = "ml.feature.category.count"
ML_VALUE_UNIT: Final = "1"
ML_COUNT_UNIT: Final = "{value}"

# Self-observability of the instrumentation
ML_INSTRUMENTATION_ERRORS: Final = "ml.instrumentation.errors"

# --- Events (OTLP log records with an EventName and no body) -------------------------------------------------
EVENT_PREDICTIONS: Final = "ml.predictions"
EVENT_LABELS: Final = "ml.labels"
EVENT_ALERT: Final = "ml.alert"

# --- Processor output ----------------------------------------------------------------------------------------
ML_DRIFT_SCORE: Final = "ml.drift.score"
ML_DRIFT_THRESHOLD: Final = "ml.drift.threshold"
ML_DRIFT_METHOD: Final = "ml.drift.method"
ML_EVALUATION_SCORE: Final = "ml.evaluation.score"
ML_EVALUATION_NAME: Final = "ml.evaluation.name"
ML_LABEL_COVERAGE: Final = "ml.label.coverage"
ML_LABEL_LATENCY: Final = "ml.label.latency"
ML_ALERTS: Final = "ml.alerts"
# gauge, 1 while an alert fires and 0 once it resolved, by model, version, kind, column (ml.feature.name) and
# ml.alert.metric: the processor's verdict as a series, so that Prometheus rules alert on exactly what it decided
ML_ALERT_FIRING: Final = "ml.alert.firing"
ML_ALERT_FIRING_UNIT: Final = "{alert}"
ML_ALERT_KIND: Final = "ml.alert.kind"
ML_ALERT_STATE: Final = "ml.alert.state"
ML_ALERT_METRIC: Final = "ml.alert.metric"
ML_ALERT_VALUE: Final = "ml.alert.value"
ML_ALERT_THRESHOLD: Final = "ml.alert.threshold"
ML_ALERT_WINDOW: Final = "ml.alert.window"
# On alerts of kind performance_change (sequential detection on the label stream): the metric the detector watches
# (accuracy | mae), its value before and since the estimated change point, and both points counted in the labels the
# detector took (the change point, and the label that revealed the change)
ML_ALERT_CHANGE_METRIC: Final = "ml.alert.change.metric"
ML_ALERT_CHANGE_BEFORE: Final = "ml.alert.change.before"
ML_ALERT_CHANGE_AFTER: Final = "ml.alert.change.after"
ML_ALERT_CHANGE_START_LABEL: Final = "ml.alert.change.start_label"
ML_ALERT_CHANGE_LABEL: Final = "ml.alert.change.label"
# gauge of the newest window's estimated performance (CBPE, kind estimated_performance), attrs ml.evaluation.name:
# apart from ml.evaluation.score, so that rules and dashboards never take an estimate for realized performance
ML_EVALUATION_ESTIMATED_SCORE: Final = "ml.evaluation.estimated_score"

# The processor's own telemetry
ML_PROCESSOR_RECORDS: Final = "ml.processor.records"  # counter of records by ml.processor.outcome
ML_PROCESSOR_OUTCOME: Final = "ml.processor.outcome"
ML_PROCESSOR_PENDING: Final = "ml.processor.pending"  # gauge by ml.processor.state: predictions | orphan_labels
ML_PROCESSOR_STATE: Final = "ml.processor.state"
ML_PROCESSOR_STORE_SIZE: Final = "ml.processor.store.size"
ML_PROCESSOR_EXPORT_FAILURES: Final = "ml.processor.export.failures"
