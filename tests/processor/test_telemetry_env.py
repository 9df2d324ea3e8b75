"""The processor's own telemetry follows the OTel SDK's standard environment, and its logs carry trace context.

`mlmon processor serve` runs as a subprocess against a real OTLP/HTTP receiver on loopback (tests/otlp_receiver.py):
headers, protocol, OTEL_SDK_DISABLED and OTEL_METRICS_EXPORTER are checked on what arrives there; --log-level on
its stderr. Trace correlation is checked in process, with the SDK's tracer, on the console line and at the receiver.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from otel_mlmon.processor.export import configure_logging, otlp_from_environment
from tests.conftest import free_port
from tests.otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parents[2]
# A fast export: metrics every 200 ms, logs batched for 100 ms.
FAST = {"OTEL_METRIC_EXPORT_INTERVAL": "200", "OTEL_BLRP_SCHEDULE_DELAY": "100"}


class HeaderReceiver(OtlpReceiver):
    """The test receiver, also keeping each request's headers."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[dict[str, str]] = []
        handler = self.server.RequestHandlerClass
        receiver = self

        class Recording(handler):  # type: ignore[valid-type,misc]
            def do_POST(self) -> None:
                receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                super().do_POST()

        self.server.RequestHandlerClass = Recording


@pytest.fixture()
def receiver() -> Iterator[HeaderReceiver]:
    found = HeaderReceiver()
    with found:
        yield found


def _serve(tmp_path: Path, environment: dict[str, str], *flags: str, seconds: float = 1.5) -> str:
    """Start the processor, wait until it answers /healthz, let it run ``seconds``, stop it (SIGTERM): its stderr."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"PYTHONPATH": str(ROOT), **FAST, **environment})
    process = subprocess.Popen([sys.executable, "-m", "otel_mlmon.cli", "processor", "serve", "--http-endpoint",
                                f"127.0.0.1:{port}", "--grpc-endpoint", f"127.0.0.1:{free_port()}", "--store",
                                str(tmp_path / "p.db"), *flags], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the processor did not start"
                time.sleep(0.1)
        time.sleep(seconds)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    return stderr


def _metric_names(receiver: OtlpReceiver) -> set[str]:
    return {m.name for m in receiver.metrics()}


def _log_bodies(receiver: OtlpReceiver) -> list[str]:
    return [r.body.string_value for r in receiver.logs()]


def test_headers_and_resource_from_the_environment_reach_the_receiver(tmp_path: Path,
                                                                     receiver: HeaderReceiver) -> None:
    _serve(tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                      "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cret,x-tenant=ml",
                      "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test"})
    assert "ml.processor.records" in _metric_names(receiver)  # the processor's own metrics, over OTLP/HTTP
    assert any("serving OTLP/HTTP" in body for body in _log_bodies(receiver))  # its log lines as OTLP records
    assert receiver.headers and all(h.get("authorization") == "Bearer s3cret" and h.get("x-tenant") == "ml"
                                    for h in receiver.headers)
    with receiver._lock:
        resource = {kv.key: kv.value.string_value
                    for kv in receiver.requests["/v1/metrics"][0].resource_metrics[0].resource.attributes}
    assert resource["service.name"] == "mlmon-processor" and resource["deployment.environment"] == "test"


def _environment(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]) -> None:
    """Only these OTEL_* variables in this process's environment (the SDK's exporters read os.environ)."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    for name, value in {**FAST, **environment}.items():
        monkeypatch.setenv(name, value)


@contextmanager
def _logging(otlp: Any, level: str = "info") -> Iterator[None]:
    """configure_logging for the block; the root logger as it was afterwards, the providers shut down."""
    root = logging.getLogger()
    before = (root.handlers[:], root.level)
    try:
        configure_logging(level, otlp)
        yield
    finally:
        if otlp is not None:
            otlp.close()
        root.handlers[:], root.level = before


def test_the_protocol_variables_choose_grpc_or_http(receiver: HeaderReceiver,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc

    received: list[Any] = []

    class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            received.append(request)
            return metrics_service_pb2.ExportMetricsServiceResponse()

    server = grpc.server(ThreadPoolExecutor(2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        # Metrics over gRPC (their own endpoint and protocol), logs over HTTP (the general ones).
        _environment(monkeypatch, {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                                   "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                                   "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"http://127.0.0.1:{port}",
                                   "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"})
        otlp = otlp_from_environment()
        with _logging(otlp):
            assert otlp is not None
            otlp.alerts.add(1, {"ml.model.name": "m"})
            logging.getLogger("otel_mlmon.processor").warning("a line over HTTP")
    finally:
        server.stop(0)
    assert [m.name for r in received for rm in r.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics] == ["ml.alerts"]
    assert receiver.requests["/v1/metrics"] == [] and _log_bodies(receiver) == ["a line over HTTP"]
    assert {h["content-type"] for h in receiver.headers} == {"application/x-protobuf"}
    _environment(monkeypatch, {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                               "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    with pytest.raises(ValueError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL='http/json'.*grpc or http/protobuf"):
        otlp_from_environment()


def test_otel_sdk_disabled_sends_nothing(tmp_path: Path, receiver: OtlpReceiver) -> None:
    stderr = _serve(tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SDK_DISABLED": "true"})
    assert "serving OTLP/HTTP" in stderr  # the console still logs
    assert receiver.requests == {"/v1/traces": [], "/v1/metrics": [], "/v1/logs": []}


def test_metrics_exporter_none_sends_logs_but_no_metrics(tmp_path: Path, receiver: OtlpReceiver) -> None:
    _serve(tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_METRICS_EXPORTER": "none"})
    assert receiver.requests["/v1/metrics"] == []
    assert any("serving OTLP/HTTP" in body for body in _log_bodies(receiver))


def test_log_level_warning_hides_info_lines(tmp_path: Path) -> None:
    info = _serve(tmp_path, {}, seconds=0.2)
    lines = [json.loads(line) for line in info.splitlines()]
    assert any(line["level"] == "INFO" and "serving OTLP/HTTP" in line["message"] for line in lines)
    quiet = _serve(tmp_path, {}, "--log-level", "WARNING", seconds=0.2)
    lines = [json.loads(line) for line in quiet.splitlines()]
    assert [line["level"] for line in lines] == ["WARNING"]  # only the unauthenticated-access warning is left
    assert "access: " in lines[0]["message"]
    refused = subprocess.run([sys.executable, "-m", "otel_mlmon.cli", "processor", "serve", "--log-level", "loud"],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert refused.returncode == 2 and "--log-level" in refused.stderr


def test_a_log_record_inside_a_span_carries_its_trace_and_span_ids(receiver: OtlpReceiver,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    _environment(monkeypatch, {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
    otlp = otlp_from_environment()
    log = logging.getLogger("otel_mlmon.processor")
    with _logging(otlp):
        with TracerProvider().get_tracer("test").start_as_current_span("tick") as span:
            log.info("inside a span")
            context = span.get_span_context()
        log.info("outside any span")
        log.debug("below the level")
    trace_id, span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
    console = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    inside = [line for line in console if line["message"] == "inside a span"]
    outside = [line for line in console if line["message"] == "outside any span"]
    assert len(inside) == 1 and inside[0]["trace_id"] == trace_id and inside[0]["span_id"] == span_id
    assert len(outside) == 1 and "trace_id" not in outside[0]
    assert not [line for line in console if line["message"] == "below the level"]
    records = {r.body.string_value: r for r in receiver.logs()}
    assert set(records) == {"inside a span", "outside any span"}
    assert records["inside a span"].trace_id.hex() == trace_id
    assert records["inside a span"].span_id.hex() == span_id
    assert not any(records["outside any span"].trace_id)
