"""Processor throughput behind Kafka: 1 vs 2 processor replicas, side by side in one run (issue 17, item 4).

The pipeline of collector/examples/kafka-pipeline.yaml and kafka-processor.yaml, for real, on loopback: the
application's Collector (the cloud build) writes the ml.* events and metrics to two topics of two partitions on a
single-node KRaft broker (scripts/kafka.sh), keyed by model; each processor replica reads its partitions through
its own Collector (offsets committed after the processor acknowledged) and its processor (TLS + token, a SQLite
store). The load is 4 models (MODELS: each of 2 replicas gets 2), each `mlmon replay`-ed into the
application's Collector over OTLP/HTTP (the path an instrumented service takes), in two phases per configuration:

1. **Throughput (a backlog)**: the replicas' Collectors are stopped while every model replays ``--rows``
   predictions and their labels into Kafka as fast as the replays go; then the replicas' Collectors start and
   drain it. rows/s = predictions + labels stored across the processors / seconds from the first row stored to
   the last (the consumer's start and group join apart; "from start" includes them).
2. **End-to-end lag (live)**: every model replays ``--live-rows`` more at ``--rate`` rows/s in calls of 25 rows
   (labels 1 s later) with the consumers running. Lag = from the moment a prediction call was due on the replay's
   schedule (its start + the call's first row / rate: an application predicting at that rate) to its row stored
   in a processor (the store's received_ns), over every live prediction, read from the stores. Replay stamps a
   call's rows with its start time + the call's first row number in ns (no timestamp column), which gives the
   call's first row; the SDK's batch processor exports every 200 ms.

Each configuration gets a fresh broker, fresh stores and the same load. Printed: one line per configuration,
the 2-vs-1 ratios, which models each replica got, and the machine's load average (the machine is shared: figures
move with it).

Run: ``PYTHONPATH=. python benchmarks/bench_kafka.py [--rows N] [--live-rows N] [--rate R] [--replicas 1,2]``.
Needs Java 17+ (and Maven, once, for the broker's jars) and the cloud Collector (collector/build.sh --cloud).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
KAFKA = REPO / "scripts" / "kafka.sh"
TOPICS = ("otel-mlmon-events", "otel-mlmon-sketches")
# Their keys (the hash of the resource {ml.model.name: name}) put churn and fraud in partition 0, credit and pricing
# in partition 1 (as are retention and spam; ranking and upsell in 0): with 2 replicas each gets two models (the
# run prints the split it saw).
MODELS = ("churn", "credit", "fraud", "pricing")
FLAGS = ["--id-column", "id", "--target-column", "target", "--prediction-column", "prediction", "--score-column",
         "score", "--chunk-size", "2000"]


def _free_port() -> int:
    from otel_mlmon.demo.ports import free_port

    return free_port()


def _frame(n: int, seed: int, model: str, phase: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"age": rng.normal(40, 10, n), "income": rng.lognormal(10, 0.5, n),
                          "tenure": rng.exponential(20, n),
                          "plan": rng.choice(["basic", "gold", "platinum"], n, p=[0.6, 0.3, 0.1])})
    score = 1 / (1 + np.exp(-(frame["age"] - 40) / 10))
    frame["score"] = score
    frame["prediction"] = (score > 0.5).astype(int)
    frame["target"] = (rng.random(n) < score).astype(int)
    frame["id"] = [f"{model}-{phase}-{i:07d}" for i in range(n)]
    return frame


def prepare(folder: Path, rows: int, live_rows: int, models: list[str]) -> dict[str, dict[str, Path]]:
    """Per model: its reference profile, the backlog's and the live phase's analysis files."""
    from otel_mlmon import cli

    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Path]] = {}
    for number, model in enumerate(models):
        paths = {"profile": folder / f"{model}-profile.json", "backlog": folder / f"{model}-backlog-{rows}.parquet",
                 "live": folder / f"{model}-live-{live_rows}.parquet"}
        if not paths["profile"].exists():
            reference = folder / f"{model}-reference.parquet"
            _frame(4000, 100 * number, model, "reference").to_parquet(reference)
            assert cli.main(["reference", "build", "--data", str(reference), "--model", model, "--version", "1",
                             *FLAGS, "--output", str(paths["profile"])]) == 0
        for phase, n in (("backlog", rows), ("live", live_rows)):
            if not paths[phase].exists():
                _frame(n, 100 * number + len(phase), model, phase).to_parquet(paths[phase])
        files[model] = paths
    return files


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = check()
            if found:
                return found
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(interval_s)
    raise RuntimeError(f"{what}: not within {timeout_s:.0f} s")


@dataclass
class Processes:
    """Subprocesses of one configuration, each logging to ``folder/<name>.log``."""

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
        if process.poll() is not None:
            log = (self.folder / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log}")
        return True

    def stop_all(self) -> None:
        for name in reversed(list(self.running)):
            process = self.running.pop(name)
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


def _metric(port: int, name: str, **labels: str) -> float:
    """The sum of a Collector's own metric ``name`` over the series with ``labels``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + "_total{")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run(replicas: int, files: dict[str, dict[str, Path]], folder: Path, collector: str, rows: int,
        live_rows: int, rate: float) -> dict[str, Any]:
    """One configuration: a fresh broker, ``replicas`` processors; both phases. The figures, as a dict."""
    from otel_mlmon.demo.credentials import write_secrets

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    processes = Processes(folder)
    token, certs = write_secrets(folder / "secrets")
    context = ssl.create_default_context(cafile=str(certs.ca))
    names = "ab"[:replicas]
    ports = {name: _free_port() for name in ("kafka", "controller", "otlp_grpc", "otlp_http", "results_grpc",
                                             "results_http", "prometheus", "app_health", "app_telemetry")}
    for replica in names:
        for what in ("grpc", "http", "health", "telemetry"):
            ports[f"{what}_{replica}"] = _free_port()

    def counters(replica: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"https://127.0.0.1:{ports[f'http_{replica}']}/healthz", timeout=5,
                                    context=context) as answer:
            found: dict[str, Any] = json.loads(answer.read())
        return found

    def stored() -> int:  # predictions and labels joined, across the processors
        return sum(int(c.get("predictions", 0)) + int(c.get("labels_joined", 0)) for c in map(counters, names))

    def healthy(port: int, name: str) -> bool:
        processes.alive(name)
        return bool(urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=2).status == 200)

    def replay(phase: str, extra: list[str], env: dict[str, str], batch_rows: int = 200) -> float:
        started = time.monotonic()
        for model in files:
            processes.start(f"replay-{phase}-{model}", [
                sys.executable, "-m", "otel_mlmon.cli", "replay", "--analysis", str(files[model][phase]),
                "--model", model, "--version", "1", *FLAGS, "--endpoint", f"http://127.0.0.1:{ports['otlp_http']}",
                "--batch-rows", str(batch_rows), *extra], {"OTEL_SERVICE_NAME": f"{model}-service", **env})
        for model in files:
            process = processes.running[f"replay-{phase}-{model}"]
            if process.wait(900) != 0:
                raise RuntimeError((folder / f"replay-{phase}-{model}.log").read_text()[-3000:])
        return time.monotonic() - started

    try:
        processes.start("kafka", [str(KAFKA), "serve", str(folder / "broker"), str(ports["kafka"]),
                                  str(ports["controller"])], {})
        for replica in names:
            processes.start(f"processor-{replica}", [
                sys.executable, "-m", "otel_mlmon.cli", "processor", "serve",
                "--grpc-endpoint", f"127.0.0.1:{ports[f'grpc_{replica}']}",
                "--http-endpoint", f"127.0.0.1:{ports[f'http_{replica}']}",
                "--store", str(folder / f"processor-{replica}.db"),
                *(flag for model in files for flag in ("--reference", str(files[model]["profile"]))),
                "--auth-token-file", str(token), "--tls-cert", str(certs.server_cert), "--tls-key",
                str(certs.server_key)], {
                "OTEL_SERVICE_NAME": f"mlmon-processor-{replica}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ports['results_grpc']}"})
        wait_for(lambda: processes.alive("kafka") and "Kafka Server started" in (folder / "kafka.log").read_text(
            errors="replace"), 600, "the Kafka broker")
        creating = [subprocess.run([str(KAFKA), "topic", str(ports["kafka"]), topic, "2"], capture_output=True,
                                   text=True, timeout=120) for topic in TOPICS]
        for done in creating:
            if done.returncode != 0:
                raise RuntimeError(f"creating a topic failed: {done.stdout}{done.stderr}")
        for replica in names:
            wait_for(lambda replica=replica: counters(replica)["status"] == "ok", 120,  # type: ignore[misc]
                     f"processor {replica}")
        processes.start("collector-app", [
            collector, f"--config={REPO / 'collector' / 'otelcol-config.yaml'}",
            f"--config={REPO / 'collector' / 'examples' / 'kafka-pipeline.yaml'}"], {
            "KAFKA_BROKERS": f"127.0.0.1:{ports['kafka']}",
            "MLMON_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['otlp_grpc']}",
            "MLMON_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports['otlp_http']}",
            "MLMON_RESULTS_GRPC_ENDPOINT": f"127.0.0.1:{ports['results_grpc']}",
            "MLMON_RESULTS_HTTP_ENDPOINT": f"127.0.0.1:{ports['results_http']}",
            "MLMON_PROMETHEUS_EXPORTER_ENDPOINT": f"127.0.0.1:{ports['prometheus']}",
            "MLMON_COLLECTOR_TELEMETRY_HOST": "127.0.0.1",
            "MLMON_COLLECTOR_TELEMETRY_PORT": str(ports["app_telemetry"]),
            "MLMON_HEALTH_ENDPOINT": f"127.0.0.1:{ports['app_health']}", "MLMON_QUEUE_DIR": str(folder / "queue"),
            "MLMON_PROCESSOR_TOKEN_FILE": str(token), "MLMON_JAEGER_ENDPOINT": f"127.0.0.1:{_free_port()}"})
        wait_for(lambda: healthy(ports["app_health"], "collector-app"), 120, "the application's Collector")

        # 1. The backlog: into Kafka with nobody reading, then drained by the replicas.
        produce_s = replay("backlog", ["--label-delay", "0"], {})

        def drained() -> bool:  # the application's Collector sent everything it accepted to Kafka
            queued = _metric(ports["app_telemetry"], "otelcol_exporter_queue_size", exporter="kafka/mlmon")
            sent = _metric(ports["app_telemetry"], "otelcol_exporter_sent_log_records", exporter="kafka/mlmon")
            accepted = _metric(ports["app_telemetry"], "otelcol_receiver_accepted_log_records")
            return queued == 0 and sent >= accepted > 0

        wait_for(drained, 300, "the backlog in Kafka")
        total = 2 * rows * len(files)
        started = time.monotonic()
        for replica in names:
            processes.start(f"collector-{replica}", [
                collector, f"--config={REPO / 'collector' / 'examples' / 'kafka-processor.yaml'}"], {
                "KAFKA_BROKERS": f"127.0.0.1:{ports['kafka']}", "MLMON_REPLICA": replica,
                "MLMON_PROCESSOR_ENDPOINT": f"127.0.0.1:{ports[f'grpc_{replica}']}",
                "MLMON_PROCESSOR_TOKEN_FILE": str(token), "MLMON_PROCESSOR_CA_FILE": str(certs.ca),
                "MLMON_HEALTH_ENDPOINT": f"127.0.0.1:{ports[f'health_{replica}']}",
                "MLMON_COLLECTOR_TELEMETRY_HOST": "127.0.0.1",
                "MLMON_COLLECTOR_TELEMETRY_PORT": str(ports[f"telemetry_{replica}"])})
        first = wait_for(lambda: stored() > 0 and time.monotonic(), 300, "the first row stored", 0.05)
        while (count := stored()) < total:
            for replica in names:
                processes.alive(f"collector-{replica}")
            if time.monotonic() - started > 900:
                raise RuntimeError(f"only {count} of {total} rows stored after 900 s")
            time.sleep(0.1)
        drained_at = time.monotonic()

        # 2. Live: the consumers keep up (or not) with a fixed rate; lag from the stores.
        replay("live", ["--rate", str(rate), "--label-delay", "1"], {"OTEL_BLRP_SCHEDULE_DELAY": "200"}, 25)
        wait_for(lambda: stored() >= 2 * (rows + live_rows) * len(files), 300, "every live row stored")
        lags: list[np.ndarray] = []
        split: dict[str, dict[str, int]] = {}
        for replica in names:
            with sqlite3.connect(f"file:{folder / f'processor-{replica}.db'}?mode=ro", uri=True) as store:
                live = pd.DataFrame(store.execute(
                    "SELECT m.model, p.time_ns, p.received_ns FROM predictions p JOIN models m USING (sid) "
                    "WHERE p.id LIKE '%-live-%'").fetchall(), columns=["model", "time_ns", "received_ns"])
                for _, rows_of in live.groupby("model"):
                    start = rows_of["time_ns"].min()  # the replay's start: its first call's first row is row 0
                    due = start + (rows_of["time_ns"] - start) * (1e9 / rate)
                    lags.append((rows_of["received_ns"] - due).to_numpy())
                split[replica] = dict(store.execute(
                    "SELECT m.model, count(*) FROM predictions p JOIN models m USING (sid) GROUP BY m.model"))
        lag_s = np.concatenate(lags).astype(np.float64) / 1e9
        return {"replicas": replicas, "rows": total, "produce_s": produce_s, "start_to_first_s": first - started,
                "drain_s": drained_at - first, "rows_per_s": total / (drained_at - first),
                "rows_per_s_from_start": total / (drained_at - started), "live_offered": 2 * rate * len(files),
                "lag_p50_s": float(np.percentile(lag_s, 50)), "lag_p99_s": float(np.percentile(lag_s, 99)),
                "lag_max_s": float(lag_s.max()), "lag_rows": len(lag_s), "split": split,
                "load": os.getloadavg()}
    finally:
        processes.stop_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="backlog predictions per model (and as many "
                        "labels; default 20000)")
    parser.add_argument("--live-rows", type=int, default=3_000, help="live predictions per model (default 3000)")
    parser.add_argument("--rate", type=float, default=150.0, help="live rows/s per model (default 150)")
    parser.add_argument("--replicas", default="1,2", help="configurations, comma-separated (default 1,2)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"model names, comma-separated (default "
                        f"{','.join(MODELS)}: two in each partition)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "mlmon-bench-kafka"))
    args = parser.parse_args(argv)
    from otel_mlmon.demo.kafka import find_kafka

    collector, missing = find_kafka(REPO)
    if collector is None:
        print(f"bench_kafka: {missing}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir)
    files = prepare(workdir / "data", args.rows, args.live_rows, args.models.split(","))
    print(f"{len(files)} models x {args.rows} predictions + {args.rows} labels (backlog), then x {args.live_rows} "
          f"at {args.rate:g} rows/s each (live); machine: {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the start", flush=True)
    print(f"{'replicas':>8}{'rows':>9}{'drain s':>9}{'rows/s':>9}{'from start':>11}{'live/s':>8}"
          f"{'lag p50':>9}{'p99':>7}{'max':>7}  models per replica (predictions), load average", flush=True)
    figures = []
    for replicas in map(int, args.replicas.split(",")):
        found = run(replicas, files, workdir / f"replicas-{replicas}", collector, args.rows, args.live_rows,
                    args.rate)
        figures.append(found)
        split = "; ".join(f"{replica}: " + ", ".join(f"{m} {n}" for m, n in sorted(models.items()))
                          for replica, models in found["split"].items())
        print(f"{replicas:>8}{found['rows']:>9}{found['drain_s']:>9.1f}{found['rows_per_s']:>9,.0f}"
              f"{found['rows_per_s_from_start']:>11,.0f}{found['live_offered']:>8,.0f}{found['lag_p50_s']:>8.2f}s"
              f"{found['lag_p99_s']:>6.2f}s{found['lag_max_s']:>6.2f}s  {split}; load {found['load'][0]:.1f}",
              flush=True)
    if len(figures) == 2:
        one, two = figures
        print(f"{two['replicas']} vs {one['replicas']} replicas: throughput "
              f"x{two['rows_per_s'] / one['rows_per_s']:.2f} "
              f"(x{two['rows_per_s_from_start'] / one['rows_per_s_from_start']:.2f} from the consumers' start), "
              f"live lag p50 x{two['lag_p50_s'] / one['lag_p50_s']:.2f}, "
              f"p99 x{two['lag_p99_s'] / one['lag_p99_s']:.2f}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
