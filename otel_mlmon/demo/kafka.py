"""The demo stack with Kafka between the Collector and the processors (``mlmon demo --stack --kafka``, issue 17):
the same model service, Prometheus, Alertmanager and Jaeger as :mod:`otel_mlmon.demo.stack`, and

    Collector (the cloud build: collector/otelcol-config.yaml + collector/examples/kafka-pipeline.yaml)
        --kafka exporter, OTLP protobuf, one partition per model--> Kafka (scripts/kafka.sh: one KRaft broker on
        loopback; topics otel-mlmon-events and otel-mlmon-sketches, PARTITIONS partitions each)
        --> one Collector per processor replica (collector/examples/kafka-processor.yaml: kafka receivers, a
            message's offset committed only after the processor acknowledged it)
            --OTLP/gRPC, gzip, TLS + bearer token--> its processor
    each processor's results and alerts --> the main Collector, Prometheus and Alertmanager, as without Kafka.

Replicas are named a, b, …; with two, the range assignor gives each one partition of both topics, so each model's
data reaches one processor (the demo's one model: one of them). Needs, beyond the stack's programs, Java 17+ (the
broker; its jars come from Maven Central once, with Maven) and the cloud Collector (``collector/build.sh
--cloud``): :func:`find_kafka` says which is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from otel_mlmon.demo.ports import free_port
from otel_mlmon.demo.stack import MODEL, REPO, NativeStack, _cached

TOPICS = ("otel-mlmon-events", "otel-mlmon-sketches")  # as collector/examples/kafka-pipeline.yaml names them
GROUPS = TOPICS  # the consumer group of each topic (collector/examples/kafka-processor.yaml)
PARTITIONS = 2  # per topic: the most replicas that get a share (each model's data is in one partition)
REPLICA_NAMES = "ab"


def _kafka_jars_cached(script: Path) -> bool:
    """Whether scripts/kafka.sh has the broker's jars already (then Maven is not needed)."""
    default = re.search(r'version="\$\{KAFKA_VERSION:-([^}]+)\}"', script.read_text())
    version = os.environ.get("KAFKA_VERSION") or (default.group(1) if default else "")
    cache = os.environ.get("MLMON_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "otel-mlmon")
    return os.path.isfile(os.path.join(cache, f"kafka-{version}", "lib", ".complete"))


def find_kafka(repo: Path = REPO) -> tuple[str | None, str]:
    """The cloud Collector's path (it has the kafka components), or None and one line saying what is missing and
    how to get it: Java for the broker, Maven when the broker's jars are not fetched yet, the cloud build."""
    missing = []
    if shutil.which("java") is None:
        missing.append("Java 17 or newer for the Kafka broker (apt-get install openjdk-17-jre-headless)")
    script = repo / "scripts" / "kafka.sh"
    if script.is_file() and not _kafka_jars_cached(script) and shutil.which("mvn") is None:
        missing.append("Maven, to fetch Kafka's jars from Maven Central once (apt-get install maven)")
    collector = (os.environ.get("MLMON_OTELCOL_CLOUD") or shutil.which("otelcol-mlmon-cloud")
                 or _cached("otelcol-mlmon-cloud"))
    if collector is None:
        missing.append(f"the cloud Collector build, which has the kafka components (run "
                       f"{repo / 'collector' / 'build.sh'} --cloud, or set MLMON_OTELCOL_CLOUD)")
    if missing:
        return None, "mlmon demo --stack --kafka needs " + "; and ".join(missing)
    return collector, ""


@dataclass
class Offsets:
    """One partition of a consumer group, as the broker has it."""

    topic: str
    partition: int
    committed: int | None  # None: the group committed nothing there yet
    end: int  # the partition's log-end offset: how many messages it holds

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)


@dataclass
class KafkaStack(NativeStack):
    """:class:`NativeStack` with Kafka between the Collector and ``replicas`` processors (1 or 2)."""

    kafka_collector: str = ""  # the cloud Collector build: the main Collector and each replica's
    replicas: int = 1

    STOP_ORDER: ClassVar[tuple[str, ...]] = (
        "model", "collector-kafka", "processor", "collector", "kafka", "jaeger", "prometheus", "alertmanager")

    def __post_init__(self) -> None:
        if not 1 <= self.replicas <= len(REPLICA_NAMES):
            raise ValueError(f"replicas must be 1 to {len(REPLICA_NAMES)} (each model's data is in one of "
                             f"{PARTITIONS} partitions), got {self.replicas}")
        if not self.kafka_collector:
            raise ValueError("kafka_collector: the cloud Collector build's path (collector/build.sh --cloud)")
        super().__post_init__()
        self.binaries.collector = self.kafka_collector  # the cloud build also has every core component
        self.ports.update(kafka=free_port(), kafka_controller=free_port())
        for replica in self.replica_names():
            for name in ("processor_grpc", "processor_http", "health", "collector_telemetry"):
                self.ports[f"{name}_{replica}"] = free_port()

    def replica_names(self) -> list[str]:
        return list(REPLICA_NAMES[: self.replicas])

    def processor_apis(self) -> list[str]:
        return [f"processor_http_{replica}" for replica in self.replica_names()]

    @property
    def brokers(self) -> str:
        return f"127.0.0.1:{self.ports['kafka']}"

    def kafka_script(self, *args: str, timeout_s: float = 120.0) -> str:
        """Run scripts/kafka.sh with ``args`` (its output in kafka-tools.log too); its stdout."""
        done = subprocess.run([str(self.repo / "scripts" / "kafka.sh"), *args], capture_output=True, text=True,
                              timeout=timeout_s, cwd=self.folder)
        with open(self.folder / "kafka-tools.log", "a") as log:
            log.write(f"$ kafka.sh {' '.join(args)}\n{done.stdout}{done.stderr}")
        if done.returncode != 0:
            raise RuntimeError(f"scripts/kafka.sh {' '.join(args)} exited with {done.returncode}: "
                               f"{done.stderr.strip()[-2000:]}")
        return done.stdout

    # --- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """The broker first (a JVM: it boots while the rest starts), the stack's backends and processors, the
        topics, the main Collector writing to Kafka, one Collector per replica reading it, the model service."""
        if not self.inputs:
            self.prepare()
        from otel_mlmon.demo.credentials import write_secrets

        self.secrets = write_secrets(self.folder / "secrets")
        self._spawn("kafka", [str(self.repo / "scripts" / "kafka.sh"), "serve", str(self.folder / "kafka"),
                              str(self.ports["kafka"]), str(self.ports["kafka_controller"])])
        self._start_alertmanager()
        self._start_prometheus()
        self._start_processor()
        # The first run fetches the broker's jars from Maven Central (a minute or two); later ones boot in seconds.
        self._wait("kafka", lambda: "Kafka Server started" in (self.folder / "kafka.log").read_text(
            errors="replace"), timeout_s=600)
        self._create_topics()
        if self.binaries.jaeger:
            self._start_jaeger()
        self._start_collector()
        self._start_kafka_collectors()
        self._start_model()

    def _create_topics(self) -> None:
        # One JVM each, side by side.
        creating = [subprocess.Popen([str(self.repo / "scripts" / "kafka.sh"), "topic", str(self.ports["kafka"]),
                                      topic, str(PARTITIONS)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, cwd=self.folder) for topic in TOPICS]
        for topic, process in zip(TOPICS, creating):
            output, _ = process.communicate(timeout=120)
            with open(self.folder / "kafka-tools.log", "a") as log:
                log.write(f"$ kafka.sh topic {topic}\n{output}")
            if process.returncode != 0:
                raise RuntimeError(f"creating the Kafka topic {topic} failed: {output.strip()[-2000:]}")

    def _start_processor(self, name: str = "processor", grpc: str = "processor_grpc",
                         http: str = "processor_http") -> None:
        """Every replica's processor, or the one ``name`` (processor-a, …) when restarted."""
        for replica in self.replica_names():
            if name in ("processor", f"processor-{replica}"):
                super()._start_processor(f"processor-{replica}", f"processor_grpc_{replica}",
                                         f"processor_http_{replica}")

    def collector_overlays(self) -> list[Path]:
        return [self.repo / "collector" / "examples" / "kafka-pipeline.yaml"]

    def collector_env(self) -> dict[str, str]:
        # The main config's processor exporter is unused with the overlay (its endpoint: replica a's processor).
        return {**super().collector_env(), "KAFKA_BROKERS": self.brokers,
                "MLMON_PROCESSOR_ENDPOINT": f"127.0.0.1:{self.ports['processor_grpc_a']}"}

    def _start_kafka_collectors(self) -> None:
        assert self.secrets is not None
        token, certs = self.secrets
        for replica in self.replica_names():
            name = f"collector-kafka-{replica}"
            self._spawn(name, [self.kafka_collector,
                               f"--config={self.repo / 'collector' / 'examples' / 'kafka-processor.yaml'}"], env={
                "KAFKA_BROKERS": self.brokers, "MLMON_REPLICA": replica,
                "MLMON_PROCESSOR_ENDPOINT": f"127.0.0.1:{self.ports[f'processor_grpc_{replica}']}",
                "MLMON_PROCESSOR_TOKEN_FILE": str(token), "MLMON_PROCESSOR_CA_FILE": str(certs.ca),
                "MLMON_HEALTH_ENDPOINT": f"127.0.0.1:{self.ports[f'health_{replica}']}",
                "MLMON_COLLECTOR_TELEMETRY_HOST": "127.0.0.1",
                "MLMON_COLLECTOR_TELEMETRY_PORT": str(self.ports[f"collector_telemetry_{replica}"])})
            health = self.url(f"health_{replica}")
            self._wait(name, lambda: urllib.request.urlopen(health, timeout=2).status == 200)  # noqa: B023

    # --- what the broker holds ---------------------------------------------------------------------------
    def offsets(self, group: str) -> list[Offsets]:
        """A consumer group's committed and log-end offsets per partition, from the broker (kafka-consumer-groups
        --describe: one JVM, a few seconds)."""
        found = []
        for line in self.kafka_script("offsets", str(self.ports["kafka"]), group).splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[0] == group and parts[2].isdigit():
                found.append(Offsets(parts[1], int(parts[2]), int(parts[3]) if parts[3].isdigit() else None,
                                     int(parts[4])))
        return sorted(found, key=lambda o: (o.topic, o.partition))

    def holders(self) -> list[str]:
        """The replicas whose processor has analysis results of the demo's model (each has its reference's)."""
        query = "/v1/results?" + urllib.parse.urlencode({"model": MODEL, "period": "analysis"})
        return [replica for replica in self.replica_names()
                if self.processor_api(query, f"processor_http_{replica}")["results"]]

    def offset_lines(self) -> list[str]:
        """Which processor has the model's results, then one line per consumer group: the messages in its topic,
        those committed (processed), the lag."""
        holders = self.holders()
        lines = [f"Kafka: {MODEL}'s results are at processor {' and '.join(holders) or 'none'} of "
                 f"{self.replicas} (all of a model's data is in one partition of each topic)"]
        for group in GROUPS:
            found = self.offsets(group)
            parts = ", ".join(f"partition {o.partition}: {o.committed if o.committed is not None else '-'}/{o.end}"
                              for o in found)
            lines.append(f"Kafka: consumer group {group} committed {sum(o.committed or 0 for o in found)} of "
                         f"{sum(o.end for o in found)} messages, lag {sum(o.lag for o in found)} ({parts})")
        return lines
