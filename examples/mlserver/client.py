"""Send V2 inference requests to the MLServer of this folder, then the true outcomes as labels.

Each request carries an ``id``; otel-mlmon records its rows as ``<id>-<row>`` (``<id>`` for one row), so the
labels sent later under those ids join the predictions in the processor.

Run: python examples/mlserver/client.py http://127.0.0.1:8080 [OTLP_HTTP_ENDPOINT]
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from train import customers


def infer(server: str, request_id: str, frame) -> dict:  # type: ignore[no-untyped-def]
    """``POST /v2/models/churn/infer`` with one input per column (decoded into a DataFrame by MLServer)."""
    body = {"id": request_id, "parameters": {"content_type": "pd"},
            "inputs": [{"name": column, "shape": [len(frame)], "datatype": "FP64",
                        "data": frame[column].tolist()} for column in frame.columns]}
    request = urllib.request.Request(f"{server}/v2/models/churn/infer", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def main() -> None:
    server = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
    frame, churned = customers(50, seed=1)
    ids, truth = [], []
    for k, start in enumerate(range(0, len(frame), 10)):
        part = frame.iloc[start:start + 10]
        answer = infer(server, f"order-{k}", part)
        print(answer["id"], answer["outputs"][0]["data"])
        ids += [f"{answer['id']}-{row}" for row in range(len(part))]
        truth += churned[start:start + 10].tolist()
    if len(sys.argv) > 2:  # the outcomes, later: to the processor (or a Collector) over OTLP/HTTP
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

        import otel_mlmon

        provider = LoggerProvider()
        provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(f"{sys.argv[2]}/v1/logs")))
        otel_mlmon.record_labels("churn", ids=ids, labels=truth, version="v3", logger_provider=provider)
        provider.shutdown()
        print(f"sent {len(ids)} labels")


if __name__ == "__main__":
    main()
