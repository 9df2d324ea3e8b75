"""Instrumentation overhead, side by side in one run (issue: foundation and instrumentation).

(a) one predict call (1 row x 20 features), otel-mlmon (span + duration + counter + sketches + event) against the
    bare OTel SDK doing span + histogram + counter, with the same providers and exporters: p50 / p99 and ratios;
(b) sketch throughput on 1k, 10k and 100k-row batches x 20 numeric features, values/s;
(c) single-row sketching through the model recorder (1 row x 20 features per call), values/s;
(d) a model that takes 1 ms per call (pure Python; native with the GIL released; asleep), uninstrumented against
    instrumented: throughput loss, with every trace sampled (the SDK default) and with 1 % sampled.

Exporters accept and discard (no network), so the figures are the cost inside the application's process.
Run: ``python benchmarks/bench_instrumentation.py [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind

import otel_mlmon
from otel_mlmon import semconv
from otel_mlmon.instrumentation import _guard, force_flush
from otel_mlmon.instrumentation._api import telemetry_for
from otel_mlmon.instrumentation._inputs import InputBatch
from otel_mlmon.instrumentation._recorder import ModelRecorder
from otel_mlmon.instrumentation._settings import Settings
from otel_mlmon.sketch import NumericSketch, update_columns

FEATURES = 20
ROUND_CALLS = 200  # calls of each side per interleaved round in (d)
TRACE_RATIO = 0.01  # (d) is also run with this fraction of traces sampled, the usual setting at high call rates


class DiscardSpans(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class DiscardMetrics(MetricExporter):
    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


class DiscardLogs(LogRecordExporter):
    def export(self, batch: Any) -> LogRecordExportResult:
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def providers(trace_ratio: float | None = None) -> dict[str, Any]:
    """Providers with discarding exporters; ``trace_ratio``: sample that fraction of traces (the SDK's
    ``parentbased_traceidratio``, what ``OTEL_TRACES_SAMPLER`` sets), else every trace (the SDK default)."""
    sampler = None if trace_ratio is None else ParentBased(TraceIdRatioBased(trace_ratio))
    tracer_provider = TracerProvider(sampler=sampler)
    tracer_provider.add_span_processor(BatchSpanProcessor(DiscardSpans()))
    exporter = DiscardMetrics()
    meter_provider = MeterProvider([PeriodicExportingMetricReader(exporter, export_interval_millis=1000)])
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(DiscardLogs()))
    return {"tracer_provider": tracer_provider, "meter_provider": meter_provider,
            "logger_provider": logger_provider, "sketch_exporter": exporter}


class Model:
    """A classifier whose own work is negligible: what remains is the telemetry."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (X[:, 0] > 0).astype(np.int64)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]


def timed_calls(call: Callable[[], Any], n: int) -> list[float]:
    out = []
    clock = time.perf_counter
    for _ in range(n):
        start = clock()
        call()
        out.append(clock() - start)
    return out


def bare_sdk(kwargs: dict[str, Any], model: Any, name: str, version: str, task: str
             ) -> Callable[[np.ndarray], Any]:
    """``model.predict`` inside what hand-written instrumentation does with the bare SDK and the same providers:
    span + duration histogram + row counter, with the attributes otel-mlmon puts on them."""
    tracer = kwargs["tracer_provider"].get_tracer("bare")
    meter = kwargs["meter_provider"].get_meter("bare")
    histogram = meter.create_histogram("bare.duration", unit="s",
                                       explicit_bucket_boundaries_advisory=list(semconv.ML_OPERATION_DURATION_BUCKETS))
    counter = meter.create_counter("bare.predictions")
    attributes = {semconv.ML_MODEL_NAME: name, semconv.ML_MODEL_VERSION: version, semconv.ML_MODEL_TASK: task,
                  semconv.ML_SYSTEM_NAME: "other", semconv.ML_OPERATION_NAME: "predict"}
    span_name = f"predict {name}"

    def bare(row: np.ndarray) -> Any:
        with tracer.start_as_current_span(span_name, kind=SpanKind.INTERNAL, attributes=attributes) as span:
            start = time.perf_counter()
            result = model.predict(row)
            elapsed = time.perf_counter() - start
            span.set_attribute(semconv.ML_BATCH_SIZE, 1)
        histogram.record(elapsed, attributes)
        counter.add(1, attributes)
        return result

    return bare


def bench_per_call(calls: int) -> dict[str, float]:
    kwargs = providers()
    bare = bare_sdk(kwargs, Model(), "bench", "1", "classification")

    ours_model = otel_mlmon.instrument_model(Model(), name="bench", version="1", task="classification", **kwargs)
    rng = np.random.default_rng(0)
    row = rng.normal(size=(1, FEATURES))
    telemetry = telemetry_for(**kwargs)
    bare_times: list[float] = []
    ours_times: list[float] = []
    bare_cpu = ours_cpu = 0.0  # CPU of the whole process (all threads): what the telemetry really costs
    block = max(calls // 20, 100)
    for _ in range(2):  # warm-up
        timed_calls(lambda: bare(row), block)
        timed_calls(lambda: ours_model.predict(row), block)
        force_flush()
    for _ in range(calls // block):  # interleaved blocks: both see the same machine state
        start = time.process_time()
        bare_times += timed_calls(lambda: bare(row), block)
        bare_cpu += time.process_time() - start
        start = time.process_time()
        ours_times += timed_calls(lambda: ours_model.predict(row), block)
        telemetry.flush_calls()  # what these calls left for the flusher is done before we stop the clock
        ours_cpu += time.process_time() - start
    bare_p50, bare_p99 = percentiles(bare_times)
    ours_p50, ours_p99 = percentiles(ours_times)
    return {"bare_p50_us": bare_p50 * 1e6, "bare_p99_us": bare_p99 * 1e6, "ours_p50_us": ours_p50 * 1e6,
            "ours_p99_us": ours_p99 * 1e6, "ratio_p50": ours_p50 / bare_p50, "ratio_p99": ours_p99 / bare_p99,
            "bare_cpu_us": bare_cpu / len(bare_times) * 1e6, "ours_cpu_us": ours_cpu / len(ours_times) * 1e6,
            "ratio_cpu": (ours_cpu / len(ours_times)) / (bare_cpu / len(bare_times))}


def bench_sketch_throughput(rows: int, repeats: int) -> float:
    block = np.random.default_rng(1).normal(size=(rows, FEATURES))
    sketches = [NumericSketch() for _ in range(FEATURES)]
    update_columns(sketches, block)
    best = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            update_columns(sketches, block)
        best.append((time.perf_counter() - start) / repeats)
    return block.size / statistics.median(best)


def bench_single_rows(calls: int) -> float:
    recorder = ModelRecorder("bench", "", "classification", "other", Settings())
    rows = np.random.default_rng(2).normal(size=(calls, FEATURES))
    names = tuple(f"feature_{j}" for j in range(FEATURES))
    batches = [InputBatch(rows=1, names=names, numeric_names=names, numeric=rows[i: i + 1]) for i in range(calls)]
    start = time.perf_counter()
    for batch in batches:
        recorder.record_inputs(batch)
    recorder.collect()  # the staged rows are sketched here at the latest: count that work too
    elapsed = time.perf_counter() - start
    return calls * FEATURES / elapsed


class BusyModel:
    """1 ms of pure-Python work: the GIL stays held, so every background cycle of ours counts."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        deadline = time.perf_counter() + 0.001
        while time.perf_counter() < deadline:
            pass
        return X[:, 0]


class NativeModel:
    """1 ms of native compute with the GIL released, as XGBoost / LightGBM (ctypes) and torch kernels run:
    numpy ufunc chunks of ~60 us (each releases the GIL) until 1 ms has passed."""

    def __init__(self) -> None:
        self._a = np.random.default_rng(4).normal(size=8192)
        self._b = np.empty_like(self._a)

    def predict(self, X: np.ndarray) -> np.ndarray:
        deadline = time.perf_counter() + 0.001
        while time.perf_counter() < deadline:
            np.sin(self._a, out=self._b)
        return X[:, 0]


class SleepModel:
    """1 ms asleep (``time.sleep``): the CPU idles as it would waiting on a remote model server."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        time.sleep(0.001)
        return X[:, 0]


def bench_one_millisecond_model(model_class: type, calls: int, trace_ratio: float | None = None
                                ) -> dict[str, float]:
    """Calls per second of the bare model, of the model inside the bare SDK's span + histogram + counter (with
    the attributes otel-mlmon puts on them), and of the instrumented model. At the end of each instrumented round
    the caller does what those calls left for the background flusher (durations, buffered events, deferred
    spans), so that work is charged to otel-mlmon's round and not to whichever round the flusher happened to run
    in. ``trace_ratio``: both sample that fraction of traces."""
    kwargs = providers(trace_ratio)
    plain = model_class()
    bare = bare_sdk(kwargs, model_class(), model_class.__name__, "", "regression")

    watched = otel_mlmon.instrument_model(model_class(), name=model_class.__name__, task="regression", **kwargs)
    telemetry = telemetry_for(**kwargs)
    row = np.random.default_rng(3).normal(size=(1, FEATURES))
    for call in (plain.predict, bare, watched.predict):  # warm-up
        for _ in range(50):
            call(row)
    # Short interleaved rounds, each timing the three side by side: the loss is taken per round and the median
    # round reported, so a burst of noise from the rest of the machine moves one round, not the figure.
    rounds = max(calls // ROUND_CALLS, 3)
    times: dict[str, list[float]] = {"plain": [], "bare": [], "instrumented": []}
    for _ in range(rounds):
        for label, call in (("plain", plain.predict), ("bare", bare), ("instrumented", watched.predict)):
            start = time.perf_counter()
            for _ in range(ROUND_CALLS):
                call(row)
            if label == "instrumented":
                telemetry.flush_calls()
            times[label].append(time.perf_counter() - start)
    bare_loss = [100.0 * (1.0 - p / b) for p, b in zip(times["plain"], times["bare"])]
    ours_loss = [100.0 * (1.0 - p / i) for p, i in zip(times["plain"], times["instrumented"])]
    return {f"{label}_calls_per_s": ROUND_CALLS * rounds / sum(seconds) for label, seconds in times.items()} | {
        "bare_loss_pct": statistics.median(bare_loss), "throughput_loss_pct": statistics.median(ours_loss)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (CI smoke run)")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")
    per_call = bench_per_call(20_000 // scale)
    print("(a) one predict call, 1 row x 20 features        bare SDK      otel-mlmon    ratio  (target <= 1.5x)")
    for label in ("p50", "p99"):
        print(f"    {label} (us)                                    {per_call[f'bare_{label}_us']:9.1f}    "
              f"{per_call[f'ours_{label}_us']:9.1f}    {per_call[f'ratio_{label}']:5.2f}x")
    print(f"    CPU per call, all threads (us)              {per_call['bare_cpu_us']:9.1f}    "
          f"{per_call['ours_cpu_us']:9.1f}    {per_call['ratio_cpu']:5.2f}x")
    force_flush()
    print("(b) sketch throughput, 20 numeric features       values/s     (target >= 100M at 10k+ rows)")
    for rows, repeats in ((1_000, 200), (10_000, 40), (100_000, 4)):
        rate = bench_sketch_throughput(rows, max(repeats // scale, 1))
        print(f"    {rows:>7,} rows                               {rate / 1e6:8.1f} M")
    single = bench_single_rows(50_000 // scale)
    print(f"(c) single-row sketching (1 x 20 per call)      {single / 1e6:8.2f} M values/s   (target >= 1M)")
    dropped = {kind: n for kind, n in _guard.counts().items()}
    print(f"    telemetry failures counted during the run: {dropped or 'none'}")
    print("(d) 1 ms model, calls/s        plain   bare SDK  otel-mlmon   loss: bare SDK  otel-mlmon  (target <= 5 %)")
    for trace_ratio in (None, TRACE_RATIO):
        if trace_ratio is not None:
            print(f"    with {trace_ratio:.0%} of traces sampled (OTEL_TRACES_SAMPLER=parentbased_traceidratio, "
                  f"both sides):")
        for model_class in (BusyModel, NativeModel, SleepModel):
            slow = bench_one_millisecond_model(model_class, 3_000 // scale, trace_ratio)
            print(f"    {model_class.__name__:<22} {slow['plain_calls_per_s']:7.0f} {slow['bare_calls_per_s']:9.0f} "
                  f"{slow['instrumented_calls_per_s']:10.0f}   {slow['bare_loss_pct']:13.2f} % "
                  f"{slow['throughput_loss_pct']:9.2f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
