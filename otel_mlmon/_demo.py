"""``mlmon demo``: a model served with otel-mlmon, and the telemetry it produced, with no server needed.

It trains a scikit-learn classifier on a dataset that ships with scikit-learn, instruments it, serves batches and
single rows (with a mid-stream shift of one feature), reports late labels, and prints what reached the in-memory
OTel exporters: spans, metrics, feature sketches and events.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any, TextIO


def _require_sklearn() -> Any:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise SystemExit("mlmon demo needs scikit-learn: pip install 'otel-mlmon[sklearn]'") from None


def run(out: TextIO = sys.stdout) -> int:
    _require_sklearn()
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier

    import otel_mlmon
    from otel_mlmon import semconv
    from otel_mlmon.instrumentation import force_flush
    from otel_mlmon.sketch import NumericSketch

    from ._demo_sink import MemoryMetricExporter

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider([reader], shutdown_on_exit=False)
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    sketches = MemoryMetricExporter()

    data = load_breast_cancer(as_frame=True)
    frame, target = data.frame.drop(columns="target"), data.frame["target"]
    train, serve = frame.iloc[:300], frame.iloc[300:].copy()
    model = HistGradientBoostingClassifier(max_iter=50, random_state=0).fit(train, target.iloc[:300])
    otel_mlmon.instrument_model(model, name="cancer", version="1", tracer_provider=tracer_provider,
                                meter_provider=meter_provider, logger_provider=logger_provider,
                                sketch_exporter=sketches)
    print("otel-mlmon demo: a HistGradientBoostingClassifier on scikit-learn's breast-cancer data", file=out)
    print(f"  trained on 300 rows; serving {len(serve)} rows (a batch of 200, then single rows with "
          "'mean radius' shifted by +5)", file=out)

    with otel_mlmon.prediction_ids() as batch_ids:
        model.predict_proba(serve.iloc[:200])
    shifted = serve.iloc[200:].copy()
    shifted["mean radius"] += 5.0
    single_ids = []
    for i in range(len(shifted)):
        with otel_mlmon.prediction_ids() as one:
            model.predict(shifted.iloc[[i]])
        single_ids += one.ids
    # Ground truth arrives later, for most rows only.
    labelled = batch_ids.ids[:150]
    otel_mlmon.record_labels("cancer", ids=labelled, labels=target.iloc[300:450].tolist(), version="1",
                             logger_provider=logger_provider)
    force_flush()

    finished: Any = spans.get_finished_spans()
    print(f"\nspans: {len(finished)}", file=out)
    for name, n in Counter(s.name for s in finished).most_common():
        print(f"  {n:4d} x {name!r}", file=out)
    first = finished[0]
    print(f"  attributes of the first: {dict(first.attributes)}", file=out)

    print("\nmetrics (SDK):", file=out)
    data_points: Any = reader.get_metrics_data()
    for rm in data_points.resource_metrics if data_points else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    operation = point.attributes.get(semconv.ML_OPERATION_NAME)
                    if hasattr(point, "bucket_counts"):
                        print(f"  {metric.name} [{metric.unit}] {operation}: count={point.count} "
                              f"sum={point.sum:.4f}s max={point.max * 1000:.2f}ms", file=out)
                    else:
                        print(f"  {metric.name} [{metric.unit}] {operation}: {point.value}", file=out)

    print("\nfeature sketches (pre-aggregated, mergeable; 4 of 30 shown):", file=out)
    for point in sketches.points(semconv.ML_FEATURE_VALUE)[:4]:
        sketch = NumericSketch.from_explicit(point.explicit_bounds, point.bucket_counts, count=point.count,
                                             total=point.sum, minimum=point.min, maximum=point.max)
        print(f"  {point.attributes[semconv.ML_FEATURE_NAME]!r:26} n={sketch.count:3d} min={sketch.min:9.3f} "
              f"max={sketch.max:9.3f} mean={sketch.mean:9.3f} buckets={len(sketch.buckets()[0])}", file=out)
    radius = [p for p in sketches.points(semconv.ML_FEATURE_VALUE)
              if p.attributes[semconv.ML_FEATURE_NAME] == "mean radius"]
    if radius:
        print(f"  'mean radius' over all served rows: mean {radius[0].sum / radius[0].count:.2f} "
              f"(train mean {train['mean radius'].mean():.2f}; the shift is what drift detection will see)",
              file=out)
    for point in sketches.points(semconv.ML_PREDICTION_SCORE_METRIC):
        print(f"  {semconv.ML_PREDICTION_SCORE_METRIC} class {point.attributes[semconv.ML_PREDICTION_CLASS]}: "
              f"{point.count} scores, buckets {list(point.bucket_counts)}", file=out)

    records: list[Any] = [r.log_record for r in logs.get_finished_logs()]
    print("\nevents:", file=out)
    for name in (semconv.EVENT_PREDICTIONS, semconv.EVENT_LABELS):
        chosen = [r for r in records if r.event_name == name]
        rows = sum(len(r.attributes[semconv.ML_PREDICTION_ID]) for r in chosen)
        print(f"  {name}: {len(chosen)} event(s), {rows} rows", file=out)
        if chosen:
            sample = {k: ([*v[:2], "..."] if isinstance(v, tuple) and len(v) > 2 else v)
                      for k, v in chosen[0].attributes.items()}
            print(f"    first: {sample}", file=out)
    print(f"\nprediction ids: {len(batch_ids.ids) + len(single_ids)} (UUID4 hex), labels joined later for "
          f"{len(labelled)} of them", file=out)
    # The engine on the same data: the served rows against the training rows, two windows.
    from otel_mlmon.engine.columns import profile_from_columns, window_from_columns
    from otel_mlmon.engine.evaluate import evaluate_window
    from otel_mlmon.engine.windows import WindowSpec

    profile, _ = profile_from_columns({c: train[c].to_numpy() for c in train.columns}, WindowSpec(chunks=3),
                                      model="cancer", version="1")
    print("\ndrift of the served rows against the training rows (mlmon's engine, default thresholds):", file=out)
    for index, (label, rows) in enumerate((("batch of 200", serve.iloc[:200]), ("single rows", shifted))):
        results = evaluate_window(profile, window_from_columns(profile, {c: rows[c].to_numpy() for c in rows.columns},
                                                               index))
        alerted = sorted({r.column for r in results if r.kind == "drift" and r.alert})
        print(f"  window {index} ({label}, {len(rows)} rows): drift alerts on {alerted or 'no column'}", file=out)
    print("\nNext: the same engine over files with `mlmon evaluate`; the streaming processor follows.", file=out)
    return 0
