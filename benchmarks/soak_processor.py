"""Processor soak: sustained predictions and their labels on one core, with pruning, then SIGTERM and a restart.

The processor runs pinned to one CPU (``bench_processor.py --serve``: ``Store`` + ``Processor`` with explicit
keywords), with short TTLs so that pruning runs: label TTL, max lateness and retention ``--ttl-s`` (60 s) each,
a sweep every 30 s. The load runs on the other CPU(s): ``ml.predictions`` events of 4096 rows (ids, labels,
scores of a binary classifier; event time = send time) paced at ``--rate`` rows/s (25,000), and for each of them an
``ml.labels`` event of the same ids ``--label-delay-s`` (3 s) later, each stream on its own keep-alive connection.
The model's reference profile windows by event time (``--window``, 10 s); the allowed lateness is
``--lateness-s`` (5 s, more than the label delay, so a window's labels are in when it closes).

Reported: acknowledged rows/s, labels joined, windows closed by the watermark vs windows evaluated, p50/p99/max
window-close-to-result latency (a window's results first seen in ``GET /v1/results``, polled every 100 ms, minus
its ``window_end`` + the allowed lateness), peak RSS, the store's file size (+ WAL) over time. Then SIGTERM while
the load runs: seconds to exit; a restart on the same store (no load): the windows left unevaluated are evaluated
(the model is idle, so every window closes), and every acknowledged row and joined label is counted in a window.

Run: ``python benchmarks/soak_processor.py [--minutes 10] [--rate 25000] [--profile-dir DIR]``.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_processor import (
    ROWS,
    SENTINEL_NS,
    Client,
    ProcessorProcess,
    _window_end,
    labels,
    load_cpus,
    predictions,
    stamp,
    time_offset,
)

MODEL = "soak"
SECOND = 1_000_000_000
BACKOFF_S = 0.5  # after a request that got no answer (connection refused, or none within 30 s)


def reference(folder: str, window: str) -> str:
    """A time-windowed profile of the load's distribution (as ``mlmon reference build --window``)."""
    import pandas as pd

    from otel_mlmon.batch.runner import Columns, build_profile
    from otel_mlmon.engine.windows import WindowSpec

    rng = np.random.default_rng(0)
    rows = 50_000
    score = rng.beta(2, 2, rows)
    data = pd.DataFrame({"score": score, "prediction": (score >= 0.5).astype(int).astype(str),
                         "target": (rng.random(rows) < score).astype(int).astype(str),
                         "ts": pd.to_datetime(1_700_000_000 * SECOND + np.arange(rows) * 10_000_000, utc=True)})
    data.to_parquet(os.path.join(folder, "soak.parquet"))
    columns = Columns(timestamp_column="ts", prediction_column="prediction", score_column="score",
                      target_column="target", features=[], task="classification")
    profile, _ = build_profile(os.path.join(folder, "soak.parquet"), columns, WindowSpec(window=window), MODEL)
    path = os.path.join(folder, "soak.json")
    profile.save(path)
    return path


class Load:
    """Predictions at ``rate`` rows/s and their labels ``delay_s`` later, on two connections, until stopped.

    A third thread encodes the bodies a few requests ahead (event times patched in as each is sent, ``stamp``): the
    senders then wait only for the processor. When each sender built its own next body (18 ms for predictions,
    10 ms for labels) the processor sat idle meanwhile, and the soak measured its client as much as the processor.
    """

    AHEAD = 4  # requests encoded ahead

    def __init__(self, port: int, rate: float, delay_s: float) -> None:
        self.port, self.rate, self.delay_s = port, rate, delay_s
        self.stop = threading.Event()
        self.bodies: queue.Queue[tuple[bytes, int, bytes, int, int]] = queue.Queue(self.AHEAD)
        self.labels: collections.deque[tuple[float, bytes, int, int]] = collections.deque()
        self.acked_predictions = self.acked_labels = self.refused = 0
        self.statuses: collections.Counter[int] = collections.Counter()  # of prediction requests (0: no answer)
        self.windows: collections.Counter[int] = collections.Counter()  # event second -> acked rows
        self.first_ns = self.last_ns = 0
        self.post_s: dict[str, list[float]] = {"predictions": [], "labels": []}  # seconds per acknowledged request
        self.behind_s = 0.0  # the predictions thread's lag behind its schedule at the end
        self.threads = [threading.Thread(target=self._build, daemon=True), threading.Thread(target=self._predictions),
                        threading.Thread(target=self._labels)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads[1:]:
            thread.join()

    def _build(self) -> None:
        rng = np.random.default_rng(1)
        for sent in itertools.count():
            ids = [f"r{sent * ROWS + j:012d}" for j in range(ROWS)]
            score = rng.beta(2, 2, ROWS)
            truth = [str(v) for v in (rng.random(ROWS) < score).astype(int)]
            body = predictions(MODEL, ids, [str(v) for v in (score >= 0.5).astype(int)], score.tolist())
            label_body = labels(MODEL, ids, truth, SENTINEL_NS)
            item = (body, time_offset(body), label_body, time_offset(label_body), len(ids))
            while not self.stop.is_set():
                try:
                    self.bodies.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self.stop.is_set():
                return

    def _predictions(self) -> None:
        client = Client(self.port, 30)
        start, sent = time.monotonic(), 0
        while not self.stop.is_set():
            due = start + sent * ROWS / self.rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                body, offset, label_body, label_offset, rows = self.bodies.get(timeout=1.0)
            except queue.Empty:
                continue
            now = time.time_ns()
            sent += 1
            posted = time.monotonic()
            status = client.post("/v1/logs", stamp(body, offset, now))
            self.statuses[status] += 1
            self.behind_s = time.monotonic() - (start + sent * ROWS / self.rate)
            if status == 0:  # no connection (the processor stopped): back off as an OTLP exporter does. Without
                # it this thread, behind its schedule, retried at once, built a body after body at real-time
                # priority and starved the thread that timed the processor's exit (SIGTERM "took" 50 s).
                time.sleep(BACKOFF_S)
            if status == 200:
                self.post_s["predictions"].append(time.monotonic() - posted)
                self.acked_predictions += rows
                self.windows[now // SECOND] += rows
                self.first_ns = self.first_ns or now
                self.last_ns = now
                self.labels.append((time.monotonic() + self.delay_s, label_body, label_offset, rows))
            else:
                self.refused += rows

    def _labels(self) -> None:
        client = Client(self.port, 30)
        while not self.stop.is_set():
            if not self.labels or self.labels[0][0] > time.monotonic():
                time.sleep(0.01)
                continue
            _, body, offset, rows = self.labels.popleft()
            posted = time.monotonic()
            status = client.post("/v1/logs", stamp(body, offset, time.time_ns()))
            if status == 200:
                self.post_s["labels"].append(time.monotonic() - posted)
                self.acked_labels += rows
            elif status == 0:
                time.sleep(BACKOFF_S)


def host_speed_us() -> float:
    """Microseconds of ``sum(range(100))``, best of 5 (the machine of the day varies: figures of different runs
    compare through it)."""
    import timeit

    return min(timeit.repeat("sum(range(100))", number=200_000, repeat=5)) / 200_000 * 1e6


def wal_pending(path: str) -> tuple[int, int]:
    """(WAL file bytes, bytes of WAL frames not yet checkpointed into the database): what the last connection to
    close has to copy and sync. Read from the WAL index (``-shm``: mxFrame at byte 16, nBackfill at byte 96)."""
    import struct

    try:
        size = os.path.getsize(path + "-wal")
        with open(path + "-shm", "rb") as handle:
            header = handle.read(136)
        page = struct.unpack_from("=H", header, 14)[0] or 4096  # szPage
        frames, backfilled = struct.unpack_from("=I", header, 16)[0], struct.unpack_from("=I", header, 96)[0]
        return size, max(0, frames - backfilled) * (page + 24)
    except (OSError, struct.error):
        return 0, 0


def _logged_exit(log: str, sent: float) -> float:
    """Seconds from ``sent`` (wall clock) to the last shutdown step the processor logged (``_phase`` lines)."""
    import datetime

    last = None
    with open(log, errors="replace") as handle:
        for line in handle:
            if line[:2].isdigit() and line[2:3] == ":" and "closed" in line:
                last = line.split()[0]
    if last is None:
        return float("nan")
    day = datetime.datetime.fromtimestamp(sent)
    clock = datetime.datetime.strptime(last, "%H:%M:%S.%f").replace(year=day.year, month=day.month, day=day.day)
    return clock.timestamp() - sent


def store_bytes(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def soak(args: argparse.Namespace, folder: str) -> int:
    from otel_mlmon.engine.windows import parse_duration

    cpu = None if args.cpu < 0 else args.cpu
    os.sched_setaffinity(0, load_cpus(cpu))
    width = parse_duration(args.window)
    profile = reference(folder, args.window)
    db = os.path.join(folder, "soak.db")
    options = {"allowed_lateness_s": args.lateness_s, "idle_timeout_s": args.idle_timeout_s,
               "label_ttl_s": args.ttl_s, "max_lateness_s": args.ttl_s, "retention_s": args.ttl_s,
               "orphan_ttl_s": args.ttl_s, "sweep_s": 30.0, "tick_s": 1.0}
    print(f"processor pinned to CPU {cpu}, load on CPU(s) {sorted(load_cpus(cpu))}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.2f} at start; host speed: "
          f"sum(range(100)) {host_speed_us():.2f} us (benchmarks/README.md compares hosts by it)")
    print(f"load: {args.rate:,.0f} predictions/s + their labels {args.label_delay_s:g} s later for "
          f"{args.minutes:g} min; window {args.window}, allowed lateness {args.lateness_s:g} s, label TTL / max "
          f"lateness / retention {args.ttl_s:g} s")
    server = ProcessorProcess(db, cpu=cpu, references=[profile], log=os.path.join(folder, "soak.log"),
                              profile_dir=args.profile_dir, **options)
    client = Client(server.port)
    load = Load(server.port, args.rate, args.label_delay_s)
    seen: dict[float, float] = {}  # window end -> when its results were first seen
    sizes: list[tuple[float, int]] = []
    wal_sizes: list[tuple[int, int]] = []  # (WAL bytes, not checkpointed), every 10 s
    top = 0  # the highest window index seen
    cpu_before, _ = server.stat()
    started = time.time()
    load.start()
    last_size = last_report = 0.0
    try:
        while time.time() - started < args.minutes * 60:
            now = time.time()
            # Small queries around the newest index: windows count from 0 over the non-empty ones, so an index can be
            # taken again by a later window (after pruning, say); a window is known by its end.
            for index in range(max(0, top - 2), top + 3):
                rows = client.get(f"/v1/results?model={MODEL}&period=analysis&window={index}")["results"]
                if rows:
                    seen.setdefault(_window_end(rows[0]), now)
                    top = max(top, index)
            if now - last_size >= 10:
                sizes.append((now - started, store_bytes(db)))
                wal_sizes.append(wal_pending(db))
                last_size = now
            if now - last_report >= 60:
                _, peak = server.stat()
                print(f"  {now - started:5.0f} s: {load.acked_predictions:,} predictions and {load.acked_labels:,} "
                      f"labels acknowledged, {len(seen)} windows with results, store {sizes[-1][1] / 2**20:.0f} MiB, "
                      f"peak RSS {peak / 2**20:.0f} MiB", flush=True)
                last_report = now
            time.sleep(max(0.0, 0.1 - (time.time() - now)))
        elapsed = time.time() - started
        cpu_after, peak = server.stat()
        health = client.get("/healthz")
        wal_at_stop = wal_pending(db)
        sent = time.time()
        exit_s = server.stop(stacks_after=5.0)  # while the load is still sending
        logged_exit_s = _logged_exit(os.path.join(folder, "soak.log"), sent)
    finally:
        load.join()
        if server.process.poll() is None:
            server.stop()
    last_event_s = load.last_ns / SECOND
    watermark_s = last_event_s - args.lateness_s
    # Windows of the load closed by the watermark (their end behind it) by the time the load stopped.
    first_window = int(load.first_ns / SECOND // width)
    closed_windows = int(watermark_s // width) - first_window
    evaluated_in_time = sum(1 for end in seen if end <= watermark_s)
    # Those closed more than 5 s (the latency target) before the load stopped: each must have results by then (a
    # window that closed in the last seconds may still be evaluated after the last poll: not a miss).
    due_windows = max(0, int((watermark_s - 5) // width) - first_window)
    due_evaluated = sum(1 for end in seen if end + 5 <= watermark_s)
    latencies = [first - (end + args.lateness_s) for end, first in seen.items() if end <= watermark_s]
    # A window's results appear (or are revised) when its labels are in; the load's rows by window.
    expected_windows = sorted({int(second // width) for second in load.windows})

    # Restart on the same store: windows left unevaluated are evaluated (the model is idle: every window closes).
    restart_started = time.time()
    server = ProcessorProcess(db, cpu=cpu, references=[profile], log=os.path.join(folder, "soak.log"), **options)
    client = Client(server.port)
    # A window's revision for late labels waits up to the revision interval (30 s) after its last evaluation.
    deadline = time.time() + args.idle_timeout_s + 30 + 60

    def estimated_accuracy() -> list[dict]:
        # Every window with scored rows has an estimated accuracy (CBPE), labelled or not: the last window's labels
        # may never have been sent (the load stops with the processor), so realized accuracy would miss it.
        rows = client.get(f"/v1/results?model={MODEL}&period=analysis&kind=estimated_performance")["results"]
        return [r for r in rows if r["metric"] == "accuracy"]

    def realized_accuracy() -> list[dict]:
        rows = client.get(f"/v1/results?model={MODEL}&period=analysis&kind=performance")["results"]
        return [r for r in rows if r["metric"] == "accuracy"]

    joined = client.get("/healthz").get("labels_joined", 0)
    while time.time() < deadline:  # every window evaluated, and revised with every label joined
        if len(estimated_accuracy()) >= len(expected_windows) and \
                sum(int(r["labeled_rows"]) for r in realized_accuracy()) >= joined:
            break
        time.sleep(0.5)
    restart_s = time.time() - restart_started
    accuracy = estimated_accuracy()
    realized = realized_accuracy()
    starts = {r["window_start"] for r in accuracy}
    indices = {r["window"] for r in accuracy}
    health_after = client.get("/healthz")
    server.stop()

    print(f"acknowledged {load.acked_predictions:,} predictions in {elapsed:.0f} s: "
          f"{load.acked_predictions / elapsed:,.0f}/s (target >= 25,000), and {load.acked_labels:,} labels "
          f"({load.acked_labels / elapsed:,.0f}/s); not acknowledged {load.refused:,} (prediction requests by "
          f"status: {dict(sorted(load.statuses.items()))}, 0 = no answer within 30 s)")
    for stream, durations in load.post_s.items():
        print(f"{stream} requests of {ROWS:,} rows, send to answer: p50 {1000 * percentile(durations, 50):.0f} ms, "
              f"p99 {1000 * percentile(durations, 99):.0f} ms, mean {1000 * float(np.mean(durations or [0])):.0f} ms "
              f"({len(durations):,} acknowledged)")
    print(f"the prediction stream's schedule: {ROWS / args.rate * 1000:.0f} ms per request; behind it by "
          f"{load.behind_s:.1f} s when the load stopped")
    print(f"labels joined {health.get('labels_joined', 0):,}, orphan labels {health.get('orphan_labels', 0):,}, "
          f"expired predictions {health.get('expired_predictions', 0):,}; processor CPU "
          f"{100 * (cpu_after - cpu_before) / elapsed:.0f} % of one core")
    print(f"windows closed by the watermark during the load {closed_windows}, evaluated by then {evaluated_in_time} "
          f"({len(seen)} windows with results in all); of those closed more than 5 s before the load stopped "
          f"{due_evaluated} of {due_windows} have results; evaluations {health.get('windows_evaluated', 0)} (a window "
          f"revised by labels after its close counts again), evaluation failures "
          f"{health.get('evaluation_failures', 0)}")
    if latencies:
        print(f"window-close-to-result latency: p50 {percentile(latencies, 50):.2f} s, p99 "
              f"{percentile(latencies, 99):.2f} s, max {max(latencies):.2f} s (target: every window <= 5 s); "
              f"{sum(1 for v in latencies if v > 5)} windows over 5 s")
    print(f"peak RSS {peak / 2**20:.0f} MiB (target <= 300 MiB)")
    print("store file + WAL (MiB) every minute: " + ", ".join(
        f"{t / 60:.0f}m {size / 2**20:.0f}" for t, size in sizes if int(t) % 60 < 10))
    print("WAL (MiB) every minute, file / not checkpointed: " + ", ".join(
        f"{t / 60:.0f}m {wal / 2**20:.0f}/{pending / 2**20:.0f}" for (t, _), (wal, pending) in zip(sizes, wal_sizes)
        if int(t) % 60 < 10))
    print(f"SIGTERM under load to exit: {exit_s:.1f} s (target <= 10 s; the processor's log: its last step "
          f"{logged_exit_s:.1f} s after SIGTERM was sent); the WAL then {wal_at_stop[0] / 2**20:.0f} MiB, "
          f"{wal_at_stop[1] / 2**20:.0f} MiB of it not checkpointed")
    rows_counted = sum(int(r["rows"]) for r in accuracy)
    labeled_counted = sum(int(r["labeled_rows"]) for r in realized)
    print(f"restart on the same store: {len(accuracy)} of {len(expected_windows)} windows of the load have results "
          f"({len(starts)} distinct window starts, {len(indices)} distinct window numbers) "
          f"{restart_s:.0f} s after the restart (idle timeout {args.idle_timeout_s:g} s, revisions wait up to 30 s); "
          f"rows counted in windows "
          f"{rows_counted:,} of {load.acked_predictions:,} acknowledged, labeled rows {labeled_counted:,} of "
          f"{health_after.get('labels_joined', 0):,} joined")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=25_000.0, help="prediction rows per second (and labels)")
    parser.add_argument("--label-delay-s", type=float, default=3.0)
    parser.add_argument("--window", default="10s")
    parser.add_argument("--lateness-s", type=float, default=5.0)
    parser.add_argument("--idle-timeout-s", type=float, default=10.0)
    parser.add_argument("--ttl-s", type=float, default=60.0, help="label TTL, max lateness and retention")
    parser.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)),
                        help="the CPU the processor is pinned to (-1: not pinned)")
    parser.add_argument("--workdir", help="keep the store and logs here (default: a temporary folder)")
    parser.add_argument("--profile-dir", help="cProfile the processor process (first run); top costs written here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.workdir or temporary
        os.makedirs(folder, exist_ok=True)
        return soak(args, folder)


if __name__ == "__main__":
    raise SystemExit(main())
