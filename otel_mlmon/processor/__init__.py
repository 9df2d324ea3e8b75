"""The processor service (in progress, issue 5): OTLP in, late-label join, streaming windows, results out.

Working: ``decode`` (OTLP logs and metrics, protobuf or JSON), ``store`` (SQLite WAL: deduplicated predictions,
the late-label join in both orders, TTLs, caps as backpressure; durable when a call returns), ``receiver``
(OTLP/HTTP with the specification's status codes and a decompression cap), ``service`` (row windows evaluated by
the engine when complete and again as labels arrive; ``GET /v1/results``, ``POST /v1/references``, ``/healthz``,
``/readyz``; ``mlmon processor serve``). Streaming equals batch on the same data (tests/processor/test_service.py).
Not written yet: the gRPC receiver, time windows, the OTLP/Alertmanager exports and alert state, ``mlmon replay``,
settings from env/YAML, the processor's own telemetry, the processor benchmark.
"""
