"""Manual instrumentation: one call in code, ids per row, labels reported later.

Run: python examples/manual_instrumentation.py   (prints to the console exporter)
"""

from __future__ import annotations

from opentelemetry import metrics, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import otel_mlmon

# The application's usual OpenTelemetry setup (here: to the console).
trace.set_tracer_provider(TracerProvider())
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))  # type: ignore[attr-defined]
metrics.set_meter_provider(MeterProvider([PeriodicExportingMetricReader(ConsoleMetricExporter())]))
logger_provider = LoggerProvider()
logger_provider.add_log_record_processor(SimpleLogRecordProcessor(ConsoleLogRecordExporter()))
set_logger_provider(logger_provider)

X, y = load_iris(return_X_y=True, as_frame=True)
model = LogisticRegression(max_iter=1000).fit(X, y)
model = otel_mlmon.instrument_model(model, name="iris", version="1")  # the one call

with otel_mlmon.prediction_ids(ids=[f"order-{i}" for i in range(10)]) as p:
    model.predict_proba(X.iloc[:10])
print("ids:", p.ids)

# ... days later, when the truth is known:
otel_mlmon.record_labels("iris", ids=p.ids, labels=y.iloc[:10].tolist(), version="1")
