"""Processor throughput on one core, and the sketch-only load of ten instrumented applications (issues 12, 13).

The processor runs in its own process, pinned to one CPU (``os.sched_setaffinity``), started from this file's
``--serve`` entry, which builds ``Store`` + ``Processor`` with explicit keyword arguments and runs
``otel_mlmon.processor.server.serve`` (SIGTERM stops it as ``mlmon processor serve`` stops: a tick in progress
stops between windows, the serving loop ends, the store closes; what is left is evaluated after a restart). The
load runs on the other CPU(s).

(a) Acknowledged prediction rows per second over OTLP/HTTP: pre-encoded 4096-row ``ml.predictions`` events of a
    binary classifier (ids, labels, scores; features travel as sketches, not in events) sent back to back over one
    keep-alive connection. Each request's event time is stamped as it is sent (the 8 bytes of ``time_unix_nano``
    patched in the encoded body), so event time advances with the clock, as an application's does; the model is
    windowed by 40,960 rows, so windows close and are evaluated during the load. Reported: rows/s, rows the store
    holds afterwards (loss), peak RSS. (a2) the same with one event time per row (``ml.prediction.time``, rows of
    single-row calls buffered into one event, as the instrumentation sends a serving loop's rows).
(b) Sketch-only: ten application processes, each a scikit-learn model of 100 numeric features under
    ``otel_mlmon.instrument_model`` (no feature capture, no ``reference=``), sketches exported every second
    (``OTEL_PYTHON_MLMON_SKETCH_EXPORT_INTERVAL=1000``), events and sketches over OTLP/HTTP to the processor, whose
    reference profile (built by ``otel_mlmon.batch.runner.build_profile``, as ``mlmon reference build``) windows by
    event time (``--window``, 10 s). Reported: the processor's CPU (% of one core) while the apps run, and per
    window the window-close-to-result latency: the time its results first appear in ``GET /v1/results`` (polled
    every 100 ms) minus (its ``window_end`` + the allowed lateness), i.e. from the moment the watermark can pass the
    window's end. That moment assumes an event arrives as soon as it is made; the apps' buffering (events flushed
    every second, sketches exported after their interval) is inside the figure.

Run: ``python benchmarks/bench_processor.py [--seconds 15] [--parts a,a2,b] [--cpu 1] [--profile-dir DIR]``.
``--profile-dir`` runs cProfile in every thread of the processor process and writes the merged top costs there.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from otel_mlmon import semconv  # noqa: E402
from otel_mlmon.demo.ports import free_port  # noqa: E402

ROWS = 4096
WINDOW = 40_960  # (a): ten requests a window, a multiple of ROWS
SENTINEL_NS = 0x0123456789ABCDEF  # the time_unix_nano of a pre-encoded body, patched when it is sent
PROTOBUF = {"Content-Type": "application/x-protobuf"}


# --- OTLP bodies ---------------------------------------------------------------------------------------------------
def _array(values: list[Any]) -> AnyValue:
    out = AnyValue()
    kind = {float: "double_value", int: "int_value"}.get(type(values[0]), "string_value")
    out.array_value.values.extend(AnyValue(**{kind: v}) for v in values)
    return out


def _event(name: str, time_ns: int, attributes: dict[str, AnyValue]) -> bytes:
    message = ExportLogsServiceRequest()
    record = message.resource_logs.add().scope_logs.add().log_records.add()
    record.event_name = name
    record.time_unix_nano = time_ns
    record.attributes.extend(KeyValue(key=k, value=v) for k, v in attributes.items())
    return message.SerializeToString()


def predictions(model: str, ids: list[str], labels: list[str], scores: list[float], time_ns: int = SENTINEL_NS,
                row_times: list[int] | None = None) -> bytes:
    """An ``ml.predictions`` event of a binary classifier, as the instrumentation sends it."""
    attributes = {semconv.ML_PREDICTION_LABEL: _array(labels), semconv.ML_PREDICTION_SCORE: _array(scores)}
    if row_times is not None:
        attributes[semconv.ML_PREDICTION_TIME] = _array(row_times)
    attributes.update({semconv.ML_MODEL_NAME: AnyValue(string_value=model),
                       semconv.ML_MODEL_VERSION: AnyValue(string_value=""), semconv.ML_PREDICTION_ID: _array(ids)})
    return _event(semconv.EVENT_PREDICTIONS, time_ns, attributes)


def labels(model: str, ids: list[str], truths: list[str], time_ns: int) -> bytes:
    """An ``ml.labels`` event (what ``otel_mlmon.record_labels`` sends)."""
    return _event(semconv.EVENT_LABELS, time_ns, {
        semconv.ML_MODEL_NAME: AnyValue(string_value=model), semconv.ML_MODEL_VERSION: AnyValue(string_value=""),
        semconv.ML_PREDICTION_ID: _array(ids), semconv.ML_LABEL_VALUE: _array(truths)})


def stamp(body: bytes, offset: int, time_ns: int) -> bytes:
    """``body`` with the fixed64 event time at ``offset`` set to ``time_ns``."""
    return body[:offset] + struct.pack("<Q", time_ns) + body[offset + 8:]


def time_offset(body: bytes) -> int:
    offset = body.find(struct.pack("<Q", SENTINEL_NS))
    assert offset > 0 and body.find(struct.pack("<Q", SENTINEL_NS), offset + 1) < 0
    return offset


# --- the processor process -----------------------------------------------------------------------------------------
class Client:
    """One keep-alive HTTP connection to the processor."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.port, self.timeout = port, timeout
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def post(self, path: str, body: bytes) -> int:
        try:
            self.connection.request("POST", path, body, PROTOBUF)
            answer = self.connection.getresponse()
            answer.read()
            return answer.status
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            return 0

    def get(self, path: str) -> Any:
        self.connection.request("GET", path)
        answer = self.connection.getresponse()
        return json.loads(answer.read())


def proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, user + system, of ``pid`` so far; its peak RSS in bytes)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    peak = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmHWM"))
    return cpu, peak * 1024


class ProcessorProcess:
    """``python benchmarks/bench_processor.py --serve ...`` in a subprocess: the processor under test."""

    def __init__(self, store: str, *, cpu: int | None, references: tuple[str, ...] | list[str] = (),
                 log: str | None = None, profile_dir: str | None = None, **options: Any) -> None:
        self.port = free_port()
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", "--store", store, "--port",
                   str(self.port)]
        for path in references:
            command += ["--reference", path]
        if cpu is not None:
            command += ["--serve-cpu", str(cpu)]
        if profile_dir:
            command += ["--profile-dir", profile_dir]
        for key, value in options.items():
            command += [f"--{key.replace('_', '-')}", str(value)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.log = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(command, env=env, stderr=self.log, stdout=self.log)
        self.pid = self.process.pid
        deadline = time.monotonic() + 60
        while True:
            try:
                Client(self.port, 2).get("/healthz")
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the processor did not start (exit {self.process.poll()}); see {log}"
                                       ) from None
                time.sleep(0.1)

    def stat(self) -> tuple[float, int]:
        return proc_stat(self.pid)

    def stop(self, timeout: float = 120.0, stacks_after: float | None = None) -> float:
        """SIGTERM; seconds until the process exited (SIGKILL after ``timeout``: then ``inf``). With
        ``stacks_after``, a process still running that long after SIGTERM (and every 5 s after) writes every
        thread's stack to its log (SIGUSR1: ``faulthandler``), to show what holds the exit up."""
        start = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        deadline = start + timeout
        next_dump = start + stacks_after if stacks_after is not None else float("inf")
        while True:
            try:
                self.process.wait(max(0.01, min(deadline, next_dump) - time.perf_counter()))
                return time.perf_counter() - start
            except subprocess.TimeoutExpired:
                if time.perf_counter() >= deadline:
                    self.process.kill()
                    self.process.wait()
                    return float("inf")
                self.process.send_signal(signal.SIGUSR1)
                next_dump += 5.0

    def __enter__(self) -> ProcessorProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.process.poll() is None:
            self.stop()


def _phase(what: str) -> None:
    """A shutdown step and its time, in the log (what a slow SIGTERM spends its time on)."""
    print(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} {what}", file=sys.stderr, flush=True)


def _mib(path: str) -> float:
    return os.path.getsize(path) / 2**20 if os.path.exists(path) else 0.0


def _serve(args: argparse.Namespace) -> int:
    """The processor under test: Store + Processor with explicit keywords, served until SIGTERM."""
    import asyncio
    import faulthandler
    import logging

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: every thread's stack in the log
    if args.serve_cpu is not None:
        os.sched_setaffinity(0, {args.serve_cpu})
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from otel_mlmon.engine.profile import ReferenceProfile
    from otel_mlmon.processor.server import serve
    from otel_mlmon.processor.service import Processor
    from otel_mlmon.processor.store import Store

    profiles: list[Any] = []
    if args.profile_dir:  # cProfile in every thread (the event loop's and the executor's, started later)
        import cProfile

        def start_profile(*_: Any) -> None:
            sys.setprofile(None)
            profile = cProfile.Profile(time.thread_time)  # CPU time: waits for the GIL or a lock are not costs
            profiles.append(profile)
            profile.enable()

        threading.setprofile(start_profile)
    store = Store(args.store, label_ttl_s=args.label_ttl_s, orphan_ttl_s=args.orphan_ttl_s,
                  max_lateness_s=args.max_lateness_s, retention_s=args.retention_s, max_pending=args.max_pending,
                  max_orphans=args.max_orphans)
    processor = Processor(store, allowed_lateness_s=args.allowed_lateness_s, idle_timeout_s=args.idle_timeout_s,
                          sketch_window_s=args.sketch_window_s, max_future_s=args.max_future_s, sweep_s=args.sweep_s,
                          bootstrap_windows=0, revision_interval_s=args.revision_interval_s)
    for path in args.reference:
        processor.register(ReferenceProfile.load(path))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def stopping() -> None:  # as `mlmon processor serve`: a tick in progress stops between windows
            _phase("SIGTERM received")
            processor.stopping.set()
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping)
        await serve(processor, "127.0.0.1", args.port, args.tick_s, stop)
        _phase("serve returned (tick in progress done, listener closed, requests in flight answered)")

    main_profile = None
    if args.profile_dir:
        import cProfile

        main_profile = cProfile.Profile(time.thread_time)
        main_profile.enable()
    asyncio.run(main())
    wal = args.store + "-wal"
    _phase(f"served (event loop and its executor done); WAL {_mib(wal):.0f} MiB")
    processor.close()
    _phase(f"store closed (WAL {_mib(wal):.0f} MiB after)")
    if main_profile is not None:
        import pstats

        main_profile.disable()
        stats = pstats.Stats(main_profile)
        for profile in profiles:
            stats.add(profile)
        os.makedirs(args.profile_dir, exist_ok=True)
        path = os.path.join(args.profile_dir, f"processor-{os.getpid()}")
        stats.dump_stats(path + ".pstats")
        with open(path + ".txt", "w") as handle:
            stats.stream = handle  # type: ignore[attr-defined]
            stats.sort_stats("tottime").print_stats(40)
            stats.sort_stats("cumulative").print_stats(60)
    return 0


def serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The processor's settings (the defaults are the service's, but bootstrap is off)."""
    group = parser.add_argument_group("the processor process (--serve)")
    group.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    group.add_argument("--store")
    group.add_argument("--port", type=int)
    group.add_argument("--reference", action="append", default=[])
    group.add_argument("--serve-cpu", type=int)
    group.add_argument("--tick-s", type=float, default=1.0)
    group.add_argument("--allowed-lateness-s", type=float, default=30.0)
    group.add_argument("--idle-timeout-s", type=float, default=120.0)
    group.add_argument("--sketch-window-s", type=float, default=3600.0)
    group.add_argument("--max-future-s", type=float, default=300.0)
    group.add_argument("--sweep-s", type=float, default=60.0)
    group.add_argument("--revision-interval-s", type=float, default=30.0)
    group.add_argument("--label-ttl-s", type=float, default=7 * 86400.0)
    group.add_argument("--orphan-ttl-s", type=float, default=86400.0)
    group.add_argument("--max-lateness-s", type=float, default=3600.0)
    group.add_argument("--retention-s", type=float, default=3600.0)
    group.add_argument("--max-pending", type=int, default=10_000_000)
    group.add_argument("--max-orphans", type=int, default=1_000_000)


def load_cpus(processor_cpu: int | None) -> set[int]:
    """The CPUs the load runs on: all but the processor's (all when there is only one)."""
    cpus = os.sched_getaffinity(0)
    return (cpus - {processor_cpu}) or cpus


# --- (a) throughput ------------------------------------------------------------------------------------------------
def throughput(seconds: float, cpu: int | None, folder: str, per_row_times: bool, connections: int,
               profile_dir: str | None) -> dict[str, Any]:
    from otel_mlmon.engine.columns import profile_from_columns
    from otel_mlmon.engine.windows import WindowSpec

    rng = np.random.default_rng(0)
    reference = {"score": rng.beta(2, 2, 50_000), "prediction": rng.integers(0, 2, 50_000).astype(str).astype(object)}
    profile, _ = profile_from_columns(reference, WindowSpec(chunk_size=WINDOW), model="bench")
    profile.columns["score"].role = "score"
    profile.columns["prediction"].role = "prediction"
    profile.classes, profile.score_columns, profile.prediction_column = ["0", "1"], {"1": "score"}, "prediction"
    path = os.path.join(folder, "profile.json")
    profile.save(path)
    tag = "a2" if per_row_times else "a"
    # Pre-encoded, every id new: the clock measures the processor, not the generator.
    count = int(seconds * 120_000 / ROWS) + 10
    now = time.time_ns()
    bodies = []
    for i in range(count):
        ids = [f"p{i * ROWS + j}" for j in range(ROWS)]
        got = [str(v) for v in rng.integers(0, 2, ROWS)]
        scores = [float(v) for v in rng.beta(2, 2, ROWS)]
        # one time per row, 1/60,000 s apart (the planned rate), from the start
        row_times = [now + (i * ROWS + j) * 16_667 for j in range(ROWS)] if per_row_times else None
        bodies.append(predictions("bench", ids, got, scores, row_times=row_times))
    offset = time_offset(bodies[0]) if not per_row_times else None
    with ProcessorProcess(os.path.join(folder, f"{tag}.db"), cpu=cpu, references=[path],
                          log=os.path.join(folder, f"{tag}.log"), allowed_lateness_s=2.0,
                          profile_dir=profile_dir and os.path.join(profile_dir, tag)) as server:
        client = Client(server.port)
        taken = itertools.count()
        acked_by: list[int] = []

        def send() -> None:  # one sender of several, each on its own keep-alive connection (Collector consumers)
            mine, acked = Client(server.port), 0
            while time.perf_counter() - start < seconds:
                i = next(taken)
                if i >= len(bodies):
                    break
                body = bodies[i] if offset is None else stamp(bodies[i], offset, time.time_ns())
                acked += ROWS if mine.post("/v1/logs", body) == 200 else 0
            acked_by.append(acked)

        cpu_before, _ = server.stat()
        start = time.perf_counter()
        senders = [threading.Thread(target=send) for _ in range(connections)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        elapsed = time.perf_counter() - start
        acked = sum(acked_by)
        cpu_after, peak = server.stat()
        health = client.get("/healthz")
        analysis = client.get("/v1/results?model=bench&period=analysis")["results"]
        exit_s = server.stop()
    return {"acked": acked, "elapsed": elapsed, "stored": health.get("predictions", 0),
            "duplicates": health.get("duplicate_predictions", 0), "peak": peak,
            "cpu": (cpu_after - cpu_before) / elapsed, "windows": len({r["window"] for r in analysis}),
            "exit_s": exit_s}


# --- (b) sketch-only -----------------------------------------------------------------------------------------------
FEATURES = 100
APP = textwrap.dedent('''
    """An application serving a scikit-learn model of 100 numeric features, instrumented with otel-mlmon."""
    import os, sys, time
    import numpy as np
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from sklearn.linear_model import LogisticRegression
    import otel_mlmon

    url, seconds, calls_per_s, rows, seed = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), \\
        int(sys.argv[5])
    os.sched_setaffinity(0, {int(c) for c in sys.argv[6].split(",")})
    rng = np.random.default_rng(0)  # the same model in every app
    X = rng.normal(size=(2000, 100))
    model = LogisticRegression(max_iter=200).fit(X, (X[:, 0] + X[:, 1] > 0).astype(int))
    meters = MeterProvider([PeriodicExportingMetricReader(OTLPMetricExporter(f"{url}/v1/metrics"),
                                                          export_interval_millis=1000)])
    logs = LoggerProvider()
    logs.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(f"{url}/v1/logs")))
    model = otel_mlmon.instrument_model(model, name="sketchy", version="", tracer_provider=TracerProvider(),
                                        meter_provider=meters, logger_provider=logs,
                                        feature_names=[f"f{i}" for i in range(100)])
    rng = np.random.default_rng(seed)
    start = time.time()
    calls = 0
    while time.time() - start < seconds:
        model.predict_proba(rng.normal(size=(rows, 100)))
        calls += 1
        pause = start + calls / calls_per_s - time.time()
        if pause > 0:
            time.sleep(pause)
    from otel_mlmon.instrumentation import force_flush
    force_flush()  # the buffered rows and the open sketch interval, before the providers shut down
    logs.shutdown()
    meters.shutdown()
    print(calls * rows)
''')


def _window_end(row: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(row["window_end"]).replace("Z", "+00:00")).timestamp()


def sketch_profile(folder: str, window: str) -> str:
    """A reference profile of the apps' distribution, windowed by event time (as `mlmon reference build`)."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from otel_mlmon.batch.runner import Columns, build_profile
    from otel_mlmon.engine.windows import WindowSpec

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, FEATURES))
    model = LogisticRegression(max_iter=200).fit(X, (X[:, 0] + X[:, 1] > 0).astype(int))
    rows = 20_000
    data = pd.DataFrame(rng.normal(size=(rows, FEATURES)), columns=[f"f{i}" for i in range(FEATURES)])
    data["prediction"] = model.predict(data.to_numpy()).astype(str)
    data["score"] = model.predict_proba(data[[f"f{i}" for i in range(FEATURES)]].to_numpy())[:, 1]
    data["ts"] = pd.to_datetime(1_700_000_000_000_000_000 + np.arange(rows) * 10_000_000, utc=True)  # 100 rows/s
    data.to_parquet(os.path.join(folder, "sketchy.parquet"))
    columns = Columns(timestamp_column="ts", prediction_column="prediction", score_column="score",
                      features=[f"f{i}" for i in range(FEATURES)], task="classification")
    profile, _ = build_profile(os.path.join(folder, "sketchy.parquet"), columns, WindowSpec(window=window), "sketchy")
    path = os.path.join(folder, "sketchy.json")
    profile.save(path)
    return path


def sketch_only(seconds: float, cpu: int | None, folder: str, window: str, apps: int, calls_per_s: float,
                rows_per_call: int, lateness_s: float, profile_dir: str | None) -> dict[str, Any]:
    from otel_mlmon.engine.windows import parse_duration

    path = sketch_profile(folder, window)
    width = parse_duration(window)
    app = os.path.join(folder, "app.py")
    Path(app).write_text(APP)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    children_before = before.ru_utime + before.ru_stime
    cpus = ",".join(map(str, sorted(load_cpus(cpu))))
    with ProcessorProcess(os.path.join(folder, "b.db"), cpu=cpu, references=[path], log=os.path.join(folder, "b.log"),
                          allowed_lateness_s=lateness_s, idle_timeout_s=max(2 * lateness_s, 5.0), tick_s=0.2,
                          profile_dir=profile_dir and os.path.join(profile_dir, "b")) as server:
        url = f"http://127.0.0.1:{server.port}"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}, "PYTHONPATH": str(ROOT),
               "OTEL_PYTHON_MLMON_SKETCH_EXPORT_INTERVAL": "1000", "OTEL_BLRP_SCHEDULE_DELAY": "500"}
        processes = [subprocess.Popen([sys.executable, app, url, str(seconds), str(calls_per_s), str(rows_per_call),
                                       str(i + 1), cpus], env=env, stdout=subprocess.PIPE,
                                      stderr=open(os.path.join(folder, f"app{i}.log"), "wb"))  # noqa: SIM115
                     for i in range(apps)]
        client = Client(server.port)
        seen: dict[int, tuple[float, float]] = {}  # window -> (first seen, window end)
        cpu_before, _ = server.stat()
        started = time.time()
        running = True
        cpu_during = None
        next_window = 0
        while True:
            now = time.time()
            while True:  # the next windows' results, one small query each
                rows = client.get(f"/v1/results?model=sketchy&period=analysis&window={next_window}")["results"]
                if not rows:
                    break
                seen[next_window] = (now, _window_end(rows[0]))
                next_window += 1
            if running and all(p.poll() is not None for p in processes):
                running = False
                elapsed = time.time() - started
                cpu_during = (server.stat()[0] - cpu_before) / elapsed
                ended = time.time()
            if not running and time.time() - ended > max(2 * lateness_s, 5.0) + 3 * lateness_s + 5:
                break
            time.sleep(max(0.0, 0.1 - (time.time() - now)))
        rows_sent = sum(int(p.communicate()[0] or 0) for p in processes)
        apps_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        apps_cpu_s = apps_cpu.ru_utime + apps_cpu.ru_stime - children_before
        health = client.get("/healthz")
        _, peak = server.stat()
        exit_s = server.stop()
    # Windows closed by the watermark while the apps ran (not by the idle timeout after them).
    latencies = {k: first - (end + lateness_s) for k, (first, end) in seen.items() if end + lateness_s < ended - 1.0}
    return {"cpu": cpu_during, "rows": rows_sent, "latencies": latencies, "windows": len(seen), "health": health,
            "peak": peak, "width": width, "seconds": elapsed,
            "apps_cpu": apps_cpu_s / elapsed, "exit_s": exit_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="(a) load seconds; (a2) half, (b) 3x")
    parser.add_argument("--parts", default="a,a2,b")
    parser.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)),
                        help="the CPU the processor is pinned to (-1: not pinned)")
    parser.add_argument("--connections", type=int, default=2, help="(a) concurrent senders")
    parser.add_argument("--window", default="10s", help="(b) the profile's time window")
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--app-calls-per-s", type=float, default=20.0)
    parser.add_argument("--app-rows-per-call", type=int, default=10)
    parser.add_argument("--lateness-s", type=float, default=3.0, help="(b) the processor's allowed lateness")
    parser.add_argument("--workdir", help="keep the stores, profiles and logs here (default: a temporary folder)")
    parser.add_argument("--profile-dir", help="cProfile the processor process; merged top costs written here")
    serve_arguments(parser)
    args = parser.parse_args(argv)
    if args.serve:
        return _serve(args)
    cpu = None if args.cpu < 0 else args.cpu
    os.sched_setaffinity(0, load_cpus(cpu))
    parts = set(args.parts.split(","))
    print(f"processor pinned to CPU {cpu}, load on CPU(s) {sorted(load_cpus(cpu))}; "
          f"load average {os.getloadavg()[0]:.2f} at start ({time.strftime('%Y-%m-%d %H:%M')})")
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.workdir or temporary
        os.makedirs(folder, exist_ok=True)
        for tag, per_row in (("a", False), ("a2", True)):
            if tag not in parts:
                continue
            got = throughput(args.seconds if tag == "a" else args.seconds / 2, cpu, folder, per_row,
                             args.connections, args.profile_dir)
            what = "one time per row (ml.prediction.time)" if per_row else "one time per event"
            print(f"({tag}) {what}: acknowledged {got['acked']:,} prediction rows in {got['elapsed']:.1f} s: "
                  f"{got['acked'] / got['elapsed']:,.0f} rows/s (target >= 50,000); processor CPU "
                  f"{100 * got['cpu']:.0f} % of one core: {got['acked'] / got['elapsed'] / max(got['cpu'], 1e-9):,.0f} "
                  "rows per processor CPU-second (what one core takes when the load saturates it)")
            print(f"     stored {got['stored']:,} rows, duplicates {got['duplicates']}: loss "
                  f"{got['acked'] - got['stored']:,}; {got['windows']} windows of {WINDOW:,} rows evaluated; "
                  f"peak RSS {got['peak'] / 2**20:.0f} MiB; SIGTERM to exit {got['exit_s']:.1f} s")
        if "b" in parts:
            got = sketch_only(3 * args.seconds, cpu, folder, args.window, args.apps, args.app_calls_per_s,
                              args.app_rows_per_call, args.lateness_s, args.profile_dir)
            health = got["health"]
            print(f"(b) sketch-only: {args.apps} apps x {args.app_calls_per_s:g} calls/s x {args.app_rows_per_call} "
                  f"rows x {FEATURES} features for {got['seconds']:.0f} s ({got['rows']:,} rows; "
                  f"{health.get('sketch_points', health.get('points', '?'))} sketch points stored), window "
                  f"{args.window}, allowed lateness {args.lateness_s:g} s")
            print(f"    processor CPU {100 * got['cpu']:.0f} % of one core; peak RSS {got['peak'] / 2**20:.0f} MiB; "
                  f"the apps' CPU {100 * got['apps_cpu']:.0f} % of one core (all ten, their setup included); "
                  f"SIGTERM to exit {got['exit_s']:.1f} s")
            latencies = got["latencies"]
            if latencies:
                print("    window-close-to-result latency (s), per window closed by the watermark: "
                      + ", ".join(f"{v:.2f}" for v in latencies.values())
                      + f"; max {max(latencies.values()):.2f} (target <= 5 s)")
            print(f"    {got['windows']} windows evaluated in all; counters: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(health.items()) if isinstance(v, int) and v))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
