"""``mlmon evaluate`` at scale: the local engine vs Spark ``local[1]`` vs Spark ``local[2]``, side by side in one run
(issue 17, item 1).

A generated Parquet file of N rows (default 10M) x 50 numeric features, with an event time (in order, ties every
10 rows), the prediction, the score and the target of a binary classifier, in 10 row windows (1M rows each at
10M); a reference of 1M rows in 10 windows (its profile built once, locally). Each engine runs in its own process:
wall time (for Spark, the session start apart), the driver's peak RSS (the Python process; for Spark also the
JVM's peak, which holds the executors in local mode), and whether Spark's window results equal the local
engine's (same rows, row counts and verdicts, values to 1e-9).

The data is generated once into ``--data`` (default ``/tmp/mlmon-bench-scale``) and reused, and so is each engine's
results file (``results-ENGINE-ROWS.pickle``): a run without ``local`` in ``--engines`` compares Spark with the saved
local run of the same rows. Exit status 1 when Spark's results differ from the local engine's (the differences go
to stderr).
Run: ``JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 python benchmarks/bench_scale.py [--rows N] [--engines …]
[--driver-memory 6g]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time

import numpy as np

FEATURES = 50
BATCH = 500_000
REFERENCE_CHUNK = 100_000
COLUMNS = {"id_column": None, "timestamp_column": "ts", "target_column": "target", "prediction_column": "prediction",
           "score_column": "score"}


def generate(path: str, rows: int, shift: float, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    schema = pa.schema([(f"x{j}", pa.float64()) for j in range(FEATURES)] + [
        ("ts", pa.timestamp("us", tz="UTC")), ("score", pa.float64()), ("prediction", pa.int64()),
        ("target", pa.int64())])
    start = 1_767_225_600_000_000  # 2026-01-01, in microseconds
    with pq.ParquetWriter(path + ".part", schema) as writer:
        for first in range(0, rows, BATCH):
            n = min(BATCH, rows - first)
            block = rng.normal(shift, 1.0, (n, FEATURES))
            score = 1 / (1 + np.exp(-block[:, 0]))
            times = start + (np.arange(first, first + n) // 10) * 1_000_000  # 10 rows a second: ties
            arrays = [block[:, j] for j in range(FEATURES)] + [
                pa.array(times, pa.timestamp("us", tz="UTC")), score, (score > 0.5).astype(np.int64),
                (rng.random(n) < np.clip(score - shift / 4, 0, 1)).astype(np.int64)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
    os.replace(path + ".part", path)


def prepare(folder: str, rows: int) -> tuple[str, str]:
    """The analysis file and the reference profile, made once."""
    os.makedirs(folder, exist_ok=True)
    analysis = os.path.join(folder, f"analysis-{rows}.parquet")
    reference = os.path.join(folder, "reference.parquet")
    profile = os.path.join(folder, "profile.json")
    started = time.perf_counter()
    if not os.path.exists(reference):
        generate(reference, 1_000_000, 0.0, 1)
    if not os.path.exists(analysis):
        generate(analysis, rows, 0.2, 2)
    if not os.path.exists(profile):
        from otel_mlmon.batch.runner import Columns, build_profile
        from otel_mlmon.engine.windows import WindowSpec

        built, _ = build_profile(reference, Columns(**COLUMNS), WindowSpec(chunk_size=REFERENCE_CHUNK), "scale")
        built.save(profile)
    print(f"data: {rows:,} x {FEATURES} analysis rows ({os.path.getsize(analysis) / 2**30:.2f} GiB Parquet) "
          f"+ 1,000,000 reference rows, ready in {time.perf_counter() - started:.0f} s ({folder})")
    return analysis, profile


RUN = r"""
import json, os, pickle, sys, time
from otel_mlmon.batch.runner import Columns, columns_from_profile, evaluate_file
from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.engine.windows import WindowSpec
engine, analysis, profile_path, out = sys.argv[1:5]
columns, spec = json.loads(sys.argv[5]), WindowSpec(chunk_size=int(sys.argv[6]))
profile = ReferenceProfile.load(profile_path)
columns = columns_from_profile(profile, Columns(**columns))
report = {}
if engine == "local":
    started = time.perf_counter()
    rows = list(evaluate_file(profile, analysis, columns, spec=spec))
    report["evaluate_s"] = time.perf_counter() - started
else:
    from otel_mlmon.batch.spark import evaluate_spark, spark_session
    started = time.perf_counter()
    session = spark_session(engine, {"spark.driver.memory": sys.argv[7], "spark.driver.maxResultSize": "4g"})
    report["session_s"] = time.perf_counter() - started
    started = time.perf_counter()
    rows = list(evaluate_spark(profile, analysis, columns, spec=spec, session=session))
    report["evaluate_s"] = time.perf_counter() - started
    jvm = session.sparkContext._gateway.proc.pid
    with open(f"/proc/{jvm}/status") as status:
        report["jvm_peak_kib"] = next(int(l.split()[1]) for l in status if l.startswith("VmHWM"))
    session.stop()
with open("/proc/self/status") as status:  # VmHWM: this process's own peak (ru_maxrss survives exec)
    report["driver_peak_kib"] = next(int(l.split()[1]) for l in status if l.startswith("VmHWM"))
with open(out, "wb") as handle:
    pickle.dump((report, rows), handle)
"""


def run(engine: str, analysis: str, profile: str, folder: str, chunk: int, total: int,
        driver_memory: str) -> tuple[dict[str, float], list]:
    out = os.path.join(folder, f"results-{engine}-{total}.pickle")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUN, engine, analysis, profile, out, json.dumps(COLUMNS), str(chunk),
                           driver_memory], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{engine} failed:\n{done.stderr[-4000:]}")
    with open(out, "rb") as handle:
        report, rows = pickle.load(handle)
    report["wall_s"] = time.perf_counter() - started
    return report, rows


def differences(local: list, other: list) -> list[str]:
    """What differs between two engines' window results (empty: equal)."""
    def key(row) -> tuple:
        return row.period, row.window, row.column, row.kind, row.metric

    expected, found = {key(r): r for r in local}, {key(r): r for r in other}
    if set(expected) != set(found) or len(local) != len(other):
        return [f"rows differ: {len(local)} vs {len(other)} rows, {len(set(expected) ^ set(found))} keys apart"]
    out = []
    for name, want in expected.items():
        got = found[name]
        for field in ("rows", "labeled_rows", "window_start", "window_end", "alert"):
            if getattr(got, field) != getattr(want, field):
                out.append(f"{name} {field}: {getattr(want, field)} != {getattr(got, field)}")
        for field in ("value", "lower_threshold", "upper_threshold", "p_value"):
            a, b = getattr(want, field), getattr(got, field)
            if (a is None) != (b is None) or (a is not None and not (
                    (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9))):
                out.append(f"{name} {field}: {a} != {b}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 1 when a Spark engine's window results differ from the local engine's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "mlmon-bench-scale"))
    parser.add_argument("--engines", default="local,local[1],local[2]",
                        help="comma-separated: local and Spark masters (default: local,local[1],local[2]); without "
                             "local, Spark's results are compared with a saved local run of the same rows")
    parser.add_argument("--driver-memory", default="6g", help="Spark's spark.driver.memory (default 6g)")
    # ---- Kafka part (issue 17, item 4: processor throughput with 1 and 2 replicas behind Kafka) ----
    # The lead wires --kafka here to benchmarks/bench_kafka.py; it runs after the engines' part in main().
    # ---- end of the Kafka part ----
    args = parser.parse_args(argv)
    analysis, profile = prepare(args.data, args.rows)
    engines = args.engines.split(",")
    results = {}
    saved = os.path.join(args.data, f"results-local-{args.rows}.pickle")
    if "local" not in engines and os.path.exists(saved):
        with open(saved, "rb") as handle:
            results["local"] = pickle.load(handle)[1]
        print(f"(Spark compared with the saved local engine's results: {saved})")
    different = []
    print(f"{'engine':<16}{'wall s':>9}{'session s':>11}{'evaluate s':>12}{'driver MiB':>12}{'JVM MiB':>9}"
          f"{'rows/s':>12}  results")
    for engine in engines:
        report, rows = run(engine, analysis, profile, args.data, max(args.rows // 10, 1), args.rows,
                           args.driver_memory)
        name = "local engine" if engine == "local" else f"Spark {engine}"
        if engine == "local":
            results[engine], same = rows, "reference"
        elif "local" not in results:
            same = "not compared (no local engine run)"
        else:
            diff = differences(results["local"], rows)
            same = "equal (rows, row counts, verdicts; values to 1e-9)" if not diff else f"DIFFERENT ({len(diff)})"
            if diff:
                different.append(engine)
                print("\n".join(f"    {line}" for line in diff[:20]), file=sys.stderr)
        jvm = f"{report['jvm_peak_kib'] / 1024:9.0f}" if "jvm_peak_kib" in report else f"{'-':>9}"
        session = f"{report['session_s']:11.1f}" if "session_s" in report else f"{'-':>11}"
        print(f"{name:<16}{report['wall_s']:9.1f}{session}{report['evaluate_s']:12.1f}"
              f"{report['driver_peak_kib'] / 1024:12.0f}{jvm}{args.rows / report['evaluate_s']:12,.0f}  {same}",
              flush=True)
        last = rows
    windows = {r.window for r in last if r.period == "analysis"}
    alerts = sum(1 for r in last if r.alert)
    print(f"{len(last)} result rows, {len(windows)} windows, {alerts} alerts; "
          f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    # ---- the Kafka part runs here (the lead wires it) ----
    if different:
        print(f"FAILED: Spark's results differ from the local engine's ({', '.join(different)})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
