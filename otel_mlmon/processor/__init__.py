"""The processor service (in progress, issue 5): OTLP in, late-label join, streaming windows, results out.

Present so far: ``decode`` (OTLP logs and metrics, protobuf or JSON, into otel-mlmon's records) and ``store``
(SQLite WAL: deduplicated predictions with per-model sequence numbers, the late-label join in both orders, TTLs,
caps as backpressure; a batch is durable when its call returns). Not written yet: the OTLP receivers (HTTP and
gRPC), streaming windows calling the engine, ``GET /v1/results``, the exports and alerts, ``mlmon processor serve``.
"""
