"""``mlmon evaluate --engine spark`` (``batch.spark.evaluate_spark``) against the local engine on the same data.

A real Spark on ``local[2]`` (the machine's Java 17), one session for the module, files split into many partitions
so that windows are merged from several partials. The data is out of event-time order, has ties of event time, a
categorical column with more categories per window than a sketch keeps (the cap depends on the order of first
rows), labels in a separate file joined by id (some ids labelled twice: the first label wins), and a drift in the
second half, so that verdicts go both ways.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from otel_mlmon.batch.reader import DataError
from otel_mlmon.batch.runner import Columns, _Accumulator, _Plan, build_profile, columns_from_profile, evaluate_file
from otel_mlmon.batch.spark_partials import BLOCK, FILE, Layout, RowBounds, Source, merge_states, window_states
from otel_mlmon.engine.results import WindowResult
from otel_mlmon.engine.windows import WindowSpec

pytest.importorskip("pyspark")

JAVA_17 = "/usr/lib/jvm/java-17-openjdk-amd64"
COLUMNS = Columns(id_column="id", timestamp_column="ts", target_column="target", prediction_column="prediction",
                  score_column="score", categorical=["plan", "merchant"])
MERCHANTS = 4000  # a 5,000-row window has more distinct merchants than a sketch's 1,000 categories


def make_frame(n: int, seed: int, start: str, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": rng.normal(40 + 8 * shift, 10, n),
        "income": rng.lognormal(10, 0.5 + 0.2 * shift, n),
        "visits": rng.integers(0, 20, n).astype(float),
        "plan": rng.choice(["basic", "gold", "platinum"], n, p=[0.6, 0.3, 0.1] if not shift else [0.4, 0.4, 0.2]),
        "merchant": [f"m{k}" for k in rng.integers(0, MERCHANTS, n)],
    })
    frame.loc[rng.random(n) < 0.02, "income"] = np.nan  # missing values: data quality rows
    score = 1 / (1 + np.exp(-(frame["age"] - 40) / 10 + 0.5 * (frame["plan"] == "gold")))
    frame["score"] = score
    frame["prediction"] = (score > 0.5).astype(int)
    frame["target"] = (rng.random(n) < np.clip(score - 0.3 * shift, 0, 1)).astype(int)
    frame["id"] = [f"{seed}-{i:06d}" for i in range(n)]
    times = pd.date_range(start, periods=n, freq="1min", tz="UTC").to_numpy()
    times[rng.random(n) < 0.2] = times[0]  # ties of event time, broken by id
    frame["ts"] = times
    return frame


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("spark")
    reference = make_frame(10_000, 0, "2026-01-01")
    analysis = pd.concat([make_frame(25_000, 1, "2026-02-01"), make_frame(25_000, 2, "2026-02-18", shift=1.0)],
                         ignore_index=True).sample(frac=1.0, random_state=3).reset_index(drop=True)
    labels = analysis[["id", "target"]].sample(frac=0.7, random_state=0)
    twice = labels.sample(n=2_000, random_state=1).assign(target=lambda f: 1 - f["target"])
    labels = pd.concat([labels, twice, pd.DataFrame({"id": ["nobody"], "target": [1]})], ignore_index=True)
    paths = {name: folder / name for name in ("reference.parquet", "analysis.parquet", "labels.csv",
                                              "analysis.csv", "dataset")}
    reference.to_parquet(paths["reference.parquet"])
    analysis.drop(columns="target").to_parquet(paths["analysis.parquet"], row_group_size=2_000)
    labels.to_csv(paths["labels.csv"], index=False)
    analysis.drop(columns="target").iloc[:12_000].to_csv(paths["analysis.csv"], index=False)
    ordered = analysis.sort_values(["ts", "id"]).reset_index(drop=True)  # as data is often written
    for day, first in enumerate((0, 17_000, 34_000)):  # a partitioned dataset
        (paths["dataset"] / f"day={day}").mkdir(parents=True)
        part = ordered.drop(columns="target").iloc[first:first + 17_000]
        part.reset_index(drop=True).to_parquet(paths["dataset"] / f"day={day}" / "part-0.parquet",
                                               row_group_size=2_000)
    return {"paths": paths, "analysis": analysis, "labels": labels, "ordered": ordered}


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    if "JAVA_HOME" not in os.environ and os.path.isdir(JAVA_17):
        os.environ["JAVA_HOME"] = JAVA_17
    from otel_mlmon.batch.spark import spark_session

    session = spark_session("local[2]", {"spark.sql.files.maxPartitionBytes": str(1 << 20),
                                         "spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false"})
    yield session
    session.stop()


def profile_of(data: dict[str, Any], spec: WindowSpec) -> tuple[Any, Columns]:
    profile, _ = build_profile(str(data["paths"]["reference.parquet"]), COLUMNS, spec, "credit")
    return profile, columns_from_profile(profile, COLUMNS)


def assert_same(local: list[WindowResult], spark: list[WindowResult]) -> None:
    """Same rows (window, column, kind, metric), same row counts and verdicts, values to 1e-9."""
    def key(row: WindowResult) -> tuple[Any, ...]:
        return row.period, row.window, row.column, row.kind, row.metric

    expected, found = {key(r): r for r in local}, {key(r): r for r in spark}
    assert len(expected) == len(local) and len(found) == len(spark)
    assert sorted(found) == sorted(expected)
    for name, want in expected.items():
        got = found[name]
        for field in ("rows", "labeled_rows", "window_start", "window_end", "alert", "model", "model_version"):
            assert getattr(got, field) == getattr(want, field), (name, field)
        for field in ("value", "lower_threshold", "upper_threshold", "p_value"):
            a, b = getattr(want, field), getattr(got, field)
            assert (a is None) == (b is None), (name, field)
            if a is not None and not (math.isnan(a) and math.isnan(b)):
                assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (name, field, a, b)


def evaluate_both(spark: Any, data: dict[str, Any], spec: WindowSpec, analysis: str = "analysis.parquet",
                  labels: bool = True) -> tuple[list[WindowResult], list[WindowResult]]:
    from otel_mlmon.batch.spark import evaluate_spark

    profile, columns = profile_of(data, spec)
    path = data["paths"][analysis]
    label_path = str(data["paths"]["labels.csv"]) if labels else None
    local = list(evaluate_file(profile, str(path), columns, label_path, spec=spec))
    return local, list(evaluate_spark(profile, str(path), columns, label_path, spec=spec, session=spark))


@pytest.mark.integration
def test_row_windows_equal_the_local_engine(spark: Any, data: dict[str, Any]) -> None:
    from otel_mlmon.batch.spark import read_data

    assert read_data(spark, str(data["paths"]["analysis.parquet"])).frame.rdd.getNumPartitions() >= 3
    local, found = evaluate_both(spark, data, WindowSpec(chunk_size=5_000))
    assert_same(local, found)
    assert {r.window for r in found} == set(range(10)) and {r.rows for r in found} == {5_000}
    verdicts = [r.alert for r in found if r.kind == "drift"]
    assert True in verdicts and False in verdicts  # verdicts both ways: their equality means something
    # Independently of the engine: windows of 5,000 rows in (time, id) order, labels joined (first label wins).
    frame = data["analysis"].drop(columns="target").sort_values(["ts", "id"], kind="stable").reset_index(drop=True)
    first = data["labels"].drop_duplicates("id", keep="first").set_index("id")["target"]
    frame["label"] = frame["id"].map(first)
    from sklearn.metrics import accuracy_score, roc_auc_score

    for window in range(10):
        rows = frame.iloc[window * 5_000:(window + 1) * 5_000].dropna(subset=["label"])
        got = {r.metric: r for r in found if r.window == window and r.kind == "performance"}
        assert got["accuracy"].labeled_rows == len(rows)
        assert got["accuracy"].value == pytest.approx(accuracy_score(rows["label"], rows["prediction"]), abs=1e-9)
        assert got["roc_auc"].value == pytest.approx(roc_auc_score(rows["label"], rows["score"]), abs=1e-9)


@pytest.mark.integration
def test_time_windows_equal_the_local_engine(spark: Any, data: dict[str, Any]) -> None:
    local, found = evaluate_both(spark, data, WindowSpec(window="2d"))
    assert_same(local, found)
    assert len({r.window for r in found}) >= 15 and len({r.rows for r in found}) > 2


@pytest.mark.integration
def test_a_partitioned_dataset_is_its_files_in_path_order(spark: Any, data: dict[str, Any], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory of files (day=0/, day=1/, day=2/) gives the results of one file holding them in path order;
    ``--chunks`` windows count the whole dataset's rows. The data is in event-time order: its rows are ranked
    without a sort."""
    from otel_mlmon.batch import spark as spark_engine

    def no_sort(*args: Any) -> None:
        raise AssertionError("data in event-time order was sorted")

    monkeypatch.setattr(spark_engine, "_row_bounds", no_sort)
    evaluate_spark = spark_engine.evaluate_spark

    spec = WindowSpec(chunks=7)
    profile, columns = profile_of(data, spec)
    whole = tmp_path / "whole.parquet"
    pd.concat([pd.read_parquet(p) for p in sorted(data["paths"]["dataset"].glob("day=*/*.parquet"))],
              ignore_index=True).to_parquet(whole)
    labels = str(data["paths"]["labels.csv"])
    local = list(evaluate_file(profile, str(whole), columns, labels, spec=spec))
    found = list(evaluate_spark(profile, str(data["paths"]["dataset"]), columns, labels, spec=spec, session=spark))
    assert_same(local, found)
    assert {r.window for r in found} == set(range(7))


@pytest.mark.integration
def test_csv_with_the_target_in_the_file(spark: Any, data: dict[str, Any], tmp_path: Path) -> None:
    """CSV is parsed as pyarrow's CSV reader parses it (types of the first rows, its null spellings); labels
    from the analysis file's own target column."""
    from otel_mlmon.batch.spark import evaluate_spark

    spec = WindowSpec(chunk_size=3_000)
    profile, columns = profile_of(data, spec)
    path = tmp_path / "analysis.csv.gz"
    frame = data["ordered"].iloc[:9_000].copy()
    frame.loc[frame.index[::50], "target"] = np.nan  # rows without a label
    frame.loc[frame.index[::70], "plan"] = ""  # an empty category
    frame.to_csv(path, index=False)
    local = list(evaluate_file(profile, str(path), columns, spec=spec))
    found = list(evaluate_spark(profile, str(path), columns, spec=spec, session=spark))
    assert_same(local, found)
    assert {r.labeled_rows for r in found} < set(range(2_900, 3_000))


@pytest.mark.integration
def test_bad_data_is_the_local_engines_data_error(spark: Any, data: dict[str, Any], tmp_path: Path) -> None:
    from otel_mlmon.batch.spark import evaluate_spark

    spec = WindowSpec(chunk_size=100)
    profile, columns = profile_of(data, spec)
    path = tmp_path / "no-time.parquet"
    frame = data["analysis"].iloc[:500].copy()
    frame["ts"] = frame["ts"].astype(object).where(frame.index != frame.index[250], None)
    frame.to_parquet(path)
    with pytest.raises(DataError) as local:
        list(evaluate_file(profile, str(path), columns, spec=spec))
    with pytest.raises(DataError) as found:
        list(evaluate_spark(profile, str(path), columns, spec=spec, session=spark))
    assert str(found.value).endswith(str(local.value).split(": ", 1)[1])
    with pytest.raises(DataError, match="no such file"):
        list(evaluate_spark(profile, str(tmp_path / "absent.parquet"), columns, spec=spec, session=spark))


def test_partials_merge_to_the_local_window(data: dict[str, Any]) -> None:
    """Without Spark: the rows of one window split over partitions in any order, merged on the driver, give the
    sketches one local accumulator gives in file order — including which categories the cap keeps."""
    spec = WindowSpec(chunk_size=50_000)
    profile, columns = profile_of(data, spec)

    kinds = {c.name: c.kind for c in profile.columns.values()}
    bucketing = {c.name: (c.sketch.center, c.sketch.scale) for c in profile.columns.values() if c.kind == "numeric"}
    plan = _Plan(columns, spec, kinds, bucketing, profile.task, profile.classes)
    frame = data["analysis"].drop(columns=["target"]).iloc[:20_000]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    one_window = RowBounds(((-(2**62), "", 0, 0, 0),))  # every row is after the first key: one window
    layout = Layout(plan, Source("analysis", ("f",)), (*kinds, "ts"), None, one_window)
    batches = [b.append_column(FILE, pa.array(["f"] * b.num_rows)).append_column(
        BLOCK, pa.array([k] * b.num_rows, pa.int64())) for k, b in enumerate(table.to_batches(max_chunksize=3_000))]
    partitions = [batches[4:], batches[:2], batches[2:4]]  # the splits of a file, in another order
    blobs = [blob for part in partitions for _, blob in window_states(layout, part)]
    merged = merge_states(plan, blobs[::-1])
    expected = _Accumulator(kinds, bucketing)
    expected.add({n: np.asarray(frame[n].to_numpy()) for n in kinds}, None, None)
    assert len(expected.sketches["merchant"].counts) == 1_000 + 1  # the cap is reached: order matters
    assert merged.rows == expected.rows == 20_000
    for name, sketch in expected.sketches.items():
        assert merged.sketches[name] == sketch, name
    assert merged.sketches["merchant"].counts == expected.sketches["merchant"].counts


def test_text_columns_parse_as_pyarrows_csv_reader(tmp_path: Path) -> None:
    """Without Spark: CSV columns that Spark hands over as text (an empty field as null) become what the local
    reader gets from pyarrow's CSV reader: its types, its null spellings, its booleans, empty strings kept."""
    import pyarrow.csv as pa_csv

    from otel_mlmon.batch.reader import DataFile, to_numpy
    from otel_mlmon.batch.spark_partials import parse_text

    path = tmp_path / "mixed.csv"
    path.write_text("n,x,flag,when,name,empty\n"
                    "1,0.5,true,2026-02-01 00:00:00+00:00,a,\n"
                    "NA,1e-3,False,2026-02-01 00:00:01.250+00:00,,\n"
                    ",nan,1,,NA,\n"
                    "-7,-2.25,0,2026-02-01 00:00:02+00:00,\"q,\"\"x\"\"\",\n")
    schema = DataFile(str(path)).schema()
    expected = pa_csv.read_csv(path)
    as_text = pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(
        column_types={n: pa.string() for n in schema.names}, strings_can_be_null=True, null_values=[""]))
    assert str(schema.field("when").type).startswith("timestamp") and schema.field("flag").type == pa.bool_()
    for name in schema.names:
        parsed = parse_text(as_text.column(name).combine_chunks(), schema.field(name).type, "mixed.csv", name)
        want = to_numpy(expected.column(name).combine_chunks(), "mixed.csv", name)
        got = to_numpy(parsed, "mixed.csv", name)
        if want.dtype.kind == "f":
            np.testing.assert_array_equal(got, want)
        else:
            assert got.tolist() == want.tolist(), name
    with pytest.raises(DataError, match="column 'n'"):
        parse_text(pa.array(["1", "x"]), pa.int64(), "mixed.csv", "n")


@pytest.mark.integration
def test_another_master_than_the_running_sessions_is_refused(spark: Any) -> None:
    from otel_mlmon.batch.spark import spark_session

    assert spark_session() is spark and spark_session("local[2]") is spark
    with pytest.raises(ValueError, match=r"already running.*local\[1\]"):
        spark_session("local[1]")


def test_segments_and_fairness_are_left_to_the_local_engine(data: dict[str, Any]) -> None:
    from otel_mlmon.batch.spark import evaluate_spark

    profile, columns = profile_of(data, WindowSpec(chunk_size=5_000))
    with pytest.raises(ValueError, match=r"--segment-by.*local engine"):
        list(evaluate_spark(profile, str(data["paths"]["analysis.parquet"]), columns, segmented=object()))


@pytest.mark.integration
def test_mlmon_evaluate_engine_spark_writes_the_local_engines_file(spark: Any, data: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    """The command line and the Python API take --engine spark / engine="spark": the same result file, byte for byte
    but the values' last bits (compared to 1e-9), and the usage errors of what Spark does not compute."""
    from otel_mlmon import batch, cli

    paths = data["paths"]
    flags = ["--reference", str(paths["reference.parquet"]), "--analysis", str(paths["analysis.parquet"]),
             "--labels", str(paths["labels.csv"]), "--id-column", "id", "--timestamp-column", "ts",
             "--target-column", "target", "--prediction-column", "prediction", "--score-column", "score",
             "--chunk-size", "10000"]
    assert cli.main(["evaluate", *flags, "--output", str(tmp_path / "local.csv")]) == 0
    assert cli.main(["evaluate", *flags, "--output", str(tmp_path / "spark.csv"), "--engine", "spark",
                     "--spark-master", "local[2]"]) == 0
    local, on_spark = pd.read_csv(tmp_path / "local.csv"), pd.read_csv(tmp_path / "spark.csv")
    assert len(local) == len(on_spark) > 0
    text = ["period", "window", "column", "kind", "metric", "rows", "labeled_rows", "alert", "window_start"]
    assert local[text].astype(str).equals(on_spark[text].astype(str))
    for name in ("value", "lower_threshold", "upper_threshold", "p_value"):
        np.testing.assert_allclose(on_spark[name], local[name], rtol=1e-9, atol=1e-9, equal_nan=True)
    assert cli.main(["evaluate", *flags, "--output", str(tmp_path / "x.csv"), "--spark-master", "local[2]"]) == 2
    with pytest.raises(ValueError, match="not computed on Spark"):
        batch.evaluate(str(paths["reference.parquet"]), str(paths["analysis.parquet"]), id_column="id",
                       prediction_column="prediction", engine="spark", segment_by="plan")
