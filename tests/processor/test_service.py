"""The processor on loopback, fed by the real OTel SDK's OTLP/HTTP exporters: streaming equals batch."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider

import otel_mlmon
from otel_mlmon import cli
from otel_mlmon.instrumentation import force_flush
from otel_mlmon.instrumentation._api import telemetry_for
from otel_mlmon.processor.server import serve
from otel_mlmon.processor.service import Processor
from otel_mlmon.processor.store import Store
from tests.conftest import assert_equals_evaluate, eventually, free_port

pytestmark = pytest.mark.integration
FEATURES = ["age", "income", "plan"]


@pytest.fixture
def server(tmp_path: Path):
    from otel_mlmon.processor import grpc_receiver

    # Windows close 1 s after the stream goes quiet (the test sends everything within a second or two).
    processor = Processor(Store(str(tmp_path / "processor.db")), allowed_lateness_s=0.5, idle_timeout_s=1.0)
    grpc_server, grpc_port = grpc_receiver.start(processor, "127.0.0.1:0")
    processor.grpc_endpoint = f"127.0.0.1:{grpc_port}"  # type: ignore[attr-defined]
    port = free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(processor, "127.0.0.1", port, 0.1, stop),),
                              daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    eventually(lambda: urllib.request.urlopen(f"{url}/healthz", timeout=1).read(), 10, "the processor's /healthz",
               interval_s=0.05)
    yield processor, url
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    grpc_server.stop(grace=None)


def _frame(n: int, seed: int, shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"age": rng.normal(40 + 10 * shift, 10, n), "income": rng.lognormal(10, 0.5, n),
                          "plan": rng.choice(["basic", "gold", "platinum"], n, p=[0.6, 0.3, 0.1])})
    frame.loc[rng.random(n) < 0.03, "income"] = np.nan
    score = 1 / (1 + np.exp(-(frame["age"] - 40) / 10))
    frame["score"] = score
    frame["prediction"] = (score > 0.5).astype(int)
    frame["target"] = (rng.random(n) < score).astype(int)
    frame["id"] = [f"{seed}-{i}" for i in range(n)]
    return frame


def _post(url: str, body: bytes, content_type: str, encoding: str | None = None) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    if encoding:
        request.add_header("Content-Encoding", encoding)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def _results(url: str, **query: str) -> list[dict]:
    text = urllib.request.urlopen(f"{url}/v1/results?{'&'.join(f'{k}={v}' for k, v in query.items())}",
                                  timeout=10).read()
    return json.loads(text)["results"]


def _window_results(rows: list[dict]) -> list[dict]:
    """The rows a batch evaluation has too: not the stream's performance_change rows (label arrival order)."""
    return [r for r in rows if r["kind"] != "performance_change"]


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_streaming_equals_batch(server, tmp_path: Path, monkeypatch, protocol) -> None:
    processor, url = server
    reference, analysis = _frame(2000, 0, 0.0), pd.concat([_frame(800, 1, 0.0), _frame(800, 2, 1.0)],
                                                           ignore_index=True)
    analysis["id"] = [f"a-{i}" for i in range(len(analysis))]
    reference.to_parquet(tmp_path / "reference.parquet")
    analysis.drop(columns="target").to_parquet(tmp_path / "analysis.parquet")
    labels = analysis[["id", "target"]].sample(frac=0.7, random_state=1)  # late, shuffled, partial
    labels.to_csv(tmp_path / "labels.csv", index=False)
    flags = ["--id-column", "id", "--target-column", "target", "--prediction-column", "prediction",
             "--score-column", "score", "--chunk-size", "400"]
    profile = tmp_path / "profile.json"
    assert cli.main(["reference", "build", "--data", str(tmp_path / "reference.parquet"), "--model", "churn",
                     "--version", "3", *flags, "--output", str(profile)]) == 0
    status, body, _ = _post(f"{url}/v1/references", profile.read_bytes(), "application/json")
    assert status == 200 and json.loads(body)["window_rows"] == 400

    # The application: a model whose scores are the dataset's, served through the public API.
    monkeypatch.setenv("OTEL_PYTHON_MLMON_CAPTURE_FEATURES", "true")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics

        logs_exporter: Any = GrpcLogs(endpoint=processor.grpc_endpoint, insecure=True)
        metrics_exporter: Any = GrpcMetrics(endpoint=processor.grpc_endpoint, insecure=True)
    else:
        logs_exporter, metrics_exporter = OTLPLogExporter(endpoint=f"{url}/v1/logs"), OTLPMetricExporter(
            endpoint=f"{url}/v1/metrics")
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(logs_exporter))
    meter_provider = MeterProvider([PeriodicExportingMetricReader(metrics_exporter)], shutdown_on_exit=False)

    class Replay:
        classes_ = np.array([0, 1])

        def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
            scores = analysis.loc[X.index, "score"].to_numpy()
            return np.column_stack([1 - scores, scores])

    tracer_provider = TracerProvider()
    model = otel_mlmon.instrument_model(Replay(), name="churn", version="3", task="classification",
                                        tracer_provider=tracer_provider, meter_provider=meter_provider,
                                        logger_provider=logger_provider)
    for start in range(0, len(analysis), 100):
        rows = analysis.iloc[start: start + 100]
        with otel_mlmon.prediction_ids(ids=rows["id"].tolist()):
            model.predict_proba(rows[FEATURES])
    force_flush()
    assert logger_provider.force_flush()
    for start in range(0, len(labels), 250):  # labels arrive later, in another order
        part = labels.iloc[start: start + 250]
        otel_mlmon.record_labels("churn", ids=part["id"].tolist(), labels=part["target"].tolist(), version="3",
                                 logger_provider=logger_provider)
    assert logger_provider.force_flush()
    # Retire this application before the server fixture stops: no exit-time flush, no exporter retrying against
    # a closed port after the tests.
    telemetry_for(tracer_provider, meter_provider, logger_provider).close()
    for provider in (logger_provider, meter_provider, tracer_provider):
        provider.shutdown()

    expected = tmp_path / "batch.csv"
    assert cli.main(["evaluate", "--reference", str(profile), "--analysis", str(tmp_path / "analysis.parquet"),
                     "--labels", str(tmp_path / "labels.csv"), "--output", str(expected)]) == 0
    batch = pd.read_csv(expected, keep_default_na=False)
    batch = batch[batch.period == "analysis"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        streamed = pd.DataFrame(_window_results(_results(url, model="churn", period="analysis")))
        if len(streamed) == len(batch) and (streamed.groupby("window")["labeled_rows"].first().sum()
                                            == len(labels)):
            break
        time.sleep(0.2)
    key = ["window", "column", "kind", "metric"]
    merged = batch.merge(streamed, on=key, suffixes=("_batch", "_stream"))
    assert len(merged) == len(batch) == len(streamed)
    assert (merged["rows_batch"] == merged["rows_stream"]).all()
    assert (merged["labeled_rows_batch"] == merged["labeled_rows_stream"]).all()
    np.testing.assert_allclose(merged["value_batch"].astype(float), merged["value_stream"].astype(float),
                               rtol=1e-9, atol=1e-12)
    assert (merged["alert_batch"].astype(str).str.lower()  # an empty verdict: "" in the CSV, None in the API
            == merged["alert_stream"].fillna("").astype(str).str.lower()).all()
    drifted = set(merged[merged.alert_stream.astype(str) == "True"]["column"])
    assert "age" in drifted and "plan" not in drifted
    reference_rows = _results(url, model="churn", period="reference")
    assert reference_rows and {r["period"] for r in reference_rows} == {"reference"}


def test_status_codes_per_the_otlp_specification(server) -> None:
    _, url = server
    assert _post(f"{url}/v1/logs", b"{}", "text/plain")[0] == 415
    assert _post(f"{url}/v1/logs", b"{}", "application/json", "br")[0] == 415
    status, body, _ = _post(f"{url}/v1/logs", b"\xff\xff\xff", "application/x-protobuf")
    from google.rpc import status_pb2

    assert status == 400 and status_pb2.Status.FromString(body).code == 3
    status, body, _ = _post(f"{url}/v1/logs", b"{oops", "application/json")
    assert status == 400 and json.loads(body)["code"] == 3
    bomb = gzip.compress(b"\x00" * (64 * 1024 * 1024))  # 64 KiB on the wire, 64 MiB inflated
    assert len(bomb) < 100_000
    assert _post(f"{url}/v1/logs", bomb, "application/x-protobuf", "gzip")[0] == 413
    assert _post(f"{url}/v1/traces", b"", "application/x-protobuf")[0] == 200
    import zlib

    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    valid = ExportLogsServiceRequest().SerializeToString() + b""
    assert _post(f"{url}/v1/logs", gzip.compress(valid), "application/x-protobuf", "gzip")[0] == 200
    assert _post(f"{url}/v1/logs", zlib.compress(valid), "application/x-protobuf", "deflate")[0] == 200
    assert _post(f"{url}/v1/logs", gzip.compress(valid)[:-4], "application/x-protobuf", "gzip")[0] == 400
    status, body, _ = _post(f"{url}/v1/logs", json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"eventName": "ml.predictions", "attributes": [{"key": "ml.model.name", "value": {"stringValue": "m"}}]},
    ]}]}]}).encode(), "application/json")
    assert status == 200 and json.loads(body)["partialSuccess"]["rejectedLogRecords"] == "1"
    assert _post(f"{url}/v1/references", b"{}", "application/json")[0] == 400
    health = json.loads(urllib.request.urlopen(f"{url}/healthz", timeout=5).read())
    assert health["status"] == "ok"


def _wait_healthy(port: int, seconds: float = 20.0) -> dict | None:
    """``/healthz`` of a processor started as a subprocess, once it answers (None: not within ``seconds``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read())
        except OSError:
            time.sleep(0.1)
    return None


def test_mlmon_processor_serve_starts_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    _frame(600, 0, 0.0).to_parquet(tmp_path / "reference.parquet")
    profile = tmp_path / "profile.json"
    assert cli.main(["reference", "build", "--data", str(tmp_path / "reference.parquet"), "--model", "m",
                     "--prediction-column", "prediction", "--chunk-size", "200", "--output", str(profile)]) == 0
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "otel_mlmon.cli", "processor", "serve", "--http-endpoint",
                                f"127.0.0.1:{port}", "--grpc-endpoint", f"127.0.0.1:{free_port()}", "--store",
                                str(tmp_path / "p.db"), "--reference", str(profile)], stderr=subprocess.PIPE, text=True)
    try:
        health = _wait_healthy(port)
        assert health is not None and health["models"] == 1
        assert {r["period"] for r in _results(f"http://127.0.0.1:{port}", model="m")} == {"reference"}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    bad = subprocess.run([sys.executable, "-m", "otel_mlmon.processor", "--http-endpoint", "nowhere",
                          "--store", str(tmp_path / "q.db")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "is not HOST:PORT" in bad.stderr


def test_a_second_processor_on_a_port_in_use_refuses_to_start(tmp_path: Path) -> None:
    """gRPC sets SO_REUSEPORT by default: a second processor on the same gRPC port used to start, and the kernel
    split the Collector's connections between the two stores. Now either port in use stops the start (exit 2, the
    setting named), before anything says it is serving."""
    import signal
    import subprocess
    import sys

    http, grpc_port = free_port(), free_port()
    first = subprocess.Popen([sys.executable, "-m", "otel_mlmon.cli", "processor", "serve", "--http-endpoint",
                              f"127.0.0.1:{http}", "--grpc-endpoint", f"127.0.0.1:{grpc_port}", "--store",
                              str(tmp_path / "a.db")], stderr=subprocess.PIPE, text=True)
    try:
        health = _wait_healthy(http)
        assert health is not None
        for taken, flag in ((f"--grpc-endpoint=127.0.0.1:{grpc_port}", "--grpc-endpoint"),
                            (f"--http-endpoint=127.0.0.1:{http}", "--http-endpoint")):
            other = f"--http-endpoint=127.0.0.1:{free_port()}" if flag == "--grpc-endpoint" else \
                f"--grpc-endpoint=127.0.0.1:{free_port()}"
            second = subprocess.run([sys.executable, "-m", "otel_mlmon.cli", "processor", "serve", taken, other,
                                     "--store", str(tmp_path / f"b{flag}.db")], capture_output=True, text=True,
                                    timeout=60)
            assert second.returncode == 2, second.stderr
            assert "cannot listen" in second.stderr and flag in second.stderr and "serving" not in second.stderr
        assert json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=5).read())["status"] \
            == "ok"
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_mlmon_replay_feeds_the_processor_like_evaluate(server, tmp_path: Path, protocol) -> None:
    processor, url = server
    reference = _frame(1200, 0, 0.0)
    analysis = pd.concat([_frame(400, 3, 0.0), _frame(800, 4, 1.0)], ignore_index=True)
    analysis["id"] = [f"r-{i}" for i in range(len(analysis))]
    reference.to_parquet(tmp_path / "reference.parquet")
    analysis.to_parquet(tmp_path / "analysis.parquet")
    flags = ["--id-column", "id", "--target-column", "target", "--prediction-column", "prediction",
             "--score-column", "score", "--chunk-size", "300"]
    profile = tmp_path / "profile.json"
    assert cli.main(["reference", "build", "--data", str(tmp_path / "reference.parquet"), "--model", "churn",
                     *flags, "--output", str(profile)]) == 0
    processor.register(__import__("otel_mlmon.engine.profile", fromlist=["x"]).ReferenceProfile.load(profile))
    endpoint = processor.grpc_endpoint if protocol == "grpc" else url
    assert cli.main(["replay", "--analysis", str(tmp_path / "analysis.parquet"), "--model", "churn", *flags,
                     "--endpoint", endpoint, "--protocol", protocol, "--label-shuffle", "--label-fraction", "0.6",
                     "--batch-rows", "50"]) == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        streamed = pd.DataFrame(_window_results(_results(url, model="churn", period="analysis")))
        if len(streamed) and streamed.groupby("window")["labeled_rows"].first().sum() == 720:
            break
        time.sleep(0.2)
    assert sorted(set(streamed["window"])) == [0, 1, 2, 3]
    assert streamed.groupby("window")["labeled_rows"].first().sum() == 720  # 60 % of 1200 rows
    drifted = set(streamed[(streamed.kind == "drift") & (streamed.alert.astype(str) == "True")]["column"])
    assert "age" in drifted and "score" in drifted and "plan" not in drifted
    accuracy = streamed[(streamed.metric == "accuracy") & (streamed.kind == "performance")]
    assert len(accuracy) == 4 and accuracy["value"].between(0.5, 1.0).all()
    estimated = streamed[(streamed.metric == "accuracy") & (streamed.kind == "estimated_performance")]
    assert len(estimated) == 4 and estimated["value"].between(0.5, 1.0).all()  # CBPE on every row, labelled or not


def test_replay_with_a_pickled_model(server, tmp_path: Path) -> None:
    import pickle

    from sklearn.linear_model import LogisticRegression

    _, url = server
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"x1": rng.normal(size=500), "x2": rng.normal(size=500)})
    frame["target"] = (frame.x1 + rng.normal(0, 0.5, 500) > 0).astype(int)
    frame["id"] = [f"k-{i}" for i in range(500)]
    model = LogisticRegression().fit(frame[["x1", "x2"]], frame["target"])
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    frame.to_parquet(tmp_path / "data.parquet")
    assert cli.main(["replay", "--analysis", str(tmp_path / "data.parquet"), "--model", "pickled", "--id-column",
                     "id", "--target-column", "target", "--features", "x1,x2", "--model-file",
                     str(tmp_path / "model.pkl"), "--endpoint", url]) == 0
    health = json.loads(urllib.request.urlopen(f"{url}/healthz", timeout=5).read())
    assert health["predictions"] == 500 and health["labels_joined"] == 500


def test_grpc_limits_and_partial_success(server) -> None:
    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    processor, _ = server
    options = [("grpc.max_send_message_length", 64 << 20)]
    with grpc.insecure_channel(processor.grpc_endpoint, options=options) as channel:
        stub = logs_service_pb2_grpc.LogsServiceStub(channel)
        big = logs_service_pb2.ExportLogsServiceRequest()
        big.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "x" * (5 << 20)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Export(big, timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        unusable = logs_service_pb2.ExportLogsServiceRequest()
        record = unusable.resource_logs.add().scope_logs.add().log_records.add()
        record.event_name = "ml.labels"
        record.attributes.append(KeyValue(key="ml.model.name", value=AnyValue(string_value="m")))
        answer = stub.Export(unusable, timeout=10)
        assert answer.partial_success.rejected_log_records == 1
        assert "do not pair up" in answer.partial_success.error_message


@pytest.mark.parametrize("windowing", [["--chunk-size", "300"], ["--window", "1h"]])
def test_a_month_old_backfill_replayed_with_both_cores_busy_equals_evaluate(server, tmp_path: Path,
                                                                           windowing) -> None:
    """`mlmon replay` of a labelled file whose decision threshold is not 0.5 and whose times are a month old, with
    both CPU cores busy: the processor's results equal `mlmon evaluate` row for row (values to 1e-9), and every
    label joins (the label TTL counts in the model's event time, not the processor's clock)."""
    import subprocess
    import sys

    processor, url = server
    reference = _frame(1200, 0, 0.0)
    analysis = pd.concat([_frame(600, 5, 0.0), _frame(600, 6, 1.0)], ignore_index=True)
    analysis["prediction"] = (analysis["score"] >= 0.3).astype(int)  # the application's own threshold
    reference["prediction"] = (reference["score"] >= 0.3).astype(int)
    analysis["id"] = [f"b-{i:05d}" for i in range(len(analysis))]
    month_ago = pd.Timestamp.now(tz="UTC").floor("h") - pd.Timedelta(days=31)
    rng = np.random.default_rng(2)
    analysis["ts"] = month_ago + pd.to_timedelta(np.sort(rng.uniform(0, 6 * 3600, len(analysis))), unit="s")
    reference["ts"] = month_ago - pd.Timedelta(days=30) + pd.to_timedelta(np.arange(len(reference)) * 30, unit="s")
    reference.to_parquet(tmp_path / "reference.parquet")
    analysis.to_parquet(tmp_path / "analysis.parquet")
    flags = ["--id-column", "id", "--timestamp-column", "ts", "--target-column", "target", "--prediction-column",
             "prediction", "--score-column", "score", *windowing]
    profile = tmp_path / "profile.json"
    assert cli.main(["reference", "build", "--data", str(tmp_path / "reference.parquet"), "--model", "credit",
                     *flags, "--output", str(profile)]) == 0
    from otel_mlmon.engine.profile import ReferenceProfile

    processor.register(ReferenceProfile.load(str(profile)))
    busy = [subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 120\nwhile time.time() < end: "
                              "pass"]) for _ in range(2)]
    try:
        assert cli.main(["replay", "--analysis", str(tmp_path / "analysis.parquet"), "--model", "credit", *flags,
                         "--endpoint", url, "--label-shuffle", "--batch-rows", "40"]) == 0
        expected = tmp_path / "batch.csv"
        assert cli.main(["evaluate", "--reference", str(profile), "--analysis", str(tmp_path / "analysis.parquet"),
                         "--labels", str(tmp_path / "analysis.parquet"), *flags, "--output", str(expected)]) == 0
        batch = pd.read_csv(expected, keep_default_na=False)
        batch = batch[batch.period == "analysis"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            streamed = pd.DataFrame(_window_results(_results(url, model="credit", period="analysis")))
            if len(streamed) == len(batch) and (streamed.groupby("window")["labeled_rows"].first().sum()
                                                == len(analysis)):
                break
            time.sleep(0.2)
    finally:
        for process in busy:
            process.kill()
    assert processor.counters()["labels_joined"] == len(analysis) and "expired_predictions" not in processor.counters()
    merged = assert_equals_evaluate(streamed.to_dict("records"), expected)
    accuracy = merged[merged.metric == "accuracy"]
    assert len(accuracy) >= 4 and (accuracy["value_stream"] < 1).all()
