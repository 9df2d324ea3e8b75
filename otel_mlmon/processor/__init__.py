"""The processor service (in progress, issue 5): OTLP in, late-label join, streaming windows, results out.

Present so far: ``decode`` (OTLP logs and metrics, protobuf or JSON, into otel-mlmon's records). The receiver,
the store, the streaming windows and the exports are not written yet.
"""
