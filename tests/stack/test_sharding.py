"""collector/examples/sharded-processors.yaml run for real: each model's ml.* events reach its own processor."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

import otel_mlmon
from otel_mlmon.processor import grpc_receiver
from otel_mlmon.processor.service import Processor
from otel_mlmon.processor.store import Store

from ..conftest import eventually, free_port
from .conftest import REPO


def test_each_model_reaches_its_own_processor(otelcol: str, tmp_path: Path) -> None:
    from otel_mlmon.demo.credentials import write_secrets
    from otel_mlmon.processor.security import Security, Tls

    # The Collector sends to the processors over TLS with the bearer token, as the shipped config says.
    token_file, certs = write_secrets(tmp_path / "secrets")
    security = Security(token_file.read_text().strip(), Tls.load(str(certs.server_cert), str(certs.server_key)))
    processors, servers, endpoints = [], [], []
    for name in ("a", "b"):
        processor = Processor(Store(str(tmp_path / f"{name}.db")))
        assert security.tls is not None
        server, port = grpc_receiver.start(processor, "127.0.0.1:0", credentials=security.tls.grpc,
                                           interceptors=security.grpc_interceptors())
        processors.append(processor)
        servers.append(server)
        endpoints.append(f"127.0.0.1:{port}")
    grpc_port, http_port, health_port = free_port(), free_port(), free_port()
    collector = subprocess.Popen([
        otelcol, f"--config={REPO / 'collector/examples/sharded-processors.yaml'}",
        f"--set=receivers::otlp::protocols::grpc::endpoint=127.0.0.1:{grpc_port}",
        f"--set=receivers::otlp::protocols::http::endpoint=127.0.0.1:{http_port}",
        f"--set=extensions::health_check::endpoint=127.0.0.1:{health_port}",
        "--set=service::telemetry::metrics::level=none"],  # no self-telemetry port to collide
        env={"MLMON_PROCESSOR_A": endpoints[0], "MLMON_PROCESSOR_B": endpoints[1],
             "MLMON_PROCESSOR_TOKEN_FILE": str(token_file), "MLMON_PROCESSOR_CA_FILE": str(certs.ca),
             "MLMON_QUEUE_DIR": str(tmp_path / "queue"), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    provider = LoggerProvider()
    try:
        def healthy() -> bool:
            assert collector.poll() is None, collector.stderr.read().decode()[-3000:] if collector.stderr else ""
            urllib.request.urlopen(f"http://127.0.0.1:{health_port}", timeout=1).read()
            return True

        eventually(healthy, 30, "the Collector healthy", interval_s=0.2)
        provider.add_log_record_processor(SimpleLogRecordProcessor(
            OTLPLogExporter(f"http://127.0.0.1:{http_port}/v1/logs")))
        otel_mlmon.record_labels("churn", ids=["c1", "c2", "c3"], labels=[1, 0, 1], version="1",
                                 logger_provider=provider)
        otel_mlmon.record_labels("fraud", ids=["f1"], labels=[0], version="2", logger_provider=provider)
        otel_mlmon.record_labels("pricing", ids=["p1", "p2"], labels=[3.5, 1.25], version="1",
                                 logger_provider=provider)

        def orphans(processor: Processor) -> int:
            return processor.store.counters().get("labels_orphaned", 0)

        # churn + fraud on a, pricing on b
        eventually(lambda: (orphans(processors[0]), orphans(processors[1])) == (4, 2), 30,
                   "4 labels at processor a, 2 at b", interval_s=0.2)
        time.sleep(1)  # and nothing arrives twice
        assert (orphans(processors[0]), orphans(processors[1])) == (4, 2)
        assert all(p.store.counters().get("rejected_records", 0) == 0 for p in processors)
    finally:
        provider.shutdown()
        collector.terminate()
        collector.wait(15)
        for server in servers:
            server.stop(0)
        for processor in processors:
            processor.store.close()
