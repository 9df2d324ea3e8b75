"""kill -9 under load: every acknowledged prediction and label counted exactly once, results as without faults,
no alert fired twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_mlmon import semconv
from otel_mlmon.engine.columns import profile_from_columns
from otel_mlmon.engine.windows import WindowSpec
from tests.conftest import eventually, free_port
from tests.otlp_receiver import OtlpReceiver, attributes

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


def _array(values: list) -> AnyValue:
    out = AnyValue()
    key = "double_value" if isinstance(values[0], float) else "string_value"
    out.array_value.values.extend(AnyValue(**{key: v}) for v in values)
    return out


def _body(event: str, columns: dict) -> bytes:
    message = ExportLogsServiceRequest()
    record = message.resource_logs.add().scope_logs.add().log_records.add()
    record.event_name = event
    record.time_unix_nano = time.time_ns()
    base = {semconv.ML_MODEL_NAME: AnyValue(string_value="m"), semconv.ML_MODEL_VERSION: AnyValue(string_value="")}
    record.attributes.extend(KeyValue(key=k, value=v) for k, v in base.items())
    record.attributes.extend(KeyValue(key=k, value=_array(v)) for k, v in columns.items())
    return message.SerializeToString()


def _workload() -> list[bytes]:
    """200-row prediction requests (the last 1600 rows drifted), each followed later by its labels."""
    rng = np.random.default_rng(7)
    bodies = []
    for n in range(16):
        ids = [f"{n}-{i}" for i in range(200)]
        shift = 2.0 if n >= 8 else 0.0
        bodies.append(_body(semconv.EVENT_PREDICTIONS, {
            semconv.ML_PREDICTION_ID: ids,
            semconv.ML_PREDICTION_LABEL: [str(v) for v in rng.integers(0, 2, 200)],
            semconv.ML_FEATURE_PREFIX + "x": [float(v) for v in rng.normal(shift, 1, 200)]}))
        if n >= 2:
            late = [f"{n - 2}-{i}" for i in range(200)]
            bodies.append(_body(semconv.EVENT_LABELS, {semconv.ML_PREDICTION_ID: late,
                                                       semconv.ML_LABEL_VALUE: ["1"] * 200}))
    return bodies


class Processor:
    def __init__(self, tmp_path: Path, profile: Path, otlp: str) -> None:
        self.args = [sys.executable, "-m", "otel_mlmon.cli", "processor", "serve", "--store",
                     str(tmp_path / "state.db"), "--reference", str(profile)]
        self.env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp, "OTEL_BLRP_SCHEDULE_DELAY": "100",
                    "OTEL_PYTHON_MLMON_PROCESSOR_TICK_S": "0.2", "PYTHONPATH": str(ROOT),
                    # the load takes seconds: windows close 1 s behind the newest row, all of them 2 s after it
                    "OTEL_PYTHON_MLMON_PROCESSOR_ALLOWED_LATENESS_S": "1",
                    "OTEL_PYTHON_MLMON_PROCESSOR_IDLE_TIMEOUT_S": "2"}
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([*self.args, "--http-endpoint", f"127.0.0.1:{self.port}", "--grpc-endpoint",
                                         f"127.0.0.1:{free_port()}"], env=self.env, stderr=subprocess.DEVNULL)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def send(self, body: bytes) -> int:
        """POST with retries, as an OTLP client does; the attempts it took."""
        for attempt in range(1, 400):
            request = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/logs", data=body, method="POST",
                                             headers={"Content-Type": "application/x-protobuf"})
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    if answer.status == 200:
                        return attempt
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise AssertionError("the processor never came back")

    def get(self, path: str) -> dict:
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5).read())

    def settled(self, windows: int) -> list[dict]:
        def labeled() -> dict[int, int]:
            rows = self.get("/v1/results?period=analysis&kind=performance")["results"]
            return {r["window"]: r["labeled_rows"] for r in rows}

        eventually(lambda: len(found := labeled()) == windows and sum(found.values()) == 2800, 30,
                   f"{windows} windows with all 2800 labels", interval_s=0.2)
        return self.get("/v1/results?period=analysis")["results"]


def _profile(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    profile, _ = profile_from_columns({"x": rng.normal(0, 1, 2000)}, WindowSpec(chunk_size=800), model="m")
    profile.target_column = "y"
    profile.classes = ["0", "1"]
    path = tmp_path / "profile.json"
    profile.save(path)
    return path


def _run(tmp_path: Path, kills: bool, receiver: OtlpReceiver) -> tuple[list[dict], dict, int]:
    processor = Processor(tmp_path, _profile(tmp_path), receiver.endpoint)
    processor.start()
    retries = 0
    try:
        for n, body in enumerate(_workload()):
            if kills and n % 5 == 4:
                processor.kill()  # mid-stream, and again and again
                processor.start()
            retries += processor.send(body) - 1
        results = processor.settled(windows=4)
        health = processor.get("/healthz")
    finally:
        processor.stop()
    return results, health, retries


def _comparable(results: list[dict]) -> dict:
    return {(r["window"], r["column"], r["kind"], r["metric"]): (r["rows"], r["labeled_rows"], r["value"],
                                                                  r["alert"]) for r in results}


def test_kill_9_under_load_loses_nothing_counts_once_and_refires_no_alert(tmp_path: Path) -> None:
    with OtlpReceiver() as receiver:
        faulty, health, retries = _run(tmp_path / "faulty", True, receiver)
        receiver.wait_for(lambda: len(receiver.logs(semconv.EVENT_ALERT)) > 0, timeout=10)
        fired = [attributes(e) for e in receiver.logs(semconv.EVENT_ALERT)
                 if attributes(e)[semconv.ML_ALERT_STATE] == "firing"]
    with OtlpReceiver() as receiver:
        clean, _, _ = _run(tmp_path / "clean", False, receiver)
    assert retries > 0  # the kills did hit requests in flight
    assert health["predictions"] == 3200 and health["pending_predictions"] == 400
    assert health["labels_joined"] == 2800  # a replayed label request after a kill is a duplicate, not a join
    assert _comparable(faulty) == _comparable(clean)
    keys = [(a[semconv.ML_FEATURE_NAME], a[semconv.ML_ALERT_METRIC]) for a in fired]
    assert len(keys) == len(set(keys))  # no alert fired twice across restarts


def test_a_gzip_bomb_never_inflates(tmp_path: Path) -> None:
    import zlib

    processor = Processor(tmp_path, _profile(tmp_path), "http://127.0.0.1:9")
    processor.start()
    try:
        processor.send(_body(semconv.EVENT_LABELS, {  # up, warm and ready
            semconv.ML_PREDICTION_ID: ["warm"], semconv.ML_LABEL_VALUE: ["1"]}))
        assert processor.process is not None
        status = Path(f"/proc/{processor.process.pid}/status")

        def rss_kib(field: str) -> int:
            return next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith(field))

        before = rss_kib("VmHWM:")
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        bomb = b"".join(compressor.compress(b"\x00" * (1 << 20)) for _ in range(1024)) + compressor.flush()
        assert len(bomb) < 2 * 1024 * 1024  # 1 GiB once inflated
        request = urllib.request.Request(f"http://127.0.0.1:{processor.port}/v1/logs", data=bomb, method="POST",
                                         headers={"Content-Type": "application/x-protobuf",
                                                  "Content-Encoding": "gzip"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 413
        grown_mib = (rss_kib("VmHWM:") - before) / 1024
        assert grown_mib < 50, f"peak RSS grew {grown_mib:.0f} MiB"
        assert processor.get("/healthz")["status"] == "ok"  # and it keeps serving
    finally:
        processor.stop()
