"""A model service, instrumented with no code change: the demo stack's model (docker-compose.yml, `mlmon demo
--stack`).

Run it under ``opentelemetry-instrument`` and the scikit-learn instrumentor of otel-mlmon wraps the model:

    OTEL_SERVICE_NAME=churn-model OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \\
    OTEL_PYTHON_MLMON_CAPTURE_FEATURES=true \\
        opentelemetry-instrument python examples/model_service.py --model model.pkl --port 8080

The only otel-mlmon call here is ``prediction_ids``: the caller's row ids become the prediction ids, so that the
labels (sent later by whoever learns the truth, with ``record_labels`` or ``mlmon replay``) join them.

    POST /predict  {"ids": ["a", "b"], "columns": {"tenure": [1.5, 20.0], "plan": ["basic", "plus"], ...}}
              ->   {"ids": [...], "predictions": [0, 1], "scores": [[0.9, 0.1], [0.3, 0.7]]}
    GET  /health   -> 200
"""

from __future__ import annotations

import argparse
import json
import pickle
import signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pandas as pd

import otel_mlmon


def serve(model: Any, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer(200, {"status": "ok"} if self.path == "/health" else {"error": "not found"})

        def do_POST(self) -> None:
            if self.path != "/predict":
                self._answer(404, {"error": "not found"})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                frame = pd.DataFrame(body["columns"])
                ids = [str(i) for i in body["ids"]]
                if len(ids) != len(frame):
                    raise ValueError(f"{len(ids)} ids for {len(frame)} rows")
            except (ValueError, KeyError, TypeError) as exc:
                self._answer(400, {"error": f"bad request: {exc}"})
                return
            try:
                with otel_mlmon.prediction_ids(ids=ids):
                    scores = model.predict_proba(frame)
            except Exception as exc:  # the model's own error: the caller gets it, the span records it
                self._answer(422, {"error": f"{type(exc).__name__}: {exc}"})
                return
            labels = model.classes_[scores.argmax(axis=1)]
            self._answer(200, {"ids": ids, "predictions": labels.tolist(), "scores": scores.tolist()})

        def _answer(self, status: int, document: Any) -> None:
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would drown the demo's output

    return ThreadingHTTPServer((host, port), Handler)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a pickled scikit-learn model (trusted input)")
    parser.add_argument("--name", default="churn", help="model name on the telemetry")
    parser.add_argument("--version", default="1", help="model version on the telemetry")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    with open(args.model, "rb") as handle:
        model = pickle.load(handle)
    model.otel_mlmon_name, model.otel_mlmon_version = args.name, args.version
    server = serve(model, args.host, args.port)
    signal.signal(signal.SIGTERM, _interrupt)  # a stop (docker stop, the native stack) flushes the telemetry
    print(f"model {args.name} {args.version} serving on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()  # opentelemetry-instrument's providers flush at exit


if __name__ == "__main__":
    main()
