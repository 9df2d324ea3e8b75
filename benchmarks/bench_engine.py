"""Drift engine speed, side by side in one run (issue: the engine and `mlmon evaluate`).

(1) 100k reference vs 100k analysis rows x 20 numeric + 5 categorical columns held in memory: otel-mlmon's full
    drift evaluation (sketch both periods, JS + KS per numeric column, JS + chi2 per categorical column, verdicts)
    against scipy's exact ``ks_2samp`` + ``chi2_contingency`` on the same arrays (counting the categories
    included). Ratio of times, and whether the two agree on which columns drifted (p < 0.01).
(2) ``--scale``: a generated Parquet file of 10M rows x 50 numeric columns through ``mlmon evaluate`` in a
    subprocess: wall time and peak RSS.

Run: ``python benchmarks/bench_engine.py [--scale] [--scale-rows N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter

import numpy as np
from scipy import stats

from otel_mlmon.engine.columns import profile_from_columns, window_from_columns
from otel_mlmon.engine.evaluate import evaluate_window
from otel_mlmon.engine.windows import WindowSpec

NUMERIC, CATEGORICAL = 20, 5
SHIFTED_NUMERIC = {"n0": 0.5, "n1": 0.3, "n2": 0.25}  # mean shifts in sd (small to medium effects)
SHIFTED_CATEGORICAL = {"c0"}


def generate(rows: int, seed: int, shifted: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for j in range(NUMERIC):
        name = f"n{j}"
        columns[name] = rng.normal(SHIFTED_NUMERIC.get(name, 0.0) if shifted else 0.0, 1.0, rows) * (j + 1) + j
    for j in range(CATEGORICAL):
        name = f"c{j}"
        p = np.array([0.4, 0.3, 0.2, 0.1])
        if shifted and name in SHIFTED_CATEGORICAL:
            p = np.array([0.3, 0.3, 0.25, 0.15])
        columns[name] = rng.choice(np.array(["alpha", "beta", "gamma", "delta"], dtype=object), rows, p=p)
    return columns


def ours(reference: dict[str, np.ndarray], analysis: dict[str, np.ndarray]) -> set[str]:
    """Columns with a drift alert under the default policy (effect-size floor, BH-adjusted test, band)."""
    profile, _ = profile_from_columns(reference, WindowSpec(chunks=1))
    results = evaluate_window(profile, window_from_columns(profile, analysis))
    return {r.column for r in results if r.kind == "drift" and r.alert}


def scipy_exact(reference: dict[str, np.ndarray], analysis: dict[str, np.ndarray]) -> set[str]:
    drifted = set()
    for name, values in reference.items():
        if values.dtype.kind == "f":
            p = stats.ks_2samp(values, analysis[name]).pvalue
        else:  # categories counted the fastest way plain Python has (as otel-mlmon does)
            before, after = Counter(values.tolist()), Counter(analysis[name].tolist())
            categories = sorted(set(before) | set(after))
            table = np.array([[before[c] for c in categories], [after[c] for c in categories]])
            p = stats.chi2_contingency(table, correction=False).pvalue
        if p < 0.01:
            drifted.add(name)
    return drifted


def timed(function, *args, repeats: int = 5) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def in_memory(rows: int) -> None:
    reference, analysis = generate(rows, 0, False), generate(rows, 1, True)
    ours(reference, analysis)  # warm-up (imports, caches)
    ours_time, ours_drifted = timed(ours, reference, analysis)
    scipy_time, scipy_drifted = timed(scipy_exact, reference, analysis)
    print(f"(1) {rows:,} vs {rows:,} rows x {NUMERIC} numeric + {CATEGORICAL} categorical columns")
    print(f"    scipy exact KS + chi2      {scipy_time * 1000:8.1f} ms")
    print(f"    otel-mlmon drift           {ours_time * 1000:8.1f} ms    ratio {ours_time / scipy_time:.2f}x "
          "(target <= 0.35x)")
    shifted = set(SHIFTED_NUMERIC) | SHIFTED_CATEGORICAL
    same = (scipy_drifted & shifted) == (ours_drifted & shifted)
    print(f"    shifted columns {sorted(shifted)} (n0 +0.5 sd, n1 +0.3 sd, n2 +0.25 sd, c0 frequencies)")
    print(f"    flagged: scipy p < 0.01 {sorted(scipy_drifted)}; otel-mlmon alerts {sorted(ours_drifted)}")
    print(f"    verdicts on the shifted columns: {'same' if same else 'DIFFERENT'}")


def scale(rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns, batch = 50, 500_000
    with tempfile.TemporaryDirectory() as folder:
        reference, analysis = os.path.join(folder, "reference.parquet"), os.path.join(folder, "analysis.parquet")
        start = time.perf_counter()
        for path, total, shift in ((reference, min(rows, 1_000_000), 0.0), (analysis, rows, 0.2)):
            rng = np.random.default_rng(7)
            schema = pa.schema([(f"x{j}", pa.float64()) for j in range(columns)])
            with pq.ParquetWriter(path, schema) as writer:
                for first in range(0, total, batch):
                    n = min(batch, total - first)
                    block = rng.normal(shift, 1.0, (n, columns))
                    writer.write_table(pa.Table.from_arrays([block[:, j] for j in range(columns)], schema=schema))
        print(f"(2) generated {rows:,} x {columns} analysis rows (+ {min(rows, 1_000_000):,} reference rows) in "
              f"{time.perf_counter() - start:.0f} s ({os.path.getsize(analysis) / 2**30:.2f} GiB Parquet)")
        command = [sys.executable, "-c",
                   "import resource, sys; from otel_mlmon.cli import main; code = main(sys.argv[1:]); "
                   "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)",
                   "evaluate", "--reference", reference, "--analysis", analysis, "--chunk-size", "1000000",
                   "--output", os.path.join(folder, "results.parquet")]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        peak_kib = int(done.stderr.strip().splitlines()[-1])
        print(f"    mlmon evaluate: {elapsed:.1f} s ({rows * columns / elapsed / 1e6:.1f} M values/s), "
              f"peak RSS {peak_kib / 1024:.0f} MiB (target <= 1024 MiB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--scale", action="store_true", help="also run the 10M-row file through mlmon evaluate")
    parser.add_argument("--scale-rows", type=int, default=10_000_000)
    args = parser.parse_args(argv)
    in_memory(args.rows)
    if args.scale:
        scale(args.scale_rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
