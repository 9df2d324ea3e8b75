"""Shared fixtures: SDK providers with in-memory exporters, and an in-memory sketch exporter; a free port and a
poller for the integration tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_mlmon.demo.ports import free_port as free_port  # one allocator for every test: ports never repeat

T = TypeVar("T")


class MemoryMetricExporter(MetricExporter):
    """Keeps every MetricsData it is given (the sketches the instrumentation exports)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass

    def points(self, name: str) -> list[Any]:
        return [point for batch in self.batches for rm in batch.resource_metrics for sm in rm.scope_metrics
                for metric in sm.metrics if metric.name == name for point in metric.data.data_points]


def eventually(check: Callable[[], T], timeout_s: float = 90.0, what: str = "", interval_s: float = 0.5) -> T:
    """The first truthy answer of ``check`` within the timeout; OSError, ValueError, KeyError and IndexError
    mean "not yet" (a server not up, a series not scraped), any other exception ends the wait at once."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, ValueError, KeyError, IndexError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval_s)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what} (last: {last!r})")


# Applications the tests run as subprocesses: never imported by pytest (--doctest-modules would run them).
collect_ignore = ["instrumentation/apps"]


class MemorySketchExporter(MemoryMetricExporter):
    """Keeps every MetricsData it is given; can be told to fail, raise or hang."""

    def __init__(self) -> None:
        super().__init__()
        self.mode = "ok"  # ok | fail | raise | hang
        self.release = threading.Event()

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        if self.mode == "raise":
            raise ConnectionError("collector unreachable")
        if self.mode == "hang":
            self.release.wait(timeout_millis / 1000)
            return MetricExportResult.FAILURE
        if self.mode == "fail":
            return MetricExportResult.FAILURE
        return super().export(metrics_data, timeout_millis)


@dataclass
class Providers:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    logs: InMemoryLogRecordExporter
    sketches: MemorySketchExporter

    def kwargs(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider,
                "logger_provider": self.logger_provider, "sketch_exporter": self.sketches}

    def finished_spans(self) -> tuple[Any, ...]:
        """Flush first: spans are built by the flusher in deferred span mode."""
        from otel_mlmon.instrumentation import force_flush

        force_flush()
        return self.spans.get_finished_spans()

    def events(self, name: str) -> list[Any]:
        from otel_mlmon.instrumentation import force_flush

        force_flush()
        return [r.log_record for r in self.logs.get_finished_logs() if r.log_record.event_name == name]

    def metric_points(self, name: str) -> list[Any]:
        from otel_mlmon.instrumentation import force_flush

        force_flush()
        data = self.metrics.get_metrics_data()
        if data is None:
            return []
        return [point for rm in data.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics
                if metric.name == name for point in metric.data.data_points]


def column(events: Sequence[Any], key: str) -> list[Any]:
    """One attribute of a list of events, concatenated in order."""
    return [value for event in events for value in event.attributes[key]]


@pytest.fixture
def providers() -> Iterator[Providers]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider([reader], shutdown_on_exit=False)
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    made = Providers(tracer_provider, meter_provider, logger_provider, spans, reader, logs, MemorySketchExporter())
    yield made
    retire_telemetries(tracer_provider, logger_provider)


def retire_telemetries(*providers: Any) -> None:
    """Close and forget every telemetry made with any of these providers: no exit-time flush into a test's
    deliberately broken exporter, no flusher ticks for them after the test."""
    from otel_mlmon.instrumentation import _api

    for key in [k for k in _api._telemetries if any(p in k for p in providers)]:
        telemetry = _api._telemetries.pop(key)
        telemetry.sketch_exporter = None
        telemetry.meter_provider = None
        telemetry.close()


@pytest.fixture(autouse=True)
def _fresh_guard() -> Iterator[None]:
    from otel_mlmon.instrumentation import _guard

    _guard.reset()
    yield


def assert_equals_evaluate(streamed: list[dict[str, Any]], expected_csv: Any) -> Any:
    """The processor's analysis results equal `mlmon evaluate`'s CSV row for row: the same windows, columns, kinds
    and metrics, rows, labeled rows and window bounds, values to 1e-9, verdicts; the merged frame."""
    import numpy as np
    import pandas as pd

    batch = pd.read_csv(expected_csv, keep_default_na=False)
    batch = batch[batch.period == "analysis"]
    key = ["window", "column", "kind", "metric"]
    merged = batch.merge(pd.DataFrame(streamed), on=key, suffixes=("_batch", "_stream"), how="outer",
                         indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"][[*key, "_merge"]]
    for column in ("rows", "labeled_rows", "window_start", "window_end"):
        assert (merged[f"{column}_batch"].astype(str) == merged[f"{column}_stream"].astype(str)).all(), column
    np.testing.assert_allclose(merged["value_batch"].astype(float), merged["value_stream"].astype(float),
                               rtol=1e-9, atol=1e-12)
    assert (merged["alert_batch"].astype(str).str.lower()  # an empty verdict: "" in the CSV, None in the API
            == merged["alert_stream"].fillna("").astype(str).str.lower()).all()
    return merged
