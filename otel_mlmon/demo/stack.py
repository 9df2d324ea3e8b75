"""The demo stack of ``docker-compose.yml``, run natively: the same topology and the same config files, with
loopback ports instead of container names.

    model service (examples/model_service.py under opentelemetry-instrument)
        --OTLP/HTTP--> Collector (collector/otelcol-config.yaml, built by collector/build.sh)
            --OTLP/gRPC, gzip, persistent queue, TLS + bearer token--> processor (mlmon processor serve)
            --OTLP/gRPC--> Collector --> Prometheus exporter <-- Prometheus (collector/prometheus/) --> Alertmanager
        --traces--> Jaeger (collector/jaeger/config.yaml)
    load driver: mlmon replay --service (rows to the model service; labels, late, over OTLP to the Collector)

Used by ``mlmon demo --stack`` and by the end-to-end tests (tests/stack). Needs a source checkout (the Collector,
Prometheus and Alertmanager configs live in ``collector/``, the model service in ``examples/``; see
:func:`source_checkout`) and the binaries: the Collector from
``collector/build.sh``, Prometheus and Alertmanager from Debian's packages; Jaeger from ``collector/build.sh
--jaeger`` when built (traces also go to a file, which is all there is without Jaeger).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from otel_mlmon.demo.credentials import Certificates, write_secrets
from otel_mlmon.demo.ports import free_port

REPO = Path(__file__).resolve().parents[2]  # the checkout this package lives in, when it is one
MODEL = "churn"


def source_checkout(repo: Path = REPO) -> Path | None:
    """``repo`` when it is a source checkout of otel-mlmon (it has ``collector/build.sh``), else None: an installed
    wheel has the package only, not the configs, the Collector's build or the model service."""
    return repo if (repo / "collector" / "build.sh").is_file() else None


@dataclass
class Binaries:
    collector: str
    prometheus: str
    alertmanager: str
    jaeger: str | None = None  # optional: without it, traces go to a file


def _cached(name: str) -> str | None:
    """The newest build of ``name`` in collector/build.sh's cache."""
    cache = os.environ.get("MLMON_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "otel-mlmon")
    built = sorted(glob.glob(os.path.join(cache, "collector", f"{name}-*", name)), key=os.path.getmtime)
    return built[-1] if built else None


def find_binaries(repo: Path = REPO, collector: str | None = None) -> tuple[Binaries | None, list[str]]:
    """The stack's programs (``collector``: this Collector rather than the core build), or what is missing with
    how to get it."""
    missing = []
    collector = (collector or os.environ.get("MLMON_OTELCOL") or shutil.which("otelcol-mlmon")
                 or _cached("otelcol-mlmon"))
    if collector is None:
        missing.append(f"the otel-mlmon Collector: run {repo / 'collector' / 'build.sh'} (needs Go and its module "
                       "proxy; a few minutes the first time), or set MLMON_OTELCOL to a Collector binary")
    prometheus = shutil.which("prometheus")
    alertmanager = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if prometheus is None or alertmanager is None:
        missing.append("Prometheus and Alertmanager: apt-get install prometheus prometheus-alertmanager "
                       "(Debian/Ubuntu), or put prometheus and alertmanager on PATH")
    if not (repo / "collector" / "otelcol-config.yaml").is_file():
        missing.append(f"the stack's configs: {repo / 'collector'} is not there; run from a clone of the "
                       "otel-mlmon repository")
    if missing:
        return None, missing
    assert collector is not None and prometheus is not None and alertmanager is not None
    jaeger = os.environ.get("MLMON_JAEGER") or shutil.which("jaeger") or _cached("jaeger")
    return Binaries(collector, prometheus, alertmanager, jaeger), []


def _environment(settings: dict[str, str]) -> dict[str, str]:
    """This process's environment without the caller's OTEL_* settings, plus the ones the stack gives."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}, **settings}


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.loads(answer.read() or b"null")


@dataclass
class NativeStack:
    """Starts, drives and stops the stack; every process logs to ``folder/<name>.log``."""

    folder: Path
    binaries: Binaries
    repo: Path = REPO
    interval_s: float = 1.0  # Prometheus scrape/evaluation and OTLP metric export intervals
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # model, reference, serving: prepare() writes them
    secrets: tuple[Path, Certificates] | None = None  # the processor's token file and TLS files: start() makes them

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in ("otlp_grpc", "otlp_http", "results_grpc", "results_http", "prometheus_exporter",
                     "collector_telemetry", "health", "processor_grpc", "processor_http", "prometheus",
                     "alertmanager", "alertmanager_cluster", "model", "jaeger_otlp", "jaeger_query",
                     "jaeger_query_grpc", "jaeger_health"):
            self.ports[name] = free_port()

    # --- URLs --------------------------------------------------------------------------------------------
    def url(self, name: str) -> str:
        scheme = "https" if name.startswith("processor_http") else "http"  # the processor's listeners speak TLS
        return f"{scheme}://127.0.0.1:{self.ports[name]}"

    def processor_apis(self) -> list[str]:
        """The port names of the processors' HTTP APIs (one processor here)."""
        return ["processor_http"]

    def processor_api(self, path: str, api: str = "processor_http") -> Any:
        """GET a JSON document of a processor's API (``api``: a name of :meth:`processor_apis`), over TLS with its
        bearer token."""
        import ssl

        assert self.secrets is not None, "start() makes the processor's token and certificates"
        token, certs = self.secrets
        request = urllib.request.Request(self.url(api) + path,
                                         headers={"Authorization": f"Bearer {token.read_text().strip()}"})
        context = ssl.create_default_context(cafile=str(certs.ca))
        with urllib.request.urlopen(request, timeout=5, context=context) as answer:
            return json.loads(answer.read() or b"null")

    # --- lifecycle ---------------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.folder / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
            self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
                                                    env=_environment(env or {}), start_new_session=True)

    def _wait(self, name: str, check: Callable[[], bool], timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            process = self.processes[name]
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}: {self.tail(name)}")
            try:
                if check():
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} was not ready after {timeout_s:.0f} s: {self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.folder / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def prepare(self, serve_rows: int = 3000) -> dict[str, str]:
        """The model, its reference profile and the drifting serving data (otel_mlmon.demo.data.prepare)."""
        from otel_mlmon.demo.data import prepare

        self.inputs = prepare(str(self.folder / "inputs"), serve_rows=serve_rows)
        return self.inputs

    def start(self) -> None:
        """Alertmanager, Prometheus, the processor, the Collector, the model service; each waited for."""
        if not self.inputs:
            self.prepare()
        self.secrets = write_secrets(self.folder / "secrets")
        self._start_alertmanager()
        self._start_prometheus()
        self._start_processor()
        if self.binaries.jaeger:
            self._start_jaeger()
        self._start_collector()
        self._start_model()

    def _start_alertmanager(self) -> None:
        self._spawn("alertmanager", [
            self.binaries.alertmanager, f"--config.file={self.repo / 'collector/alertmanager/alertmanager.yml'}",
            f"--web.listen-address=127.0.0.1:{self.ports['alertmanager']}",
            f"--cluster.listen-address=127.0.0.1:{self.ports['alertmanager_cluster']}",
            f"--storage.path={self.folder / 'alertmanager-data'}"])
        self._wait("alertmanager", lambda: _get(self.url("alertmanager") + "/api/v2/status") is not None)

    def prometheus_config(self) -> Path:
        """collector/prometheus/prometheus.yml with loopback targets, short intervals, absolute rule paths."""
        import yaml

        shipped = self.repo / "collector" / "prometheus" / "prometheus.yml"
        config = yaml.safe_load(shipped.read_text())
        interval = f"{max(1, round(self.interval_s))}s"
        config["global"] = {**config.get("global", {}), "scrape_interval": interval, "evaluation_interval": interval}
        config["rule_files"] = [str(shipped.parent / path) for path in config["rule_files"]]
        config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [
            f"127.0.0.1:{self.ports['alertmanager']}"]
        targets = {"otel-collector": self.ports["prometheus_exporter"],
                   "otel-collector-self": self.ports["collector_telemetry"]}
        for job in config["scrape_configs"]:
            job["static_configs"][0]["targets"] = [f"127.0.0.1:{targets[job['job_name']]}"]
        path = self.folder / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _start_prometheus(self) -> None:
        self._spawn("prometheus", [
            self.binaries.prometheus, f"--config.file={self.prometheus_config()}",
            f"--web.listen-address=127.0.0.1:{self.ports['prometheus']}",
            f"--storage.tsdb.path={self.folder / 'prometheus-data'}"])
        self._wait("prometheus", lambda: urllib.request.urlopen(self.url("prometheus") + "/-/ready",
                                                                timeout=2).status == 200)

    def _start_processor(self, name: str = "processor", grpc: str = "processor_grpc",
                         http: str = "processor_http") -> None:
        """A processor ``name`` listening on the ports named ``grpc`` and ``http``, its store ``name.db``."""
        assert self.secrets is not None
        token, certs = self.secrets
        self._spawn(name, [
            sys.executable, "-m", "otel_mlmon.cli", "processor", "serve",
            "--grpc-endpoint", f"127.0.0.1:{self.ports[grpc]}", "--http-endpoint", f"127.0.0.1:{self.ports[http]}",
            "--store", str(self.folder / f"{name}.db"), "--reference", self.inputs["reference"],
            "--alertmanager", self.url("alertmanager"), "--auth-token-file", str(token),
            "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)], env={
            "OTEL_SERVICE_NAME": "mlmon-processor", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.url("results_grpc"),
            "OTEL_METRIC_EXPORT_INTERVAL": str(int(self.interval_s * 1000)), "OTEL_BLRP_SCHEDULE_DELAY": "500",
            # A demo streams for seconds, not hours: windows close 5 s behind the newest row (the Collector's
            # batching and the sketch interval fit in that), all of them 10 s after the last row, and a window
            # takes its late labels within 2 s (a production processor keeps 30 s, 2 min and 30 s).
            "OTEL_PYTHON_MLMON_PROCESSOR_ALLOWED_LATENESS_S": "5", "OTEL_PYTHON_MLMON_PROCESSOR_IDLE_TIMEOUT_S": "10",
            "OTEL_PYTHON_MLMON_PROCESSOR_REVISION_INTERVAL_S": "2"})
        self._wait(name, lambda: self.processor_api("/healthz", http)["status"] == "ok")

    def _start_jaeger(self) -> None:
        assert self.binaries.jaeger is not None
        self._spawn("jaeger", [self.binaries.jaeger, f"--config={self.repo / 'collector' / 'jaeger' / 'config.yaml'}"],
                    env={"JAEGER_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{self.ports['jaeger_otlp']}",
                         "JAEGER_QUERY_HTTP_ENDPOINT": f"127.0.0.1:{self.ports['jaeger_query']}",
                         "JAEGER_QUERY_GRPC_ENDPOINT": f"127.0.0.1:{self.ports['jaeger_query_grpc']}",
                         "JAEGER_HEALTH_ENDPOINT": f"127.0.0.1:{self.ports['jaeger_health']}"})
        self._wait("jaeger", lambda: _get(self.url("jaeger_query") + "/api/services") is not None)

    def collector_env(self) -> dict[str, str]:
        assert self.secrets is not None
        token, certs = self.secrets
        return {"MLMON_PROCESSOR_TOKEN": token.read_text().strip(), "MLMON_PROCESSOR_CA_FILE": str(certs.ca),
                "MLMON_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{self.ports['otlp_grpc']}",
                "MLMON_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{self.ports['otlp_http']}",
                "MLMON_RESULTS_GRPC_ENDPOINT": f"127.0.0.1:{self.ports['results_grpc']}",
                "MLMON_RESULTS_HTTP_ENDPOINT": f"127.0.0.1:{self.ports['results_http']}",
                "MLMON_PROCESSOR_ENDPOINT": f"127.0.0.1:{self.ports['processor_grpc']}",
                "MLMON_PROMETHEUS_EXPORTER_ENDPOINT": f"127.0.0.1:{self.ports['prometheus_exporter']}",
                "MLMON_COLLECTOR_TELEMETRY_HOST": "127.0.0.1",
                "MLMON_COLLECTOR_TELEMETRY_PORT": str(self.ports["collector_telemetry"]),
                "MLMON_HEALTH_ENDPOINT": f"127.0.0.1:{self.ports['health']}",
                "MLMON_QUEUE_DIR": str(self.folder / "collector-queue"),
                "MLMON_JAEGER_ENDPOINT": f"127.0.0.1:{self.ports['jaeger_otlp']}"}

    def collector_overlays(self) -> list[Path]:
        """Configs merged after the main Collector's own (none here)."""
        return []

    def _start_collector(self) -> None:
        # Natively, traces also go to a file (only there when Jaeger was not built), and the processor's alert
        # events to a file as well as to the debug exporter (in the compose stack: your logs backend).
        overlay = self.folder / "collector-native.yaml"
        traces = ["otlp_grpc/jaeger", "file/traces"] if self.binaries.jaeger else ["file/traces"]
        overlay.write_text(json.dumps({
            "exporters": {"file/traces": {"path": str(self.folder / "traces.jsonl")},
                          "file/alerts": {"path": str(self.folder / "alert-events.jsonl")}},
            "service": {"pipelines": {"traces": {"exporters": traces},
                                      "logs/results": {"exporters": ["debug", "file/alerts"]}}}}))
        configs = [self.repo / "collector" / "otelcol-config.yaml", overlay, *self.collector_overlays()]
        self._spawn("collector", [self.binaries.collector, *(f"--config={path}" for path in configs)],
                    env=self.collector_env())
        self._wait("collector", lambda: urllib.request.urlopen(self.url("health"), timeout=2).status == 200)

    def _start_model(self) -> None:
        instrument = Path(sys.executable).with_name("opentelemetry-instrument")
        self._spawn("model", [
            str(instrument), sys.executable, str(self.repo / "examples" / "model_service.py"),
            "--model", self.inputs["model"], "--name", MODEL, "--version", "1", "--port", str(self.ports["model"])],
            env={"OTEL_SERVICE_NAME": "churn-model", "OTEL_EXPORTER_OTLP_ENDPOINT": self.url("otlp_http"),
                 "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_TRACES_EXPORTER": "otlp",
                 "OTEL_METRICS_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "otlp",
                 "OTEL_METRIC_EXPORT_INTERVAL": str(int(self.interval_s * 1000)),
                 "OTEL_PYTHON_MLMON_CAPTURE_FEATURES": "true", "OTEL_PYTHON_MLMON_EVENT_FLUSH_INTERVAL": "500",
                 "OTEL_PYTHON_MLMON_SKETCH_EXPORT_INTERVAL": str(int(self.interval_s * 1000))})
        self._wait("model", lambda: _get(self.url("model") + "/health")["status"] == "ok")

    def drive(self, rate: float = 1000.0, label_delay_s: float = 3.0, batch_rows: int = 50,
              timeout_s: float = 300.0) -> subprocess.CompletedProcess[bytes]:
        """The load driver: ``mlmon replay --service`` sends the serving rows to the model service, then the
        labels, ``label_delay_s`` later, over OTLP to the Collector."""
        argv = [sys.executable, "-m", "otel_mlmon.cli", "replay", "--analysis", self.inputs["serving"],
                "--model", MODEL, "--version", "1", "--id-column", "id", "--target-column", "churned",
                "--service", self.url("model"), "--endpoint", self.url("otlp_http"), "--rate", str(rate),
                "--batch-rows", str(batch_rows), "--label-delay", str(label_delay_s)]
        with open(self.folder / "replay.log", "ab") as log:
            return subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s, check=True,
                                  env=_environment({"OTEL_SERVICE_NAME": "churn-labels"}))

    def kill(self, name: str) -> None:
        """SIGKILL one process (a crash, for the tests)."""
        process = self.processes[name]
        process.kill()
        process.wait()

    def restart(self, name: str) -> None:
        """Start one process again, on the same ports and state."""
        getattr(self, f"_start_{name}")()

    def bad_request(self) -> int:
        """A predict call the model raises on (a plan it never saw): the HTTP status the service answered."""
        body = json.dumps({"ids": ["bad-1"], "columns": {"tenure": [1.0], "monthly_charges": [50.0],
                                                         "support_calls": [0.0], "plan": ["platinum"]}}).encode()
        request = urllib.request.Request(self.url("model") + "/predict", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    # The order stop() stops processes in: a name, or the prefix of names ``prefix-…`` (the first that matches).
    STOP_ORDER: ClassVar[tuple[str, ...]] = ("model", "processor", "collector", "jaeger", "prometheus", "alertmanager")

    def _stop_rank(self, name: str) -> int:
        return next((rank for rank, first in enumerate(self.STOP_ORDER)
                     if name == first or name.startswith(first + "-")), len(self.STOP_ORDER))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s: the model first (it flushes to the Collector), then the processor
        (its last results still reach the Collector), then the Collector and the backends."""
        for name in sorted(self.processes, key=self._stop_rank):
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()

    def __enter__(self) -> NativeStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what the backends hold ------------------------------------------------------------------------
    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant PromQL query against the stack's Prometheus: the result vector."""
        answer = _get(self.url("prometheus") + "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        if answer.get("status") != "success":
            raise ValueError(f"Prometheus refused {promql!r}: {answer}")
        return list(answer["data"]["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds (active, from Prometheus rules and from the processor)."""
        return list(_get(self.url("alertmanager") + "/api/v2/alerts"))

    def traces(self, service: str) -> list[dict[str, Any]]:
        """Jaeger's traces of a service (its HTTP query API)."""
        answer = _get(self.url("jaeger_query") + "/api/traces?" + urllib.parse.urlencode(
            {"service": service, "limit": 10000, "lookback": "1h"}))
        return list(answer.get("data") or [])

    def results(self) -> list[dict[str, Any]]:
        """The processor's window results (its GET /v1/results)."""
        query = "/v1/results?" + urllib.parse.urlencode({"model": MODEL})
        return [row for api in self.processor_apis() for row in self.processor_api(query, api)["results"]]

