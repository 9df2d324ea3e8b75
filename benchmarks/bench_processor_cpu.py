"""The processor's CPU per prediction + label, by stage, in process: where the soak's share of the core goes.

The soak's load (``soak_processor.py``: 4096-row ``ml.predictions`` events of a binary classifier at ``--rate``
rows/s, their ``ml.labels`` events ``--label-delay-s`` later, 10 s event-time windows, allowed lateness 5 s, label
TTL / max lateness / retention 60 s, a sweep every 30 s) is decoded and fed to ``Processor.accept_logs`` with a
simulated clock, and ``Processor.tick`` runs every simulated second: no HTTP, no threads but the store's
checkpointer. Each stage's CPU (``time.process_time``: the checkpointer's too) is summed: decode, predictions,
labels (join, ADWIN), tick (window evaluation, expiry, pruning). Run side by side: ADWIN on every label (the
default) and sequential detection off, and the ratio of their totals.

Run: ``python benchmarks/bench_processor_cpu.py [--seconds 150] [--rate 25000]``. (``--seconds`` of simulated
load; pruning starts after ~120 simulated seconds.)
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_processor import ROWS, SENTINEL_NS, labels, predictions, stamp, time_offset
from soak_processor import MODEL, reference

SECOND = 1_000_000_000
TEMPLATES = 40  # distinct bodies; request n carries template n % 40 with the ids' prefix set to n // 40


def _templates() -> list[tuple[bytes, int, bytes, int]]:
    rng = np.random.default_rng(1)
    found = []
    for sent in range(TEMPLATES):
        ids = [f"r0000{sent * ROWS + j:08d}" for j in range(ROWS)]
        score = rng.beta(2, 2, ROWS)
        truth = [str(v) for v in (rng.random(ROWS) < score).astype(int)]
        body = predictions(MODEL, ids, [str(v) for v in (score >= 0.5).astype(int)], score.tolist())
        label_body = labels(MODEL, ids, truth, SENTINEL_NS)
        assert body.count(b"r0000") == label_body.count(b"r0000") == ROWS  # only the ids carry the prefix
        found.append((body, time_offset(body), label_body, time_offset(label_body)))
    return found


def run(seconds: float, rate: float, detector: str, profile: str) -> tuple[collections.Counter[str], int, int]:
    """Stage -> CPU seconds, rows sent, window evaluations."""
    from otel_mlmon.engine.profile import ReferenceProfile
    from otel_mlmon.processor.decode import decode_logs
    from otel_mlmon.processor.service import Processor
    from otel_mlmon.processor.store import Store

    folder = tempfile.mkdtemp(prefix="mlmon-cpu-")
    now = [time.time_ns()]
    store = Store(os.path.join(folder, "cpu.db"), label_ttl_s=60, orphan_ttl_s=60, max_lateness_s=60, retention_s=60)
    processor = Processor(store, allowed_lateness_s=5, idle_timeout_s=10, sweep_s=30, bootstrap_windows=0,
                          revision_interval_s=30, sequential_detector=detector, clock=lambda: now[0])
    processor.register(ReferenceProfile.load(profile))
    templates = _templates()
    cpu: collections.Counter[str] = collections.Counter()
    step_ns = int(ROWS / rate * SECOND)
    start, next_tick, sent = now[0], now[0] + SECOND, 0
    due: collections.deque[tuple[int, bytes, int]] = collections.deque()

    def feed(body: bytes, offset: int, stage: str) -> None:
        before = time.process_time()
        decoded = decode_logs(stamp(body, offset, now[0]), "application/x-protobuf")
        middle = time.process_time()
        processor.accept_logs(decoded, now[0])
        cpu["decode"] += middle - before
        cpu[stage] += time.process_time() - middle
        assert decoded.rejected_count == 0, decoded.error_message()

    try:
        while now[0] - start < seconds * SECOND:
            body, offset, label_body, label_offset = templates[sent % TEMPLATES]
            prefix = b"r%04d" % (sent // TEMPLATES)  # unique ids: the template's "r0000" prefix replaced
            feed(body.replace(b"r0000", prefix), offset, "predictions")
            due.append((now[0] + 3 * SECOND, label_body.replace(b"r0000", prefix), label_offset))
            while due and due[0][0] <= now[0]:
                _, label_body, label_offset = due.popleft()
                feed(label_body, label_offset, "labels")
            if now[0] >= next_tick:
                before = time.process_time()
                processor.tick()
                cpu["tick"] += time.process_time() - before
                next_tick += SECOND
            now[0] += step_ns
            sent += 1
        return cpu, sent * ROWS, processor.evaluated
    finally:
        processor.close()
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
        os.rmdir(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="simulated seconds of load")
    parser.add_argument("--rate", type=float, default=25_000.0, help="prediction rows per second (and labels)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        profile = reference(folder, "10s")
        totals = {}
        for detector in ("adwin", "off"):
            cpu, rows, evaluations = run(args.seconds, args.rate, detector, profile)
            total = sum(cpu.values())
            totals[detector] = total
            print(f"sequential detector {detector}: {rows:,} predictions + labels in {args.seconds:g} simulated s, "
                  f"{evaluations} window evaluations")
            for stage in ("decode", "predictions", "labels", "tick"):
                share = cpu[stage] / rows * 1e6
                print(f"  {stage:12s} {cpu[stage]:7.2f} s CPU  {share:6.2f} us per prediction + label")
            print(f"  {'total':12s} {total:7.2f} s CPU  {total / rows * 1e6:6.2f} us per prediction + label: "
                  f"{total / args.seconds:.0%} of a core at {args.rate:,.0f}/s")
    print(f"ratio adwin / off: {totals['adwin'] / totals['off']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
