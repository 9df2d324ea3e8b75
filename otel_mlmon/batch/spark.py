"""Batch evaluation on Apache Spark: ``mlmon evaluate --engine spark [--spark-master URL]``.

The same window results as the local engine (``runner.evaluate_file``), from data that Spark reads and splits:
Parquet or CSV files, or directories of them (partitioned datasets; their files are taken in path order). Spark
workers build each partition's partial window states with the local engine's own accumulator
(``batch.spark_partials``); the driver merges them — sketches are mergeable, counts add — and hands each window to
``engine.evaluate_window``. Labels are joined by id in Spark, and the labelled rows of each window (what exact
performance needs: the true and predicted labels and scores) come to the driver in file order.

The local engine's rules hold: time windows are ``[k·W, (k+1)·W)`` of the epoch; row windows take rows in
(event time, id) order with the file's row order breaking ties (``batch.order``): Spark sorts only the rows' keys
to find each row window's first key, and every row then finds its window without moving the data. A row's place
in file order is (file in path order, split, position in the split).

Executors need otel-mlmon (with its ``[batch]`` extra) installed, as the driver has it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from otel_mlmon.batch.output import MissingExtraError
from otel_mlmon.batch.reader import BATCH_ROWS, MAX_COLUMNS, DataError, DataFile, _pyarrow, file_format
from otel_mlmon.batch.runner import Columns, _check_columns, _joined, _Plan, column_kinds
from otel_mlmon.batch.spark_partials import (
    BLOCK,
    FILE,
    ID,
    LABEL,
    POS,
    STATE,
    TIME,
    WINDOW,
    Layout,
    RowBounds,
    Source,
    WindowState,
    in_order,
    key_rows,
    label_values,
    labeled_rows,
    merge_states,
    split_summaries,
    window_states,
)
from otel_mlmon.engine.estimate import ScoredRows
from otel_mlmon.engine.evaluate import LabeledRows, Policy, WindowData, evaluate_window
from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.engine.results import WindowResult, iso_utc
from otel_mlmon.engine.windows import WindowSpec

PathLike = str | os.PathLike[str]
NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"
BROADCAST_LABELS_BYTES = 64 << 20  # labels files up to this size are sent to every task (no shuffle of the rows)


def _pyspark() -> Any:
    try:
        import pyspark.sql
    except ImportError:
        raise MissingExtraError("--engine spark needs pyspark (and Java 17 or later): "
                                "pip install 'otel-mlmon[spark]'") from None
    return pyspark


def spark_session(master: str | None = None, conf: dict[str, str] | None = None) -> Any:
    """The running SparkSession, or a new one on ``master`` (default ``local[*]``) with ``conf``.

    Raises:
        ValueError: a session on another master is already running in this process.
    """
    sql = _pyspark().sql
    active = sql.SparkSession.getActiveSession()
    if active is not None:
        running = active.sparkContext.master
        if master is not None and running != master:
            raise ValueError(f"a SparkSession on {running!r} is already running in this process; stop it first or "
                             f"leave out --spark-master to use it (asked for {master!r})")
        return active
    asked, master = master, master or "local[*]"
    builder = (sql.SparkSession.builder.master(master).appName("otel-mlmon evaluate")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(BATCH_ROWS))
               .config("spark.ui.showConsoleProgress", "false"))
    if master.startswith("local"):  # workers run this very interpreter (and find otel_mlmon as it does)
        builder = builder.config("spark.pyspark.python", sys.executable)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    if asked is not None and session.sparkContext.master != asked:  # another thread's session, returned as it is
        raise ValueError(f"a SparkSession on {session.sparkContext.master!r} is already running in this process; "
                         f"stop it first or leave out --spark-master to use it (asked for {asked!r})")
    return session


@dataclass
class SparkData:
    """A dataset as Spark reads it: the frame (with each row's file and split), how its columns come out
    (``Source``), and its columns' types as the local reader would see them (``schema()``, for the checks)."""

    path: str
    frame: Any
    source: Source
    arrow_schema: Any
    size: int | None = None  # bytes of its files (None: not on the local file system)

    def schema(self) -> Any:
        return self.arrow_schema

    def columns(self) -> list[str]:
        return list(self.arrow_schema.names)

    def select(self, names: Sequence[str]) -> Any:
        functions = _pyspark().sql.functions
        return self.frame.select(*[_column(n) for n in dict.fromkeys(names)], functions.col(FILE),
                                 functions.col(BLOCK))


def _column(name: str) -> Any:
    return _pyspark().sql.functions.col("`" + name.replace("`", "``") + "`")


def _paths(source: PathLike | DataFile | Sequence[PathLike]) -> list[str]:
    if isinstance(source, DataFile):
        if type(source) is not DataFile:  # data held in memory (a DataFrame): not something Spark can read
            raise ValueError("--engine spark reads files and directories: give the data's path, or use the local "
                             "engine for a DataFrame")
        return [source.path]
    if isinstance(source, (str, os.PathLike)):
        return [os.fspath(source)]
    paths = [os.fspath(p) for p in source]
    if not paths:
        raise ValueError("no data path given")
    return paths


def _local(path: str) -> str | None:
    """The local file system path of ``path``, or None for another file system (hdfs://, s3a://, …)."""
    if path.startswith("file://"):
        return path[len("file://"):]
    return None if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", path) else path


def _first_file(path: str) -> tuple[str, str | None]:
    """(format, a local data file of it) of a file or a directory of files (the first in path order)."""
    local = _local(path)
    if local is None:  # another file system: the name tells, and a directory is taken for Parquet
        name = path.rstrip("/").lower()
        return (file_format(name) if "." in os.path.basename(name) else "parquet"), None
    if not os.path.exists(local):
        raise DataError(f"{path}: no such file or directory")
    if not os.path.isdir(local):
        return file_format(local), local
    for root, directories, files in os.walk(local):
        directories[:] = sorted(d for d in directories if not d.startswith(("_", ".")))
        for name in sorted(files):
            if name.startswith(("_", ".")):
                continue
            with contextlib.suppress(DataError):
                return file_format(name), os.path.join(root, name)
    raise DataError(f"{path}: no .parquet, .csv or .csv.gz file in this directory")


def read_data(session: Any, source: PathLike | DataFile | Sequence[PathLike],
              max_columns: int = MAX_COLUMNS) -> SparkData:
    """A dataset read by Spark (Parquet or CSV files, or directories of them)."""
    sql = _pyspark().sql
    functions, types = sql.functions, sql.types
    pa = _pyarrow()
    paths = _paths(source)
    found = [_first_file(p) for p in paths]
    formats = {f for f, _ in found}
    label = paths[0] if len(paths) == 1 else f"{paths[0]} (and {len(paths) - 1} more)"
    if len(formats) > 1:
        raise DataError(f"{label}: mixes {' and '.join(sorted(formats))} files; give files of one format")
    first = next((f for _, f in found if f is not None), None)
    text_types = None
    nanoseconds: frozenset[str] = frozenset()
    if formats == {"csv"}:
        if first is None:
            raise DataError(f"{label}: CSV is read from local files only; convert it to Parquet for this file system")
        schema = DataFile(first, max_columns).schema()  # the local reader's types (and the width check)
        text_types = {name: schema.field(name).type for name in schema.names}
        frame = session.read.csv(paths, schema=types.StructType([types.StructField(n, types.StringType())
                                                                 for n in schema.names]),
                                 header=True, enforceSchema=False, nullValue="\u0000", escape='"', mode="FAILFAST")
    else:
        if first is not None:
            file_schema = pa.parquet.read_schema(first)
            nanoseconds = frozenset(f.name for f in file_schema
                                    if pa.types.is_timestamp(f.type) and f.type.unit == "ns")
        if nanoseconds:  # Spark refuses them otherwise; restored by _spark_errors
            session.conf.set(NANOS_AS_LONG, "true")
        frame = session.read.parquet(*paths)
        from pyspark.sql.pandas.types import to_arrow_type

        fields = []
        for spark_field in frame.schema.fields:
            if spark_field.name in nanoseconds:
                fields.append(pa.field(spark_field.name, pa.timestamp("ns")))
                continue
            try:
                fields.append(pa.field(spark_field.name, to_arrow_type(spark_field.dataType, timezone="UTC")))
            except Exception:  # a type the engine reads as objects anyway (nested, …)
                fields.append(pa.field(spark_field.name, pa.binary()))
        schema = pa.schema(fields)
        if len(schema) > max_columns:
            raise DataError(f"{label}: {len(schema):,} columns, more than the {max_columns:,} allowed; raise "
                            "--max-columns to read it (memory and time grow with the columns)")
    frame = frame.select("*", functions.input_file_name().alias(FILE),
                         functions.input_file_block_start().alias(BLOCK))
    files = tuple(sorted(frame.inputFiles()))
    local = [_local(f) for f in files]
    size = sum(os.path.getsize(f) for f in local if f is not None) if None not in local else None
    return SparkData(label, frame, Source(label, files, text_types, nanoseconds), schema, size)


@contextlib.contextmanager
def _spark_errors(session: Any) -> Iterator[None]:
    """Errors of the data raised inside Spark's workers come back as the local engine's ``DataError``; the
    session's settings changed to read the data are restored."""
    previous = session.conf.get(NANOS_AS_LONG, None)
    try:
        yield
    except (DataError, ValueError, MissingExtraError):
        raise
    except Exception as exc:
        found = re.search(r"DataError: (.+)", str(exc))
        if found:
            raise DataError(found.group(1).strip()) from None
        if type(exc).__name__ == "AnalysisException":
            raise DataError(f"Spark cannot read the data: {exc}") from None
        raise
    finally:
        if previous is None:
            session.conf.unset(NANOS_AS_LONG)
        else:
            session.conf.set(NANOS_AS_LONG, previous)


def _schema(*fields: tuple[str, str]) -> Any:
    types = _pyspark().sql.types
    kinds = {"long": types.LongType(), "double": types.DoubleType(), "string": types.StringType(),
             "binary": types.BinaryType(), "boolean": types.BooleanType()}
    return types.StructType([types.StructField(name, kinds[kind]) for name, kind in fields])


KEY_FIELDS = ((TIME, "long"), (ID, "string"), (FILE, "long"), (BLOCK, "long"), (POS, "long"))


def _row_windows(data: SparkData, layout: Layout) -> Layout:
    """The layout that gives each row its row window: from its split's first rank when the data is already in
    event-time order (one pass over the time and id columns, as the local engine's check), else from the window
    starts of a sort of the rows' keys."""
    pa = _pyarrow()
    fields = ((FILE, "long"), (BLOCK, "long"), ("rows", "long"), ("ordered", "boolean"), ("first_time", "long"),
              ("first_id", "string"), ("last_time", "long"), ("last_id", "string"))
    arrow = pa.schema([(name, {"long": pa.int64(), "boolean": pa.bool_(), "string": pa.string()}[kind])
                       for name, kind in fields])

    def summaries(batches: Iterator[Any]) -> Iterator[Any]:
        for split in split_summaries(layout, batches):
            yield pa.RecordBatch.from_pydict(split, schema=arrow)

    names = [n for n in (layout.timestamp, layout.id_column) if n]
    table = data.select(names).mapInArrow(summaries, _schema(*fields)).toArrow()
    ranks = in_order(table.to_pylist(), layout.id_column is not None)
    if ranks is not None:
        return replace(layout, ranks=ranks)
    return replace(layout, bounds=_row_bounds(data, layout))


def _row_bounds(data: SparkData, layout: Layout) -> RowBounds:
    """Each row window's first key: Spark sorts the rows' keys (event time, id, file order), counts the rows of
    each sorted partition, and picks the keys at the ranks where windows start."""
    functions = _pyspark().sql.functions
    pa = _pyarrow()
    key_schema = pa.schema([(TIME, pa.int64()), (ID, pa.string()), (FILE, pa.int64()), (BLOCK, pa.int64()),
                            (POS, pa.int64())])

    def keys(batches: Iterator[Any]) -> Iterator[Any]:
        for columns in key_rows(layout, batches):
            yield pa.RecordBatch.from_pydict(columns, schema=key_schema)

    order = [name for name, _ in KEY_FIELDS]
    names = [n for n in (layout.timestamp, layout.id_column) if n]
    part = functions.spark_partition_id()
    ordered = (data.select(names).mapInArrow(keys, _schema(*KEY_FIELDS)).orderBy(*order)
               .withColumn("__mlmon_part", part)
               .withColumn("__mlmon_local", functions.monotonically_increasing_id()
                           - functions.shiftleft(part.cast("long"), 33))
               .persist())
    try:
        counts = {int(r[0]): int(r[1]) for r in ordered.groupBy("__mlmon_part").count().collect()}
        total = sum(counts.values())
        if total == 0:
            return RowBounds(())
        offsets, running = [], 0
        for part_number in range(max(counts) + 1):
            offsets.append(running)
            running += counts.get(part_number, 0)
        rank = (functions.element_at(functions.array(*[functions.lit(o) for o in offsets]),
                                     functions.col("__mlmon_part") + 1) + functions.col("__mlmon_local"))
        spec = layout.plan.spec
        if spec.chunk_size is not None:
            starts = functions.col("__mlmon_rank") % spec.chunk_size == 0
            expected = -(-total // spec.chunk_size)
        else:
            assert spec.chunks is not None
            expected = min(spec.chunks, max(total, 1))
            starts = functions.expr(f"__mlmon_rank = 0 OR (__mlmon_rank * {expected}) div {total} != "
                                    f"((__mlmon_rank - 1) * {expected}) div {total}")  # rank_windows' rule
        rows = ordered.withColumn("__mlmon_rank", rank).filter(starts).select(*order).collect()
    finally:
        ordered.unpersist()
    bounds = tuple(sorted((int(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows))
    if len(bounds) != expected:  # the sorted partitions changed between the two passes: never seen
        raise RuntimeError(f"row windows: found {len(bounds)} window starts, expected {expected}")
    return RowBounds(bounds)


def _window_states(data: SparkData, layout: Layout) -> dict[float, WindowState]:
    pa = _pyarrow()
    out_schema = pa.schema([(WINDOW, pa.float64()), (STATE, pa.binary())])

    def states(batches: Iterator[Any]) -> Iterator[Any]:
        for key, blob in window_states(layout, batches):
            yield pa.RecordBatch.from_pydict({WINDOW: [key], STATE: [blob]}, schema=out_schema)

    table = data.select(layout.names).mapInArrow(states, _schema((WINDOW, "double"), (STATE, "binary"))).toArrow()
    parts: dict[float, list[bytes]] = {}
    for key, blob in zip(table.column(WINDOW).to_pylist(), table.column(STATE).to_pylist()):
        parts.setdefault(key, []).append(blob)
    return {key: merge_states(layout.plan, blobs) for key, blobs in parts.items()}


@dataclass
class Labels:
    """A labels file read by Spark, and the column holding the labels."""

    data: SparkData
    id_column: str
    target: str


def read_labels(session: Any, source: PathLike | DataFile | Sequence[PathLike], columns: Columns,
                max_columns: int = MAX_COLUMNS) -> Labels:
    """A labels file (one label per id, the first in file order wins), checked as ``runner.load_labels`` does."""
    if not columns.id_column or not columns.target_column:
        raise ValueError("--labels needs --id-column and --target-column (the labels file has both): name them, "
                         "or use a reference profile that does")
    data = read_data(session, source, max_columns)
    _check_columns(data, Columns(id_column=columns.id_column), need_target=False)  # type: ignore[arg-type]
    if columns.target_column not in data.columns():
        raise DataError(f"{data.path}: no column {columns.target_column!r} (columns: {', '.join(data.columns())})")
    return Labels(data, columns.id_column, columns.target_column)


def _scoring() -> Callable[..., Any] | None:
    """The local engine's every-row reader for estimated performance (``runner._scored``), where it has one."""
    from otel_mlmon.batch import runner

    return getattr(runner, "_scored", None)


def _output_rows(data: SparkData, layout: Layout,
                 labels: Labels | None) -> Callable[[float], tuple[LabeledRows, Any]]:
    """Each window's labelled rows (as ``runner._joined`` joins them) and, where the local engine reads them, its
    scored rows (every row's prediction and scores, ``runner._scored``): the rows' outputs and labels come to the
    driver and are put in file order, as the local engine meets them."""
    sql = _pyspark().sql
    functions, types = sql.functions, sql.types
    pa = _pyarrow()
    plan = layout.plan
    columns = plan.columns
    target = columns.target_column
    scoring = _scoring()
    every_row = scoring is not None and plan.task == "classification"
    has_labels = target is not None and (labels is not None or target in data.columns())
    if not columns.prediction_column or not (has_labels or every_row):
        return lambda key: (LabeledRows(), ScoredRows() if scoring is not None else None)
    outputs = [n for n in columns.outputs() if n in data.columns()]
    frame_types = {f.name: f.dataType for f in data.frame.schema.fields}
    keys = [n for n in (layout.timestamp, layout.id_column, columns.id_column if labels else None) if n]
    key_layout = replace(layout, names=tuple(dict.fromkeys(keys)))
    own_label = target if labels is None and has_labels else None
    fields = [types.StructField(n, frame_types[n]) for n in outputs]
    if own_label is not None:
        fields.append(types.StructField(LABEL, frame_types[own_label]))
    fields += [types.StructField(WINDOW, types.DoubleType()), types.StructField(FILE, types.LongType()),
               types.StructField(BLOCK, types.LongType()), types.StructField(POS, types.LongType())]
    if labels is not None:
        fields.append(types.StructField(ID, types.StringType()))
    join_id = columns.id_column if labels is not None else None  # (closures take plain values: they are shipped)

    def rows(batches: Iterator[Any]) -> Iterator[Any]:
        for extra, passed in labeled_rows(key_layout, batches, outputs, own_label, join_id, every_row):
            arrays = [passed.column(n) for n in outputs] + ([passed.column(own_label)] if own_label else [])
            names = [*outputs, *([LABEL] if own_label else [])]
            for name in (WINDOW, FILE, BLOCK, POS, ID):  # in the order of the declared schema
                if name in extra:
                    arrays.append(pa.array(extra[name], type=pa.string() if name == ID else None))
                    names.append(name)
            yield pa.RecordBatch.from_arrays(arrays, names=names)

    frame = data.select([*keys, *outputs, *([own_label] if own_label else [])]).mapInArrow(
        rows, types.StructType(fields))
    label_source, label_name = data.source, target
    if labels is not None:
        label_type = {f.name: f.dataType for f in labels.data.frame.schema.fields}[labels.target]
        source, id_column, target_column = labels.data.source, labels.id_column, labels.target

        def values(batches: Iterator[Any]) -> Iterator[Any]:
            for extra, label in label_values(source, batches, id_column, target_column):
                yield pa.RecordBatch.from_arrays(
                    [pa.array(extra[ID], type=pa.string()), label, pa.array(extra[FILE], type=pa.int64()),
                     pa.array(extra[BLOCK], type=pa.int64()), pa.array(extra[POS], type=pa.int64())],
                    names=[ID, LABEL, FILE, BLOCK, POS])

        found = labels.data.select([labels.id_column, labels.target]).mapInArrow(values, types.StructType([
            types.StructField(ID, types.StringType()), types.StructField(LABEL, label_type),
            types.StructField(FILE, types.LongType()), types.StructField(BLOCK, types.LongType()),
            types.StructField(POS, types.LongType())]))
        first = found.groupBy(ID).agg(functions.min_by(LABEL, functions.struct(FILE, BLOCK, POS)).alias(LABEL))
        if labels.data.size is not None and labels.data.size <= BROADCAST_LABELS_BYTES:
            first = functions.broadcast(first)  # a small labels file joins without moving the data rows
        frame = frame.join(first, on=ID, how="left" if every_row else "inner")
        label_source, label_name = labels.data.source, labels.target
    label_columns = [LABEL] if has_labels else []
    table = frame.select(*[_column(n) for n in outputs], *label_columns, WINDOW, FILE, BLOCK, POS).toArrow()
    order = np.lexsort([table.column(n).to_numpy() for n in (POS, BLOCK, FILE, WINDOW)])  # windows, file order
    table = table.select([*outputs, *label_columns, WINDOW]).take(pa.array(order))
    windows = table.column(WINDOW).to_numpy()
    change = np.flatnonzero(windows[1:] != windows[:-1]) + 1
    runs = {float(windows[begin]): (begin, end) for begin, end in zip([0, *change.tolist()],
                                                                       [*change.tolist(), windows.size])
            } if windows.size else {}
    join_plan = replace(plan, labels=None)

    def rows_of(key: float) -> tuple[LabeledRows, Any]:
        """One window's rows as the local engine's lists (made when the window is judged: memory holds the
        lists of one window at a time, as the local engine's does)."""
        begin, end = runs.get(key, (0, 0))
        part = table.slice(begin, end - begin)
        batch = data.source.numpy(part, outputs)
        if has_labels and target is not None and label_name is not None:
            batch[target] = label_source.numpy(part, [LABEL], rename={LABEL: label_name})[LABEL]
        return (_joined(batch, join_plan, None) if has_labels else LabeledRows(),
                scoring(batch, join_plan, None) if scoring is not None else None)

    return rows_of


def _plan(profile: ReferenceProfile, data: SparkData, columns: Columns, spec: WindowSpec | None) -> _Plan:
    """What ``runner.evaluate_file`` windows the analysis data with (the same rules)."""
    types = _check_columns(data, columns, need_target=False)  # type: ignore[arg-type]  # path and schema()
    kinds, bucketing = column_kinds(profile, types, columns)
    return _Plan(columns, spec or profile.window, kinds, bucketing, profile.task, profile.classes)


def evaluate_spark(profile: ReferenceProfile, path: PathLike | DataFile | Sequence[PathLike], columns: Columns,
                   labels_path: PathLike | DataFile | Sequence[PathLike] | None = None,
                   policy: Policy | None = None, progress: Callable[[int], None] | None = None,
                   spec: WindowSpec | None = None, max_columns: int = MAX_COLUMNS,
                   observe: Callable[[WindowData, list[WindowResult]], None] | None = None, *,
                   spark_master: str | None = None, session: Any = None, segmented: Any = None,
                   positive_class: str | None = None) -> Iterator[WindowResult]:
    """Window results of the analysis data computed on Spark: the rows ``runner.evaluate_file`` gives for the
    same data (a file, a directory of files, or a list of them), window by window; ``observe`` gets each window
    with its results, as there.

    Args:
        spark_master: the master of a new SparkSession (``local[4]``, ``spark://host:7077``, …; default: the
            running session, else ``local[*]``).
        session: a SparkSession to use (instead of ``spark_master``).
        segmented, positive_class: as ``evaluate_file``'s; segments and fairness are not computed on Spark yet
            (a usage error, so that the local engine is chosen for them).

    Raises:
        MissingExtraError: pyspark is not installed.
        ValueError: bad usage.
        DataError: a problem with the data.
    """
    wanted = [flag for flag, given in (("--segment-by", segmented is not None or getattr(columns, "segment_by", None)),
                                       ("--sensitive-column", getattr(columns, "sensitive_column", None)))
              if given]
    if wanted:
        raise ValueError(f"--engine spark does not compute {' or '.join(wanted)} yet; use the local engine for it")
    del positive_class  # fairness's favourable class: no fairness on Spark yet
    session = session if session is not None else spark_session(spark_master)
    with _spark_errors(session):
        data = read_data(session, path, max_columns)
        plan = _plan(profile, data, columns, spec)
        labels = read_labels(session, labels_path, columns, max_columns) if labels_path is not None else None
        # the id column orders ties of event time (row windows)
        id_column = columns.id_column if plan.spec.by_rows and columns.id_column in data.columns() else None
        names = tuple(dict.fromkeys([*plan.kinds, *(n for n in (columns.timestamp_column, id_column) if n)]))
        layout = Layout(plan, data.source, names, id_column)
        if plan.spec.by_rows:
            layout = _row_windows(data, layout)
        states = _window_states(data, layout)
        outputs = _output_rows(data, layout, labels)
    results: list[WindowResult] = []
    for index, key in enumerate(sorted(states)):
        state = states[key]
        if plan.spec.by_rows:
            number, start, end = int(key), iso_utc(state.first), iso_utc(state.last)
        else:
            number, start, end = index, iso_utc(key), iso_utc(key + (plan.spec.seconds or 0))
        labeled, scored = outputs(key)
        window = WindowData("analysis", number, state.rows, state.sketches, labeled, start, end, scored=scored)
        found = evaluate_window(profile, window, policy)
        if observe is not None:
            observe(window, found)
        results.extend(found)
    if progress is not None:
        progress(sum(state.rows for state in states.values()))
    yield from results
