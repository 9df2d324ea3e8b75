"""Zero-code label joins: a model service that knows nothing of otel-mlmon, whose prediction ids are the callers'
own row ids, taken from an input column.

Run it under ``opentelemetry-instrument`` and name the id column:

    OTEL_PYTHON_MLMON_ID_COLUMN=order_id OTEL_SERVICE_NAME=fraud-model \\
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \\
        opentelemetry-instrument python examples/zero_code_ids.py --port 8080

    POST /predict  {"rows": [{"order_id": "o-1", "mean radius": 14.1, ...}, ...]}
              ->   {"ids": ["o-1", ...], "predictions": [0, ...]}

Each row's ``order_id`` becomes its ``ml.prediction.id`` on the ``ml.predictions`` events, so the labels that
arrive later for order ``o-1`` (``record_labels`` or ``mlmon replay --labels``) join it. The model is given the
whole frame, id column included, and ignores that column itself: its pipeline starts with a ColumnTransformer that
selects its features by name (``remainder="drop"``). otel-mlmon never changes what the model receives; it only
leaves the id column out of the feature sketches and captured features. (A bare estimator fitted without the
column would refuse a frame that has it.)
"""

from __future__ import annotations

import argparse
import json
import signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = ["mean radius", "mean texture", "mean smoothness", "worst concavity"]
ID_COLUMN = "order_id"


def train() -> Any:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    select = ColumnTransformer([("features", StandardScaler(), FEATURES)], remainder="drop")
    model = make_pipeline(select, LogisticRegression(max_iter=1000)).fit(X[FEATURES], y)
    model.otel_mlmon_name, model.otel_mlmon_version = "fraud", "1"  # else the class name is the model name
    return model


def serve(model: Any, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                frame = pd.DataFrame(body["rows"])
                ids = [str(i) for i in frame[ID_COLUMN]]
            except (ValueError, KeyError, TypeError) as exc:
                self._answer(400, {"error": f"bad request: {exc!r}; send {{'rows': [{{'{ID_COLUMN}': ..., ...}}]}}"})
                return
            try:
                predictions = model.predict(frame)  # the id column goes in too: the pipeline drops it
            except Exception as exc:  # the model's own error: the caller gets it, the span records it
                self._answer(422, {"error": f"{type(exc).__name__}: {exc}"})
                return
            self._answer(200, {"ids": ids, "predictions": predictions.tolist()})

        def _answer(self, status: int, document: Any) -> None:
            payload = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0: any free port (printed)")
    args = parser.parse_args()
    server = serve(train(), args.host, args.port)
    signal.signal(signal.SIGTERM, _interrupt)  # a stop flushes the telemetry (at exit)
    print(f"serving on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
