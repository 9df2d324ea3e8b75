"""Sequential change detection on the label stream (issue 15, item 4): detection delay and false alarms.

Seeded Bernoulli streams of per-row correctness, fed label by label to ``SequentialMonitor`` (ADWIN and
Page–Hinkley with their defaults (river's), ADWIN with a larger delta, Page–Hinkley with a larger threshold):
(1) stationary: ``--stationary`` labels (10^6 by default) at accuracy 0.9 and at 0.7; false alarms per 10^6 labels,
    the window's buckets at the end (ADWIN's memory) and the cost per label (ours, and river's when installed);
(2) a change: ``--warmup`` labels at the reference accuracy, then the new accuracy for up to ``--horizon`` labels,
    over ``--repeats`` seeds: detection rate within the horizon, median and 90th-percentile delay in labels (labels
    after the change until the detection), and false alarms before the change.

Run: ``python benchmarks/bench_sequential.py [--stationary N] [--repeats R]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from otel_mlmon.engine.sequential import ADWIN, SequentialMonitor

CONFIGS = (("adwin", {}), ("adwin", {"delta": 0.05}), ("page_hinkley", {}), ("page_hinkley", {"threshold": 100.0}))
CHANGES = ((0.94, 0.5), (0.9, 0.8), (0.9, 0.85), (0.8, 0.75), (0.9, 0.95))


def name(detector: str, parameters: dict[str, float]) -> str:
    return detector + "".join(f" {k}={v}" for k, v in parameters.items())


def stationary(rows: int, accuracy: float, seed: int) -> None:
    stream = (np.random.default_rng(seed).random(rows) < accuracy).tolist()
    for detector, parameters in CONFIGS:
        monitor = SequentialMonitor(detector, **parameters)
        started = time.process_time()
        alarms = len(monitor.update(stream))
        cost = (time.process_time() - started) / rows * 1e6
        inner = monitor._detector
        memory = f"{inner.buckets} buckets, width {inner.width}" if isinstance(inner, ADWIN) else "O(1)"
        print(f"| {name(detector, parameters)} | {accuracy} | {rows:,} | {alarms / rows * 1e6:.1f} | {memory} | "
              f"{cost:.2f} |")
    try:
        from river import drift
    except ImportError:
        return
    river_adwin, alarms = drift.ADWIN(), 0
    started = time.process_time()
    for x in stream:
        river_adwin.update(x)
        alarms += river_adwin.drift_detected
    cost = (time.process_time() - started) / rows * 1e6
    print(f"| river ADWIN (reference, Rust) | {accuracy} | {rows:,} | {alarms / rows * 1e6:.1f} | | {cost:.2f} |")


def change(before: float, after: float, warmup: int, horizon: int, repeats: int) -> None:
    for detector, parameters in CONFIGS:
        delays, early = [], 0
        for seed in range(repeats):
            rng = np.random.default_rng(1000 + seed)
            accuracy = np.r_[np.full(warmup, before), np.full(horizon, after)]
            monitor = SequentialMonitor(detector, **parameters)
            changes = monitor.update((rng.random(warmup + horizon) < accuracy).tolist())
            early += sum(1 for c in changes if c.index < warmup)
            late = [c.index - warmup + 1 for c in changes if c.index >= warmup]
            if late:
                delays.append(late[0])
        detected = len(delays) / repeats
        median = f"{np.median(delays):.0f}" if delays else "-"
        p90 = f"{np.percentile(delays, 90):.0f}" if delays else "-"
        print(f"| {name(detector, parameters)} | {before} → {after} | {detected:.0%} | {median} | {p90} | "
              f"{early / (repeats * warmup) * 1e6:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stationary", type=int, default=1_000_000)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument("--horizon", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print("(1) stationary streams\n")
    print("| detector | accuracy | labels | false alarms / 10^6 labels | memory at the end | µs / label |")
    print("|---|---|---|---|---|---|")
    for seed, accuracy in enumerate((0.9, 0.7)):
        stationary(args.stationary, accuracy, seed)
    print(f"\n(2) a change after {args.warmup:,} labels, {args.repeats} seeds, horizon {args.horizon:,} labels\n")
    print("| detector | accuracy | detected | median delay (labels) | p90 delay | false alarms / 10^6 before |")
    print("|---|---|---|---|---|---|")
    for before, after in CHANGES:
        change(before, after, args.warmup, args.horizon, args.repeats)


if __name__ == "__main__":
    main()
