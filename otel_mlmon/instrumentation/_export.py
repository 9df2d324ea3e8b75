"""Export of pre-aggregated sketches as hand-built OTLP metrics (delta temporality).

Feature values can be negative, which an SDK Histogram refuses, and the SDK has no MetricProducer: so otel-mlmon
builds ``MetricsData`` itself and sends it through a metric exporter. The exporter is, in order: the one passed
explicitly (``sketch_exporter=``), else the exporter of the SDK ``MeterProvider``'s periodic reader (what
``opentelemetry-instrument`` configures from ``OTEL_*``), else none (sketching stays off until one appears).

Guarantee: every point (``ml.feature.value``, ``ml.feature.value.m2``, ``ml.feature.missing``,
``ml.feature.category.count``, ``ml.prediction.score``, ``ml.prediction.value``) has ``[start_time_unix_nano,
time_unix_nano)`` inside one interval ``[k·I, (k+1)·I)`` of the Unix clock, ``I`` the sketch export interval; a
closed interval is sent as ``[k·I, (k+1)·I)``, a flushed open one ends at the flush time, and later parts of the
same interval start where the previous part ended (see ``_recorder``). Parts of one series never overlap.

With segments configured every point carries ``ml.segment`` (one point per feature per segment per interval; the
model's whole sketch is their merge) and no point goes without it.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import metrics
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_mlmon import semconv
from otel_mlmon._version import __version__
from otel_mlmon.instrumentation._recorder import SCORE_BOUNDS, ModelRecorder, SketchState
from otel_mlmon.instrumentation._runtime import RUNTIME
from otel_mlmon.sketch import NumericSketch

_DELTA = AggregationTemporality.DELTA
_SCOPE = InstrumentationScope(semconv.INSTRUMENTATION_SCOPE, __version__)


def resolve_exporter(explicit: MetricExporter | None, meter_provider: Any) -> tuple[MetricExporter | None,
                                                                                        Resource]:
    """The exporter sketches go to, and the resource they are sent under."""
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    config = getattr(provider, "_sdk_config", None)
    exporter = explicit
    if exporter is None:
        readers = getattr(provider, "_metric_readers", None) or getattr(config, "metric_readers", None) or ()
        for reader in readers:
            candidate = getattr(reader, "_exporter", None)
            if isinstance(candidate, MetricExporter):
                exporter = candidate
                break
    if exporter is None:
        return None, _EMPTY
    return exporter, getattr(config, "resource", None) or _default_resource()


_EMPTY = Resource.get_empty()
def _default_resource() -> Resource:
    """``Resource.create()`` (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), computed once (kept by the runtime)."""
    found = RUNTIME.resource
    if found is None:
        found = RUNTIME.resource = Resource.create()
    return found


def _numeric_points(sketch: NumericSketch, attributes: dict[str, Any], start: int, end: int
                    ) -> tuple[HistogramDataPoint, NumberDataPoint | None, list[NumberDataPoint]]:
    bounds, counts = sketch.to_explicit()
    point_attributes = {
        **attributes,
        semconv.ML_SKETCH_CENTER: sketch.center,
        semconv.ML_SKETCH_SCALE: sketch.scale,
        semconv.ML_SKETCH_PRECISION: sketch.precision,
    }
    histogram = HistogramDataPoint(
        attributes=point_attributes, start_time_unix_nano=start, time_unix_nano=end, count=sketch.count,
        sum=sketch.sum if sketch.count else 0.0, bucket_counts=counts, explicit_bounds=bounds,
        min=sketch.min if sketch.count else 0.0, max=sketch.max if sketch.count else 0.0, exemplars=[])
    m2 = (NumberDataPoint(attributes=point_attributes, start_time_unix_nano=start, time_unix_nano=end,
                          value=sketch.m2, exemplars=[]) if sketch.count else None)
    missing = [
        NumberDataPoint(attributes={**attributes, semconv.ML_FEATURE_MISSING_REASON: reason},
                        start_time_unix_nano=start, time_unix_nano=end, value=n, exemplars=[])
        for reason, n in ((semconv.MISSING_NULL, sketch.missing), (semconv.MISSING_NON_FINITE, sketch.non_finite),
                          (semconv.MISSING_INVALID, sketch.invalid)) if n
    ]
    return histogram, m2, missing


def build_metrics(collected: list[tuple[ModelRecorder, SketchState, int | None]], resource: Resource, top_k: int
                  ) -> MetricsData | None:
    """One ``MetricsData`` with the feature, score and output sketches of the collected states.

    Each ``(recorder, state, end_ns)`` gives points over ``[state.start_ns, end_ns)`` (``end_ns`` None: now): with
    the recorder's clock-aligned parts, every point lies inside one sketch export interval of the Unix clock.
    """
    now = time.time_ns()
    feature_values: list[HistogramDataPoint] = []
    feature_m2: list[NumberDataPoint] = []
    missing: list[NumberDataPoint] = []
    categories: list[NumberDataPoint] = []
    scores: list[HistogramDataPoint] = []
    outputs: list[HistogramDataPoint] = []
    for recorder, state, end_ns in collected:
        base = recorder.point_attributes
        if state.segment is not None:
            base = {**base, semconv.ML_SEGMENT: state.segment}
        start = state.start_ns
        end = now if end_ns is None else end_ns
        for name, sketch in state.numeric.items():
            attributes = {**base, semconv.ML_FEATURE_NAME: name}
            histogram, m2, bad = _numeric_points(sketch, attributes, start, end)
            if sketch.count:
                feature_values.append(histogram)
            if m2 is not None:
                feature_m2.append(m2)
            missing.extend(bad)
        for name, categories_sketch in state.categorical.items():
            attributes = {**base, semconv.ML_FEATURE_NAME: name}
            for category, n in categories_sketch.top(top_k).items():
                categories.append(NumberDataPoint(
                    attributes={**attributes, semconv.ML_FEATURE_CATEGORY: category},
                    start_time_unix_nano=start, time_unix_nano=end, value=n, exemplars=[]))
            if categories_sketch.missing:
                missing.append(NumberDataPoint(
                    attributes={**attributes, semconv.ML_FEATURE_MISSING_REASON: semconv.MISSING_NULL},
                    start_time_unix_nano=start, time_unix_nano=end, value=categories_sketch.missing, exemplars=[]))
        for label, score_histogram in state.scores.items():
            if score_histogram.count:
                scores.append(HistogramDataPoint(
                    attributes={**base, semconv.ML_PREDICTION_CLASS: label}, start_time_unix_nano=start,
                    time_unix_nano=end, count=score_histogram.count, sum=score_histogram.total,
                    bucket_counts=score_histogram.counts.tolist(), explicit_bounds=SCORE_BOUNDS.tolist(),
                    min=score_histogram.minimum, max=score_histogram.maximum, exemplars=[]))
        if state.values is not None and state.values.count:
            point, _, _ = _numeric_points(state.values, dict(base), start, end)
            outputs.append(point)
    metric_list: list[Metric] = []
    if feature_values:
        metric_list.append(Metric(semconv.ML_FEATURE_VALUE, "Distribution of a numeric input feature "
                                  "(mergeable log-linear sketch)", semconv.ML_VALUE_UNIT,
                                  Histogram(feature_values, _DELTA)))
    if feature_m2:
        metric_list.append(Metric(semconv.ML_FEATURE_VALUE_M2, "Sum of squared deviations from the mean of "
                                  "the same feature values (merges with count and sum)", semconv.ML_VALUE_UNIT,
                                  Gauge(feature_m2)))
    if missing:
        metric_list.append(Metric(semconv.ML_FEATURE_MISSING, "Feature values that were missing, non-finite "
                                  "or not numbers", semconv.ML_COUNT_UNIT, Sum(missing, _DELTA, True)))
    if categories:
        metric_list.append(Metric(semconv.ML_FEATURE_CATEGORY_COUNT, "Counts of the top categories of a "
                                  "categorical feature, the rest under __other__", semconv.ML_COUNT_UNIT,
                                  Sum(categories, _DELTA, True)))
    if scores:
        metric_list.append(Metric(semconv.ML_PREDICTION_SCORE_METRIC, "Predicted class probabilities",
                                  semconv.ML_PREDICTION_SCORE_UNIT, Histogram(scores, _DELTA)))
    if outputs:
        metric_list.append(Metric(semconv.ML_PREDICTION_VALUE_METRIC, "Distribution of regression outputs "
                                  "(mergeable log-linear sketch)", semconv.ML_VALUE_UNIT,
                                  Histogram(outputs, _DELTA)))
    if not metric_list:
        return None
    return MetricsData([ResourceMetrics(resource, [ScopeMetrics(_SCOPE, metric_list, "")], "")])
