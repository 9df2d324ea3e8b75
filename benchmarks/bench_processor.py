"""Processor throughput, memory and alert latency (issue: the processor service).

A processor (`mlmon processor serve`, its own process) is fed by a load generator in this process: pre-encoded
OTLP/HTTP requests of `ml.predictions` events as a default binary classifier sends them (ids, labels, scores;
features travel as sketches, not in events), 4096 rows each, sent back to back over one keep-alive connection
for `--seconds`. Reported: acknowledged rows per second, rows the store holds afterwards (loss), the
processor's peak RSS, and the time from the request that completes a drifted window to its `ml.alert` event
arriving at an OTLP receiver (the processor's OTLP export target).

Run: ``python benchmarks/bench_processor.py [--seconds 20]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from otel_mlmon import semconv
from otel_mlmon._stack import free_port
from otel_mlmon.engine.columns import profile_from_columns
from otel_mlmon.engine.windows import WindowSpec
from tests.otlp_receiver import OtlpReceiver

ROWS = 4096
WINDOW = 40_960  # ten requests a window, a multiple of ROWS


def _array(values) -> AnyValue:
    out = AnyValue()
    kind = "double_value" if isinstance(values[0], float) else "string_value"
    out.array_value.values.extend(AnyValue(**{kind: v}) for v in values)
    return out


def request(first: int, shift: float, rng: np.random.Generator) -> bytes:
    message = ExportLogsServiceRequest()
    record = message.resource_logs.add().scope_logs.add().log_records.add()
    record.event_name = semconv.EVENT_PREDICTIONS
    record.time_unix_nano = time.time_ns()
    attributes = {semconv.ML_MODEL_NAME: AnyValue(string_value="bench"),
                  semconv.ML_MODEL_VERSION: AnyValue(string_value=""),
                  semconv.ML_PREDICTION_ID: _array([f"p{first + i}" for i in range(ROWS)]),
                  semconv.ML_PREDICTION_LABEL: _array([str(v) for v in rng.integers(0, 2, ROWS)]),
                  semconv.ML_PREDICTION_SCORE: _array([float(v) for v in rng.beta(2 + 4 * shift, 2, ROWS)])}
    record.attributes.extend(KeyValue(key=k, value=v) for k, v in attributes.items())
    return message.SerializeToString()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder, OtlpReceiver() as receiver:
        reference = {"score": rng.beta(2, 2, 50_000),
                     "prediction": rng.integers(0, 2, 50_000).astype(str).astype(object)}
        profile, _ = profile_from_columns(reference, WindowSpec(chunk_size=WINDOW), model="bench")
        profile.columns["score"].role = "score"
        profile.columns["prediction"].role = "prediction"
        profile.classes, profile.score_columns, profile.prediction_column = ["0", "1"], {"1": "score"}, "prediction"
        path = os.path.join(folder, "profile.json")
        profile.save(path)
        port = free_port()
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BLRP_SCHEDULE_DELAY": "200",
               "OTEL_METRIC_EXPORT_INTERVAL": "1000"}
        server = subprocess.Popen([sys.executable, "-m", "otel_mlmon.cli", "processor", "serve", "--http-endpoint",
                                   f"127.0.0.1:{port}", "--grpc-endpoint", f"127.0.0.1:{free_port()}", "--store",
                                   os.path.join(folder, "state.db"), "--reference", path], env=env,
                                  stderr=subprocess.DEVNULL)
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for _ in range(100):
                try:
                    connection.request("GET", "/healthz")
                    connection.getresponse().read()
                    break
                except OSError:
                    time.sleep(0.1)
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            # Pre-encoded, every id new: the clock measures the processor, not the generator.
            bodies = [request(i * ROWS, 0.0, rng) for i in range(int(args.seconds * 100_000 / ROWS) + 10)]
            sent = acked = 0
            start = time.perf_counter()
            while time.perf_counter() - start < args.seconds and sent < len(bodies):
                connection.request("POST", "/v1/logs", bodies[sent], {"Content-Type": "application/x-protobuf"})
                answer = connection.getresponse()
                answer.read()
                sent += 1
                acked += ROWS if answer.status == 200 else 0
            elapsed = time.perf_counter() - start
            connection.request("GET", "/healthz")
            health = json.loads(connection.getresponse().read())
            # Alert latency: close the current window, then send one whole drifted window and time its alert.
            filled = health["predictions"] % WINDOW
            closing = [request(10**9 + i * ROWS, 0.0, rng) for i in range(-(-(WINDOW - filled) // ROWS))]
            shifted = [request(2 * 10**9 + i * ROWS, 1.5, rng) for i in range(WINDOW // ROWS)]
            for body in closing:
                connection.request("POST", "/v1/logs", body, {"Content-Type": "application/x-protobuf"})
                connection.getresponse().read()
            time.sleep(5)  # let the backlog of windows be evaluated first
            before = len(receiver.logs(semconv.EVENT_ALERT))
            for body in shifted:
                connection.request("POST", "/v1/logs", body, {"Content-Type": "application/x-protobuf"})
                connection.getresponse().read()
            window_end = time.perf_counter()
            receiver.wait_for(lambda: len(receiver.logs(semconv.EVENT_ALERT)) > before, timeout=30)
            latency = time.perf_counter() - window_end
            peak = next(int(line.split()[1]) for line in Path(f"/proc/{server.pid}/status").read_text().splitlines()
                        if line.startswith("VmHWM"))
        finally:
            server.terminate()
            server.wait(30)
    print(f"acknowledged {acked:,} prediction rows in {elapsed:.1f} s: {acked / elapsed:,.0f} rows/s "
          "(target >= 50,000)")
    print(f"stored {health['predictions']:,} rows, duplicates {health.get('duplicate_predictions', 0)}: "
          f"loss {acked - health['predictions']:,}")
    print(f"processor peak RSS {peak / 1024:.0f} MiB (target <= 300 MiB)")
    print(f"window end to ml.alert leaving over OTLP: {latency:.2f} s (target <= 5 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
