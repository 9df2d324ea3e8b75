"""The processor service: OTLP in, late-label join, streaming windows, results and alerts out.

``decode`` (OTLP logs and metrics, protobuf or JSON), ``store`` (SQLite WAL: deduplicated predictions, the
late-label join in both orders, TTLs, caps as backpressure; durable when a call returns), ``receiver`` (OTLP/HTTP
with the specification's status codes and a decompression cap) and ``grpc_receiver``, ``service`` (row and
event-time windows evaluated by the engine when complete and again as labels arrive; ``GET /v1/results``,
``POST /v1/references``, ``/healthz``, ``/readyz``), ``sequential`` (change detection on each model's label stream
as labels join), ``alerts`` (persisted firing/resolved state), ``export`` (OTLP
gauges, counters and ``ml.alert`` events; Alertmanager; webhook), ``config`` (flags > env > YAML > defaults).
Run it with ``mlmon processor serve`` or ``python -m otel_mlmon.processor``; behind the Collector as in
``collector/otelcol-config.yaml``. Streaming equals batch on the same data (tests/processor/test_service.py).
"""
