"""Kafka between the Collector and the processors, for real: an Apache Kafka broker (KRaft, one node, from
Maven Central's jars: scripts/kafka.sh) on loopback, the application's Collector writing the ml.* events and
metrics to two-partition topics keyed by model (collector/examples/kafka-pipeline.yaml), and two processor
replicas, each behind its own Collector reading its partitions (collector/examples/kafka-processor.yaml).

Shown: one replica's processor killed while both models keep replaying, and restarted later: every prediction
and label reaches its processor once, and each model's results equal `mlmon evaluate` on the same rows (row
counts, values to 1e-9, verdicts); each model's rows all reach one replica, and the two models two replicas."""

from __future__ import annotations

import functools
import importlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from otel_mlmon import cli
from tests.conftest import assert_equals_evaluate, eventually, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KAFKA = REPO / "scripts" / "kafka.sh"
TOPICS = ("otel-mlmon-events", "otel-mlmon-sketches")  # as collector/examples/kafka-pipeline.yaml names them
# Their keys (the hash of the resource {ml.model.name: name}) fall in partitions 0 and 1 of two, which the range
# assignor gives to replicas a and b ("fraud" would share churn's partition).
MODELS = ("churn", "credit")
ROWS = 1500  # per model: 5 windows of 300 rows
RATE = 75  # rows per second per model: the replays last ~20 s...
OUTAGE_S = 12.0  # ...and one processor is down for most of them
FLAGS = ["--id-column", "id", "--timestamp-column", "ts", "--target-column", "target", "--prediction-column",
         "prediction", "--score-column", "score", "--chunk-size", "300"]


def _write_secrets(folder: Path) -> tuple[Path, Any]:
    """The processor's token file and TLS files (otel_mlmon.demo.credentials; formerly otel_mlmon._stack)."""
    for name in ("otel_mlmon.demo.credentials", "otel_mlmon._stack"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        written: tuple[Path, Any] = module.write_secrets(folder)
        return written
    raise AssertionError("no write_secrets in otel_mlmon.demo.credentials nor otel_mlmon._stack")


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Processes:
    """Subprocesses of one test, each logging to ``folder/<name>.log``; all stopped at the end."""

    folder: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MLMON_", "KAFKA_"))}
        environment.update(env, PYTHONPATH=str(REPO))
        with open(self.folder / f"{name}.log", "ab") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=environment,
                                       cwd=self.folder, start_new_session=True)
        self.running[name] = process
        return process

    def alive(self, name: str) -> bool:
        process = self.running[name]
        assert process.poll() is None, f"{name} exited with {process.returncode}:\n{self.tail(name)}"
        return True

    def tail(self, name: str, lines: int = 25) -> str:
        path = self.folder / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, name: str) -> None:
        process = self.running.pop(name)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A single-node KRaft broker on loopback with the two topics, two partitions each; its client port."""
    for program, what in (("java", "Java 17+: apt-get install openjdk-17-jre-headless"),
                          ("mvn", "Maven: apt-get install maven")):
        if shutil.which(program) is None:
            pytest.fail(f"{program} is not installed ({what}; `make test` installs it: scripts/system-deps.sh)")
    folder = tmp_path_factory.mktemp("kafka")
    processes = Processes(folder)
    port, controller = free_port(), free_port()
    started = time.monotonic()
    # The first run fetches the jars (about a minute); later runs start in seconds.
    processes.start("kafka", [str(KAFKA), "serve", str(folder / "broker"), str(port), str(controller)], {})
    try:
        eventually(lambda: processes.alive("kafka") and _listening(port)
                   and "Kafka Server started" in (folder / "kafka.log").read_text(errors="replace"),
                   300, "the Kafka broker listening", interval_s=0.2)
        print(f"Kafka broker up in {time.monotonic() - started:.1f} s")
        for topic in TOPICS:
            done = subprocess.run([str(KAFKA), "topic", str(port), topic, "2"], capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
        print(f"Kafka broker and topics ready in {time.monotonic() - started:.1f} s")
        yield port
    finally:
        processes.stop_all()
        print(f"--- kafka.log (tail)\n{processes.tail('kafka', 10)}")


def _frame(n: int, seed: int, shift: float, model: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"age": rng.normal(40 + 10 * shift, 10, n), "income": rng.lognormal(10, 0.5, n),
                          "plan": rng.choice(["basic", "gold", "platinum"], n, p=[0.6, 0.3, 0.1])})
    score = 1 / (1 + np.exp(-(frame["age"] - 40) / 10))
    frame["score"] = score
    frame["prediction"] = (score > 0.5).astype(int)
    frame["target"] = (rng.random(n) < score).astype(int)
    frame["id"] = [f"{model}-{seed}-{i:05d}" for i in range(n)]
    return frame


def _accepted_points(telemetry_port: int, receiver: str) -> float:
    """otelcol_receiver_accepted_metric_points of one receiver, from a Collector's own Prometheus endpoint."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{telemetry_port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("otelcol_receiver_accepted_metric_points") and f'receiver="{receiver}"' in line)


@dataclass
class Replica:
    """A processor and the Collector that reads its partitions from Kafka."""

    name: str
    grpc: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    health: int = field(default_factory=free_port)
    telemetry: int = field(default_factory=free_port)


def test_kafka_between_the_collector_and_two_processor_replicas(otelcol_cloud: str, kafka: int,
                                                                 tmp_path: Path) -> None:
    processes = Processes(tmp_path)
    token, certs = _write_secrets(tmp_path / "secrets")
    context = ssl.create_default_context(cafile=str(certs.ca))

    def get(url: str, auth: bool = False) -> Any:
        headers = {"Authorization": f"Bearer {token.read_text().strip()}"} if auth else {}
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5,
                                    context=context if url.startswith("https") else None) as answer:
            return json.loads(answer.read())

    # Each model: a reference profile, a drifting labelled analysis file, and `mlmon evaluate`'s results on it.
    profiles, analyses, expected = {}, {}, {}
    for number, model in enumerate(MODELS):
        reference = _frame(1000, 10 * number, 0.0, model)
        analysis = pd.concat([_frame(ROWS // 2, 10 * number + 1, 0.0, model),
                              _frame(ROWS - ROWS // 2, 10 * number + 2, 1.0, model)], ignore_index=True)
        hour_ago = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=1)
        analysis["ts"] = hour_ago + pd.to_timedelta(np.arange(ROWS) * 2, unit="s")
        reference["ts"] = hour_ago - pd.Timedelta(days=1) + pd.to_timedelta(np.arange(len(reference)), unit="s")
        reference.to_parquet(tmp_path / f"{model}-reference.parquet")
        analyses[model] = tmp_path / f"{model}-analysis.parquet"
        analysis.to_parquet(analyses[model])
        profiles[model] = tmp_path / f"{model}-profile.json"
        assert cli.main(["reference", "build", "--data", str(tmp_path / f"{model}-reference.parquet"), "--model",
                         model, "--version", "1", *FLAGS, "--output", str(profiles[model])]) == 0
        expected[model] = tmp_path / f"{model}-expected.csv"
        assert cli.main(["evaluate", "--reference", str(profiles[model]), "--analysis", str(analyses[model]),
                         "--labels", str(analyses[model]), *FLAGS, "--output", str(expected[model])]) == 0

    otlp_grpc, otlp_http, results_grpc, results_http = free_port(), free_port(), free_port(), free_port()
    app_health, app_telemetry, prometheus = free_port(), free_port(), free_port()
    replicas = [Replica("a"), Replica("b")]

    def start_processor(replica: Replica) -> None:
        processes.start(f"processor-{replica.name}", [
            sys.executable, "-m", "otel_mlmon.cli", "processor", "serve",
            "--grpc-endpoint", f"127.0.0.1:{replica.grpc}", "--http-endpoint", f"127.0.0.1:{replica.http}",
            "--store", str(tmp_path / f"processor-{replica.name}.db"),
            *(flag for model in MODELS for flag in ("--reference", str(profiles[model]))),
            "--auth-token-file", str(token), "--tls-cert", str(certs.server_cert), "--tls-key",
            str(certs.server_key)], {
            "OTEL_SERVICE_NAME": f"mlmon-processor-{replica.name}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{results_grpc}",
            "OTEL_PYTHON_MLMON_PROCESSOR_ALLOWED_LATENESS_S": "5",
            "OTEL_PYTHON_MLMON_PROCESSOR_IDLE_TIMEOUT_S": "5"})

    def start_collector(replica: Replica) -> None:
        processes.start(f"collector-{replica.name}", [
            otelcol_cloud, f"--config={REPO / 'collector' / 'examples' / 'kafka-processor.yaml'}"], {
            "KAFKA_BROKERS": f"127.0.0.1:{kafka}", "MLMON_REPLICA": replica.name,
            "MLMON_PROCESSOR_ENDPOINT": f"127.0.0.1:{replica.grpc}", "MLMON_PROCESSOR_TOKEN_FILE": str(token),
            "MLMON_PROCESSOR_CA_FILE": str(certs.ca), "MLMON_HEALTH_ENDPOINT": f"127.0.0.1:{replica.health}",
            "MLMON_COLLECTOR_TELEMETRY_HOST": "127.0.0.1", "MLMON_COLLECTOR_TELEMETRY_PORT": str(replica.telemetry)})

    def crash(name: str) -> None:
        process = processes.running.pop(name)
        process.kill()
        process.wait(10)

    def counters(replica: Replica) -> dict[str, Any]:
        found: dict[str, Any] = get(f"https://127.0.0.1:{replica.http}/healthz")
        return found

    def processor_up(replica: Replica) -> bool:
        return processes.alive(f"processor-{replica.name}") and counters(replica)["status"] == "ok"

    def healthy(url: str, name: str) -> bool:
        processes.alive(name)
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)

    try:
        for replica in replicas:
            start_processor(replica)
        for replica in replicas:
            eventually(functools.partial(processor_up, replica), 60, f"processor {replica.name} up", interval_s=0.2)
            start_collector(replica)
        processes.start("collector-app", [
            otelcol_cloud, f"--config={REPO / 'collector' / 'otelcol-config.yaml'}",
            f"--config={REPO / 'collector' / 'examples' / 'kafka-pipeline.yaml'}"], {
            "KAFKA_BROKERS": f"127.0.0.1:{kafka}", "MLMON_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{otlp_grpc}",
            "MLMON_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{otlp_http}",
            "MLMON_RESULTS_GRPC_ENDPOINT": f"127.0.0.1:{results_grpc}",
            "MLMON_RESULTS_HTTP_ENDPOINT": f"127.0.0.1:{results_http}",
            "MLMON_PROMETHEUS_EXPORTER_ENDPOINT": f"127.0.0.1:{prometheus}",
            "MLMON_COLLECTOR_TELEMETRY_HOST": "127.0.0.1", "MLMON_COLLECTOR_TELEMETRY_PORT": str(app_telemetry),
            "MLMON_HEALTH_ENDPOINT": f"127.0.0.1:{app_health}", "MLMON_QUEUE_DIR": str(tmp_path / "queue"),
            "MLMON_PROCESSOR_TOKEN_FILE": str(token),
            "MLMON_JAEGER_ENDPOINT": f"127.0.0.1:{free_port()}"})  # no traces here: nobody listens
        for name, port in [("collector-app", app_health)] + [(f"collector-{r.name}", r.health) for r in replicas]:
            eventually(functools.partial(healthy, f"http://127.0.0.1:{port}", name), 60, f"{name} healthy",
                       interval_s=0.2)

        started = time.monotonic()
        for model in MODELS:  # both models stream at once, through the application's Collector only
            processes.start(f"replay-{model}", [
                sys.executable, "-m", "otel_mlmon.cli", "replay", "--analysis", str(analyses[model]), "--model",
                model, "--version", "1", *FLAGS, "--endpoint", f"http://127.0.0.1:{otlp_http}", "--rate",
                str(RATE), "--batch-rows", "25", "--label-delay", "2", "--label-shuffle"],
                {"OTEL_SERVICE_NAME": f"{model}-service"})
        # Replica a's processor crashes once some rows reached it, and comes back OUTAGE_S later. Halfway through,
        # its Collector crashes too and restarts: the messages it was retrying were not committed (marked only
        # after the processor acknowledged them), so the new one reads them again; none is skipped.
        eventually(lambda: counters(replicas[0]).get("predictions", 0) > 0, 60,
                   "the first predictions at processor a", interval_s=0.1)
        down = time.monotonic()
        crash("processor-a")
        time.sleep(OUTAGE_S / 2)
        crash("collector-a")
        start_collector(replicas[0])
        eventually(lambda: healthy(f"http://127.0.0.1:{replicas[0].health}", "collector-a"), 60,
                   "collector-a healthy again", interval_s=0.2)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
        start_processor(replicas[0])
        print(f"processor a down {time.monotonic() - down:.1f} s, from {down - started:.1f} s into the replay")
        for model in MODELS:
            assert processes.running[f"replay-{model}"].wait(240) == 0, processes.tail(f"replay-{model}")
        replayed = time.monotonic()

        # Which replica has which model: the one whose processor stored that model's rows.
        def results(replica: Replica, model: str) -> list[dict[str, Any]]:
            rows = get(f"https://127.0.0.1:{replica.http}/v1/results?model={model}&period=analysis", auth=True)
            return [r for r in rows["results"] if r["kind"] != "performance_change"]

        def complete() -> dict[str, Replica]:
            owner = {}
            for model in MODELS:
                batch = pd.read_csv(expected[model], keep_default_na=False)
                batch = batch[batch.period == "analysis"]
                for replica in replicas:
                    streamed = pd.DataFrame(results(replica, model))
                    if (len(streamed) == len(batch)
                            and streamed.groupby("window")["labeled_rows"].first().sum() == ROWS):
                        owner[model] = replica
            return owner if len(owner) == len(MODELS) else {}

        def delivered() -> bool:  # each replica: its model's predictions and labels, every one
            return all(counters(r).get("predictions") == ROWS and counters(r).get("labels_joined") == ROWS
                       for r in replicas)

        try:
            eventually(delivered, 60, "every prediction and label at a processor", interval_s=0.5)
        except AssertionError:
            raise AssertionError(f"rows lost: {[counters(r) for r in replicas]} ({ROWS} per replica sent)") from None
        owner = eventually(complete, 60, "every model's results complete at one replica", interval_s=0.5)
        print(f"results complete {time.monotonic() - replayed:.1f} s after the replays ended "
              f"({time.monotonic() - started:.1f} s after they started)")
        assert [owner[model].name for model in MODELS] == ["a", "b"], "each model at its own replica"
        for model in MODELS:
            replica = owner[model]
            assert_equals_evaluate(results(replica, model), expected[model])
            other = next(r for r in replicas if r is not replica)
            assert results(other, model) == [], f"{model} has results at replica {other.name} too"
        # The ml.* metrics (the model's output sketches, counts and latencies) went through Kafka as well.
        points = [_accepted_points(replica.telemetry, "kafka/sketches") for replica in replicas]
        print(f"metric points read from Kafka by replica a (since its restart), b: {points}")
        assert points[1] > 0, points
        for replica in replicas:  # all of one model's rows, once, and none of the other's
            found = counters(replica)
            print(f"replica {replica.name}: {({k: v for k, v in found.items() if isinstance(v, int)})}")
            assert found["predictions"] == ROWS and found["labels_joined"] == ROWS, found
            assert found.get("rejected_records", 0) == 0, found
    finally:
        processes.stop_all()
        for name in ("collector-app", "collector-a", "collector-b", "processor-a", "processor-b"):
            print(f"--- {name}.log (tail)\n{processes.tail(name, 12)}")
