"""The batch path in Python: ``evaluate`` and ``build_reference`` take the ``mlmon`` command's options as keywords
and return ``Results``; ``mlmon evaluate`` and ``mlmon reference build`` are these functions behind a parser.

Data is a file path (Parquet, CSV, CSV.gz) or a pandas DataFrame. ``Results`` holds the window-result rows of
DESIGN.md §4 (``.frame`` as a DataFrame, ``.alerts()``), writes them (``.write``, ``.to_html``, ``.to_tensorboard``,
``.to_mlflow``), shows a compact summary in Jupyter, and reads a processor's ``GET /v1/results``
(``Results.from_processor``).

Segments (``segment_by``): the results also hold each segment's rows (``SegmentWindowResult``), and the outputs a
trailing ``segment`` column; a reference built with segments is saved as a segmented profile document
(``engine.segments.SegmentedProfile``), which ``evaluate(reference="profile.json")`` reads back. Fairness
(``sensitive_column``): ``kind=fairness`` rows per window.

Example (a notebook)::

    from otel_mlmon import batch
    results = batch.evaluate(reference="train.parquet", analysis=serving_frame, target_column="churned",
                             prediction_column="predicted", score_column="score", chunk_size=1000)
    results            # the summary table
    results.alerts()   # the analysis rows that alerted
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from otel_mlmon.batch.output import output_format, results_frame, write_results
from otel_mlmon.batch.reader import BATCH_ROWS, MAX_COLUMNS, DataError, DataFile, _pyarrow
from otel_mlmon.batch.report_data import ReportData
from otel_mlmon.batch.runner import (
    Columns,
    ReferenceBuild,
    build_reference_profile,
    columns_from_profile,
    evaluate_file,
)
from otel_mlmon.engine.evaluate import Policy, evaluate_window, reference_results
from otel_mlmon.engine.fairness import fairness_results
from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.engine.results import COLUMNS, SEGMENT, WindowResult, segment_of, with_segment
from otel_mlmon.engine.segments import FORMAT as SEGMENTED_FORMAT
from otel_mlmon.engine.segments import MAX_SEGMENTS, SegmentedProfile, SegmentResult
from otel_mlmon.engine.windows import WindowSpec

__all__ = ["FrameData", "Results", "build_reference", "evaluate"]

PathLike = str | os.PathLike[str]


class FrameData(DataFile):
    """A pandas DataFrame read as a data file (through one Arrow table, in the file reader's row batches).

    Args:
        frame: the rows (the index is not a column).
        name: how errors name the data (``"analysis DataFrame"``).
        max_columns: the width cap of ``--max-columns``.
    """

    def __init__(self, frame: Any, name: str, max_columns: int = MAX_COLUMNS) -> None:
        self.path = name
        self.max_columns = max_columns
        self.format = "DataFrame"
        self._block_size = 0
        self._check_width(len(frame.columns))
        pa = _pyarrow()
        names = [str(c) for c in frame.columns]
        if len(set(names)) != len(names):
            repeated = sorted({n for n in names if names.count(n) > 1})
            raise DataError(f"{name}: repeated column name(s) {', '.join(map(repr, repeated))}; rename them")
        try:
            self._table = pa.Table.from_pandas(frame.set_axis(names, axis=1), preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"{name}: a column cannot be read as one type ({exc}); give each column values of "
                            "one type (numbers, text or times)") from None
        self._schema = self._table.schema

    def schema(self) -> Any:
        return self._schema

    def num_rows(self) -> int:
        return int(self._table.num_rows)

    def _batches(self, columns: list[str] | None) -> Iterator[Any]:
        table = self._table.select(columns) if columns else self._table
        yield from table.to_batches(max_chunksize=BATCH_ROWS)


def _data(source: Any, role: str, max_columns: int) -> str | DataFile:
    """A file path as text, or a DataFrame wrapped; anything else is a usage error."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if hasattr(source, "columns") and hasattr(source, "iloc"):  # a pandas DataFrame (pandas imported only here)
        return FrameData(source, f"{role} DataFrame", max_columns)
    raise TypeError(f"{role} must be a file path (.parquet, .csv, .csv.gz) or a pandas DataFrame, "
                    f"got {type(source).__name__}")


def _names(value: str | Sequence[str] | None, what: str) -> list[str] | None:
    """A list of names given as a list or as the command line's comma-separated text."""
    if value is None:
        return None
    if isinstance(value, str):
        return [n.strip() for n in value.split(",") if n.strip()]
    if not all(isinstance(n, str) for n in value):
        raise TypeError(f"{what} must be a list of column names or a comma-separated string")
    return list(value)


def _pairs(value: str | Mapping[str, Any] | None, flag: str, shape: str) -> list[tuple[str, str]]:
    """``a=b,c=d`` (the command line) or a mapping, as [(a, b), (c, d)]."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [(str(k), str(v)) for k, v in value.items()]
    out = []
    for part in value.split(","):
        key, sep, item = part.partition("=")
        if not sep or not key.strip() or not item.strip():
            raise ValueError(f"{flag} takes {shape},… (got {part!r})")
        out.append((key.strip(), item.strip()))
    return out


def _thresholds(value: str | Mapping[str, float] | None) -> tuple[tuple[str, float], ...]:
    out = []
    for method, text in _pairs(value, "--thresholds", "method=number"):
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ValueError(f"--thresholds takes method=number,… (got {method}={text!r})")
        out.append((method, number))
    return tuple(out)


def _spec(chunk_size: int | None, window: str | None, chunks: int | None,
          default: WindowSpec | None = None) -> WindowSpec:
    if chunk_size is None and window is None and chunks is None:
        return default if default is not None else WindowSpec(chunks=10)
    given = [flag for flag, value in (("--chunk-size", chunk_size), ("--window", window), ("--chunks", chunks))
             if value is not None]
    if len(given) > 1:
        raise ValueError(f"give one of --chunk-size, --window or --chunks, not {' and '.join(given)}")
    return WindowSpec(chunk_size=chunk_size, window=window, chunks=chunks)


def columns_from_options(id_column: str | None, timestamp_column: str | None, target_column: str | None,
                         prediction_column: str | None, score_column: str | None,
                         score_columns: str | Mapping[str, str] | None, task: str | None,
                         features: str | Sequence[str] | None, categorical: str | Sequence[str] | None,
                         segment_by: str | None = None, sensitive_column: str | None = None) -> Columns:
    """The column options (as ``evaluate`` takes them) as ``Columns``."""
    if task is not None and task not in ("classification", "regression"):
        raise ValueError(f"task must be classification or regression, got {task!r}")
    pairs = dict(_pairs(score_columns, "--score-columns", "label=column"))
    if score_column and pairs:
        raise ValueError("give --score-column (binary) or --score-columns (multiclass), not both")
    return Columns(id_column=id_column, timestamp_column=timestamp_column, target_column=target_column,
                   prediction_column=prediction_column, score_column=score_column, score_columns=pairs,
                   features=_names(features, "features"), categorical=_names(categorical, "categorical") or [],
                   task=task, segment_by=segment_by, sensitive_column=sensitive_column)


def _check_extras(tensorboard: PathLike | None, mlflow: bool) -> None:
    """Refuse before reading any data when an asked-for output's package is missing."""
    if tensorboard is not None:
        from otel_mlmon.batch.tensorboard import writer_class

        writer_class()
    if mlflow:
        from otel_mlmon.batch.mlflow_log import client_class

        client_class()


def evaluate(reference: PathLike | Any, analysis: PathLike | Any, *, labels: PathLike | Any | None = None,
             model: str | None = None, model_version: str | None = None,
             id_column: str | None = None, timestamp_column: str | None = None, target_column: str | None = None,
             prediction_column: str | None = None, score_column: str | None = None,
             score_columns: str | Mapping[str, str] | None = None, task: str | None = None,
             features: str | Sequence[str] | None = None, categorical: str | Sequence[str] | None = None,
             chunk_size: int | None = None, window: str | None = None, chunks: int | None = None,
             methods: str | Sequence[str] | None = None, preset: str | None = None,
             thresholds: str | Mapping[str, float] | None = None, max_columns: int = MAX_COLUMNS,
             output: PathLike | None = None, report: PathLike | None = None, tensorboard: PathLike | None = None,
             mlflow_experiment: str | None = None, mlflow_run: str | None = None,
             mlflow_tracking_uri: str | None = None, segment_by: str | None = None,
             max_segments: int | None = None, sensitive_column: str | None = None,
             positive_class: str | None = None, engine: str = "local", spark_master: str | None = None,
             progress: Callable[[int], None] | None = None) -> Results:
    """Drift, data quality and realized performance of the analysis data, window by window: ``mlmon evaluate``.

    Args:
        reference: reference data (a file or a DataFrame), a reference profile (``.json`` file,
            ``ReferenceProfile``, or the ``Results`` of ``build_reference``).
        analysis: the data to judge (a file or a DataFrame).
        labels: late labels (a file or a DataFrame with the id and target columns).
        model, model_version: the model's name and version in the results (default: the profile's).
        id_column … categorical: the column flags (``features``/``categorical``: a list or comma-separated text;
            ``score_columns``: ``{label: column}`` or ``"label=column,…"``).
        chunk_size, window, chunks: at most one window spec (default: the profile's, else 10 windows a period).
        methods, preset, thresholds: drift methods, another product's defaults, constant thresholds
            (``{"psi": 0.2}`` or ``"psi=0.2"``).
        output: also write the rows (``.csv``, ``.json``, ``.parquet``).
        report: also write the HTML report.
        tensorboard: also write the scalars into this TensorBoard log directory.
        mlflow_experiment, mlflow_run: also log to MLflow, into a new run of this experiment or into this run;
            ``mlflow_tracking_uri`` defaults to ``MLFLOW_TRACKING_URI``.
        segment_by: also drift, data quality and performance per value of this column (the ``max_segments``
            most frequent in the reference, default 10, the rest as ``__other__``); the results gain a ``segment``
            column. A reference profile must have been built with the same ``segment_by`` (a segmented profile
            brings its own: ``segment_by`` may then be left out).
        sensitive_column: fairness across this column's values per window (``kind=fairness`` rows: demographic
            parity and equal opportunity differences, disparate-impact ratio); not a default feature.
        positive_class: the favourable prediction for fairness (default: a binary model's positive class).
        engine: ``local`` (this process) or ``spark`` (Apache Spark reads the analysis and labels files or
            directories and builds the windows in parallel, with the same results: ``otel_mlmon.batch.spark``);
            ``spark_master`` is its master URL (default ``local[*]``).
        progress: called with the number of rows of each batch read.

    Raises:
        ValueError: bad usage (conflicting or malformed options; exit code 2 on the command line).
        TypeError: an argument of the wrong type.
        DataError: a problem with the data (a file, a column, a value; exit code 1).
        MissingExtraError: an asked-for output whose package is not installed.
        OutputError: TensorBoard or MLflow refused the results.
    """
    if output is not None:
        output_format(os.fspath(output))
    if engine not in ("local", "spark"):
        raise ValueError(f"engine must be 'local' or 'spark', got {engine!r}")
    if spark_master is not None and engine != "spark":
        raise ValueError("--spark-master is for --engine spark")
    if engine == "spark" and (segment_by is not None or sensitive_column is not None):
        raise ValueError("--segment-by and --sensitive-column are not computed on Spark yet: use --engine local")
    if mlflow_experiment is not None and mlflow_run is not None:
        raise ValueError("give --mlflow-experiment (a new run) or --mlflow-run (an existing run), not both")
    _check_extras(tensorboard, mlflow_experiment is not None or mlflow_run is not None)
    policy = Policy(methods=tuple(_names(methods, "methods") or ()) or None, preset=preset,
                    thresholds=_thresholds(thresholds))
    columns = columns_from_options(id_column, timestamp_column, target_column, prediction_column, score_column,
                                   score_columns, task, features, categorical, segment_by, sensitive_column)
    _check_options(columns, max_segments, positive_class)
    profile, segmented = _profile_of(reference)
    if profile is None and isinstance(reference, (str, os.PathLike)) and os.fspath(reference).lower().endswith(
            ".json"):
        profile, segmented = _load_profile(os.fspath(reference))
    if profile is not None:
        columns = _segments_of_profile(columns, segmented, max_segments)
        _check_fairness(profile, columns, positive_class)
        report_data = ReportData(profile)
        spec = _spec(chunk_size, window, chunks, profile.window)
        columns = columns_from_profile(profile, columns)
        reference_rows = reference_results(profile, policy)
        if segmented is not None:
            reference_rows += [with_segment(r, name) for name, part in segmented.segments.items()
                               for r in reference_results(part, policy)]
    else:
        spec = _spec(chunk_size, window, chunks)
        if spec.window is not None and not columns.timestamp_column:
            raise ValueError("--window needs --timestamp-column")
        if max_segments is not None and not columns.segment_by:
            raise ValueError("--max-segments needs --segment-by")
        built = build_reference_profile(_data(reference, "reference", max_columns), columns, spec,
                                        model or "model", model_version or "", None, policy, progress, max_columns,
                                        max_segments or MAX_SEGMENTS, positive_class)
        profile, segmented = built.profile, built.segmented
        _check_fairness(profile, columns, positive_class)
        report_data = ReportData(profile)
        reference_rows = _reference_window_rows(built, policy, report_data)
    if spec.window is not None and not columns.timestamp_column:
        raise ValueError("--window needs --timestamp-column (the reference profile names none)")
    if model is not None or model_version is not None:
        profile = dataclasses.replace(profile, model=profile.model if model is None else model,
                                      version=profile.version if model_version is None else model_version)
    run: Callable[..., Any] = evaluate_file
    extra: dict[str, Any] = {}
    if engine == "spark":
        from otel_mlmon.batch.spark import evaluate_spark

        run, extra = evaluate_spark, {"spark_master": spark_master}
    analysis_rows = list(run(profile, _data(analysis, "analysis", max_columns), columns,
                             None if labels is None else _data(labels, "labels", max_columns), policy,
                             progress, spec, max_columns, observe=report_data.add,
                             segmented=segmented if columns.segment_by else None,
                             positive_class=positive_class, **extra))
    rows = reference_rows + analysis_rows
    if model is not None or model_version is not None:
        rows = [dataclasses.replace(r, model=profile.model, model_version=profile.version) for r in rows]
    results = Results(rows, profile, report_data, segmented if columns.segment_by else None)
    results.save(output=output, report=report, tensorboard=tensorboard, mlflow_experiment=mlflow_experiment,
                 mlflow_run=mlflow_run, mlflow_tracking_uri=mlflow_tracking_uri)
    return results


def _profile_of(reference: Any) -> tuple[ReferenceProfile | None, SegmentedProfile | None]:
    """The profile (and segmented profile) a reference given as an object carries; (None, None) for data."""
    if isinstance(reference, ReferenceProfile):
        return reference, None
    if isinstance(reference, SegmentedProfile):
        return reference.whole, reference
    if isinstance(reference, Results):
        if reference.profile is None:
            raise ValueError("these results carry no reference profile (results read from a processor); give the "
                             "reference data or profile file")
        return reference.profile, reference.segmented
    return None, None


def _load_profile(path: str) -> tuple[ReferenceProfile, SegmentedProfile | None]:
    """A saved profile: a reference profile, or a segmented one (``mlmon reference build --segment-by``)."""
    source = f"reference profile {path!r}"
    try:
        with open(path, "rb") as handle:
            document = handle.read()
        try:
            data = json.loads(document)
        except (ValueError, RecursionError):
            data = None  # the profile reader says what is wrong with it
        if isinstance(data, dict) and data.get("format") == SEGMENTED_FORMAT:
            segmented = SegmentedProfile.from_dict(data, source)
            return segmented.whole, segmented
        return ReferenceProfile.loads(document, source), None
    except FileNotFoundError:
        raise FileNotFoundError(f"{source} does not exist") from None
    except OSError as exc:
        raise DataError(f"{source} is not readable: {exc}") from None
    except ValueError as exc:
        raise DataError(str(exc)) from None


def _check_options(columns: Columns, max_segments: int | None, positive_class: str | None) -> None:
    """Segment and fairness options that make no sense together, before any data is read."""
    if max_segments is not None and (isinstance(max_segments, bool) or not isinstance(max_segments, int)
                                     or max_segments < 2):
        raise ValueError(f"--max-segments must be a whole number of at least 2, got {max_segments!r}")
    if positive_class is not None and not columns.sensitive_column:
        raise ValueError("--positive-class is the favourable prediction for fairness: give --sensitive-column too")
    if columns.sensitive_column and columns.task == "regression":
        raise ValueError("--sensitive-column is for classifiers (fairness compares predicted classes across "
                         "groups); this model is a regression")
    for flag, name in (("--segment-by", columns.segment_by), ("--sensitive-column", columns.sensitive_column)):
        roles = {"--id-column": columns.id_column, "--timestamp-column": columns.timestamp_column}
        clash = [role for role, column in roles.items() if name and column == name]
        if clash:
            raise ValueError(f"{flag} {name!r} is also the {clash[0]}: name a column of groups (a segment or a "
                             "sensitive attribute)")


def _segments_of_profile(columns: Columns, segmented: SegmentedProfile | None,
                         max_segments: int | None) -> Columns:
    """The segment column of a run with a reference profile: the segmented profile's (``--segment-by`` may
    repeat it); segments asked of a profile without them are a usage error."""
    if segmented is None:
        if columns.segment_by:
            raise ValueError(f"--segment-by {columns.segment_by!r}: the reference profile has no segments; build "
                             f"it with `mlmon reference build --segment-by {columns.segment_by}` (or give the "
                             "reference data instead of a profile)")
        if max_segments is not None:
            raise ValueError("--max-segments needs --segment-by")
        return columns
    if columns.segment_by and columns.segment_by != segmented.column:
        raise ValueError(f"--segment-by {columns.segment_by!r}: the reference profile's segments are of "
                         f"{segmented.column!r}; rebuild it with --segment-by {columns.segment_by}")
    if max_segments is not None and max_segments != segmented.max_segments:
        raise ValueError(f"--max-segments {max_segments}: the reference profile's segments were chosen with "
                         f"--max-segments {segmented.max_segments}; rebuild it to change them")
    return dataclasses.replace(columns, segment_by=segmented.column)


def _check_fairness(profile: ReferenceProfile, columns: Columns, positive_class: str | None) -> None:
    """A sensitive column needs a classifier's predicted labels and a favourable class."""
    if not columns.sensitive_column:
        return
    if profile.task != "classification":
        raise ValueError("--sensitive-column is for classifiers (fairness compares predicted classes across "
                         f"groups); model {profile.model!r} is a {profile.task} (numeric predictions without "
                         "scores are taken as one: give --task classification if it is a classifier)")
    if not (columns.prediction_column or profile.prediction_column):
        raise ValueError("--sensitive-column needs --prediction-column: fairness compares the predicted labels")
    classes = ", ".join(profile.classes[:20])
    if positive_class is None and len(profile.classes) != 2:
        raise ValueError(f"--sensitive-column on a model with {len(profile.classes)} classes needs "
                         f"--positive-class, the favourable prediction (classes: {classes})")
    if positive_class is not None and profile.classes and str(positive_class) not in profile.classes:
        raise ValueError(f"--positive-class {positive_class!r} is not a class of the model (classes: {classes})")


def _reference_window_rows(built: ReferenceBuild, policy: Policy | None, report_data: ReportData | None,
                           fairness_only: bool = False) -> list[WindowResult]:
    """Each reference window judged against the profile (the report gets the whole windows), followed by its
    segments' judged against theirs; ``fairness_only``: just the fairness rows."""
    def judge(profile: ReferenceProfile, window: Any) -> list[WindowResult]:
        return fairness_results(profile, window) if fairness_only else evaluate_window(profile, window, policy)

    by_window: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    for segment, windows in built.segment_windows.items():
        for window in windows:
            by_window[window.index].append((segment, window))
    order = list(built.segmented.segments) if built.segmented is not None else []
    rows: list[WindowResult] = []
    for window in built.windows:
        found = judge(built.profile, window)
        if report_data is not None:
            report_data.add(window, found)  # the reference windows' confusion counts
        rows += found
        parts = sorted(by_window[window.index], key=lambda item: (
            order.index(item[0]) if item[0] in order else len(order), item[0]))
        for segment, part in parts:
            profile = built.segmented.profile_for(segment) if built.segmented is not None else built.profile
            rows += [with_segment(r, segment) for r in judge(profile, part)]
    return rows


def build_reference(data: PathLike | Any, *, model: str, version: str = "", labels: PathLike | Any | None = None,
                    id_column: str | None = None, timestamp_column: str | None = None,
                    target_column: str | None = None, prediction_column: str | None = None,
                    score_column: str | None = None, score_columns: str | Mapping[str, str] | None = None,
                    task: str | None = None, features: str | Sequence[str] | None = None,
                    categorical: str | Sequence[str] | None = None, chunk_size: int | None = None,
                    window: str | None = None, chunks: int | None = None, max_columns: int = MAX_COLUMNS,
                    output: PathLike | None = None, segment_by: str | None = None,
                    max_segments: int | None = None, sensitive_column: str | None = None,
                    positive_class: str | None = None,
                    progress: Callable[[int], None] | None = None) -> Results:
    """A reference profile from data: ``mlmon reference build``.

    Returns ``Results`` of the reference period (each reference window judged against the profile, the rows
    ``evaluate`` reports as ``period="reference"``), with the profile as ``.profile``; pass them (or the saved
    profile) as ``evaluate(reference=…)``. With ``segment_by`` the profile has one profile per segment
    (``.segmented``; ``output`` is then a segmented profile document, which ``evaluate`` reads back) and the rows
    each segment's; with ``sensitive_column`` they include each reference window's fairness, and that column is
    not a default feature. Warns (``LooksLikeIdWarning``) about a default feature that looks like an id. Raises
    as ``evaluate`` does.
    """
    columns = columns_from_options(id_column, timestamp_column, target_column, prediction_column, score_column,
                                   score_columns, task, features, categorical, segment_by, sensitive_column)
    _check_options(columns, max_segments, positive_class)
    if max_segments is not None and not segment_by:
        raise ValueError("--max-segments needs --segment-by")
    spec = _spec(chunk_size, window, chunks)
    if spec.window is not None and not columns.timestamp_column:
        raise ValueError("--window needs --timestamp-column")
    built = build_reference_profile(_data(data, "reference", max_columns), columns, spec, model, version,
                                    None if labels is None else _data(labels, "labels", max_columns),
                                    progress=progress, max_columns=max_columns,
                                    max_segments=max_segments or MAX_SEGMENTS, positive_class=positive_class)
    profile, segmented = built.profile, built.segmented
    _check_fairness(profile, columns, positive_class)
    if output is not None:
        try:
            if segmented is not None:
                with open(output, "w", encoding="utf-8") as handle:
                    json.dump(segmented.to_dict(), handle, indent=1)
            else:
                profile.save(output)
        except OSError as exc:
            raise DataError(f"--output {os.fspath(output)}: cannot write: {exc}") from None
    rows = reference_results(profile)
    if segmented is not None:
        rows += [with_segment(r, name) for name, part in segmented.segments.items() for r in reference_results(part)]
    if columns.sensitive_column:
        rows += _reference_window_rows(built, None, None, fairness_only=True)
    return Results(rows, profile, segmented=segmented)


class Results:
    """Window results (the rows of DESIGN.md §4), and the reference profile they were judged against when known.

    Attributes:
        rows: the ``WindowResult`` rows, reference period first, in window order (with segments, each window's
            rows are followed by its segments', ``SegmentWindowResult`` rows).
        profile: the ``ReferenceProfile`` (None for results read from a processor).
        report_data: the windows' sketches and confusion counts the report draws (``evaluate`` keeps them: two
            sketches a column, a confusion table a window); None for results read from a processor.
        segmented: the ``SegmentedProfile`` of a run with segments (its ``whole`` is ``profile``), else None.
    """

    def __init__(self, rows: Iterable[WindowResult], profile: ReferenceProfile | None = None,
                 report_data: ReportData | None = None, segmented: SegmentedProfile | None = None) -> None:
        self.rows: tuple[WindowResult, ...] = tuple(rows)
        self.profile = profile
        self.report_data = report_data  # what the report draws beyond the rows (distributions, confusion counts)
        self.segmented = segmented
        self.mlflow_run_id: str | None = None  # the run ``to_mlflow`` (or ``evaluate``'s MLflow options) logged to
        self._frame: Any = None

    @property
    def segment_by(self) -> str | None:
        """The segment column of a run with segments (its outputs have a ``segment`` column), else None."""
        return self.segmented.column if self.segmented is not None else None

    @property
    def _segmented_output(self) -> bool:
        return self.segmented is not None or any(segment_of(r) is not None for r in self.rows)

    def whole_rows(self) -> list[WindowResult]:
        """The whole windows' rows (those of a run without segments)."""
        return [r for r in self.rows if segment_of(r) is None]

    @property
    def frame(self) -> Any:
        """The rows as a pandas DataFrame, columns and types as ``pandas.read_parquet`` reads ``--output
        results.parquet`` (``alert``: True, False or None for no verdict; ``segment``, with segments: None for
        the whole window)."""
        if self._frame is None:
            self._frame = results_frame(self.rows, self._segmented_output)
        return self._frame.copy()

    def alert_rows(self, period: str = "analysis") -> list[WindowResult]:
        return [r for r in self.rows if r.alert and r.period == period]

    def alerts(self, period: str = "analysis") -> Any:
        """The rows of ``period`` that alerted, as a DataFrame (the ``frame``'s columns and types)."""
        frame = self.frame
        return frame[(frame["period"] == period) & frame["alert"].eq(True)].reset_index(drop=True)

    @property
    def alerting(self) -> bool:
        """Whether a window of the analysis period alerted (``mlmon evaluate --fail-on-alert`` exits 3)."""
        return any(r.alert and r.period == "analysis" for r in self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        models = sorted({(r.model, r.model_version) for r in self.rows})
        names = ", ".join(f"{m}{' v' + v if v else ''}" for m, v in models) or "no rows"
        return (f"<Results {names}: {len(self.rows)} rows, {len(self._windows('analysis'))} analysis windows, "
                f"{len(self.alert_rows())} alerts>")

    def _windows(self, period: str) -> dict[int, WindowResult]:
        out: dict[int, WindowResult] = {}
        for r in self.rows:
            if r.period == period and segment_of(r) is None:
                out.setdefault(r.window, r)
        return out

    # --- outputs ----------------------------------------------------------------------------------------------
    def write(self, path: PathLike) -> int:
        """The rows as ``.csv``, ``.json`` or ``.parquet`` (as ``mlmon evaluate --output``); returns how many."""
        return write_results(self.rows, os.fspath(path), self._segmented_output)

    def to_html(self, path: PathLike | None = None) -> str:
        """The self-contained HTML report (as ``mlmon evaluate --report``): written to ``path`` (its path returned),
        or, without one, returned as text (as pandas' ``to_html``)."""
        from otel_mlmon.batch.report import render, write_report

        rows = [r if segment_of(r) is None else SegmentResult(segment_of(r), with_segment(r, None)) for r in self.rows]
        if path is None:
            return render(rows, self.profile, self.report_data)
        try:
            write_report(rows, os.fspath(path), self.profile, self.report_data)
        except OSError as exc:
            raise DataError(f"--report {os.fspath(path)}: cannot write: {exc}") from None
        return os.fspath(path)

    def to_tensorboard(self, logdir: PathLike) -> int:
        """Scalars per window into a TensorBoard log directory (runs ``reference`` and ``analysis``); returns how
        many were written (the whole windows'; segments' rows are in the results files and the report). Needs
        ``otel-mlmon[tensorboard]``."""
        from otel_mlmon.batch.tensorboard import write_scalars

        return write_scalars(self.whole_rows(), os.fspath(logdir))

    def to_mlflow(self, experiment: str | None = None, run_id: str | None = None, tracking_uri: str | None = None,
                  artifacts: Sequence[PathLike] = ()) -> str:
        """Log the analysis windows' metrics (step = window) and ``artifacts`` (default: the results as CSV and
        the HTML report) to MLflow: a new run of ``experiment`` or the existing run ``run_id``. Returns the run
        id. Needs ``otel-mlmon[mlflow]``."""
        from otel_mlmon.batch.mlflow_log import log_results

        if (experiment is None) == (run_id is None):
            raise ValueError("give an MLflow experiment (a new run) or a run id (an existing run), one of them")
        with tempfile.TemporaryDirectory(prefix="mlmon-") as tmp:
            files = [os.fspath(a) for a in artifacts]
            if not files:  # the results and the report, written for the run
                files = [os.path.join(tmp, "results.csv"), os.path.join(tmp, "report.html")]
                self.write(files[0])
                self.to_html(files[1])
            whole = self if not self._segmented_output else Results(self.whole_rows(), self.profile,
                                                                    self.report_data)  # metrics: whole windows
            self.mlflow_run_id = log_results(whole, experiment=experiment, run_id=run_id,
                                             tracking_uri=tracking_uri, artifacts=files)
        return self.mlflow_run_id

    def save(self, *, output: PathLike | None = None, report: PathLike | None = None,
             tensorboard: PathLike | None = None, mlflow_experiment: str | None = None,
             mlflow_run: str | None = None, mlflow_tracking_uri: str | None = None) -> str | None:
        """Every output asked for (``evaluate``'s keywords of the same names), in that order; MLflow gets the
        results and report files written here (or temporary ones). Returns the MLflow run id, if any."""
        if output is not None:
            self.write(output)
        if report is not None:
            self.to_html(report)
        if tensorboard is not None:
            self.to_tensorboard(tensorboard)
        if mlflow_experiment is None and mlflow_run is None:
            return None
        with tempfile.TemporaryDirectory(prefix="mlmon-") as tmp:
            files = [os.fspath(output) if output is not None else os.path.join(tmp, "results.csv"),
                     os.fspath(report) if report is not None else os.path.join(tmp, "report.html")]
            if output is None:
                self.write(files[0])
            if report is None:
                self.to_html(files[1])
            return self.to_mlflow(mlflow_experiment, mlflow_run, mlflow_tracking_uri, files)

    # --- Jupyter ----------------------------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        """A compact summary: windows, alerts, and what alerted (kind, column, metric, windows, latest value)."""
        analysis = self._windows("analysis")
        reference = self._windows("reference")
        alerted = self.alert_rows()
        models = sorted({(r.model, r.model_version) for r in self.rows})
        title = ", ".join(f"{m}{' v' + v if v else ''}" for m, v in models) or "no results"
        windows_alerting = len({r.window for r in alerted})
        rows_read = sum(r.rows for r in analysis.values())
        labeled = sum(r.labeled_rows for r in analysis.values())
        out = ["<div class='mlmon-results'>",
               f"<strong>otel-mlmon results: {html.escape(title)}</strong>",
               f"<p>{len(analysis)} analysis windows ({rows_read:,} rows, {labeled:,} labeled), {len(reference)} "
               f"reference windows; <b>{len(alerted)} alert(s)</b> in {windows_alerting} analysis window(s).</p>"]
        groups: dict[tuple[str, str, str], list[WindowResult]] = defaultdict(list)
        for r in alerted:
            segment = segment_of(r)
            groups[(r.kind, r.column if segment is None else f"{r.column} [segment {segment}]", r.metric)].append(r)
        if groups:
            ranked = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
            out.append("<table><thead><tr><th>kind</th><th>column</th><th>metric</th><th>alert windows</th>"
                       "<th>latest value</th><th>threshold</th></tr></thead><tbody>")
            for (kind, column, metric), hits in ranked[:15]:
                last = hits[-1]
                bound = last.upper_threshold if last.upper_threshold is not None else last.lower_threshold
                windows = ", ".join(str(h.window) for h in hits[:12]) + (" …" if len(hits) > 12 else "")
                out.append(f"<tr><td>{html.escape(kind)}</td><td>{html.escape(column)}</td>"
                           f"<td>{html.escape(metric)}</td><td>{windows}</td><td>{_short(last.value)}</td>"
                           f"<td>{_short(bound)}</td></tr>")
            out.append("</tbody></table>")
            if len(ranked) > 15:
                out.append(f"<p>… and {len(ranked) - 15} more; <code>.alerts()</code> has them all.</p>")
        else:
            out.append("<p>No alerts.</p>")
        out.append("</div>")
        return "".join(out)

    # --- a processor ------------------------------------------------------------------------------------------
    @classmethod
    def from_processor(cls, url: str, model: str | None = None, *, version: str | None = None,
                       kind: str | None = None, period: str | None = None, window: int | None = None,
                       token: str | None = None, cafile: str | None = None, timeout: float = 30.0) -> Results:
        """The window results a processor holds (``GET /v1/results``), filtered as its query parameters are.

        Args:
            url: the processor's HTTP base URL (``http://127.0.0.1:4318``).
            model, version, kind, period, window: filters (None: all).
            token: the bearer token the processor requires (``--auth-token``), sent as ``Authorization: Bearer``.
            cafile: the CA certificate of a processor serving TLS with a private CA.
            timeout: seconds to wait for the answer.

        Raises:
            ConnectionError: the processor is not reachable, refused the token, or did not answer with results.
        """
        query = {k: v for k, v in (("model", model), ("version", version), ("kind", kind), ("period", period),
                                   ("window", window)) if v is not None}
        base = url.rstrip("/")
        endpoint = base if base.endswith("/v1/results") else base + "/v1/results"
        address = endpoint + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(address, headers={"Accept": "application/json"})
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        context = ssl.create_default_context(cafile=cafile) if cafile else None
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
                body = answer.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            hint = {401: "; give the processor's token (token=…)", 403: "; the token is not allowed"}.get(
                exc.code, "")
            raise ConnectionError(f"GET {address}: {exc.code} {exc.reason}{hint} ({detail})") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConnectionError(f"GET {address}: the processor is not reachable ({reason}); is `mlmon processor "
                                  "serve` running there?") from None
        try:
            found = json.loads(body)["results"]
            return cls([_row(item) for item in found])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConnectionError(f"GET {address}: the answer is not a list of window results ({exc})") from None


def _row(item: Mapping[str, Any]) -> WindowResult:
    """A window result from its JSON form (NaN and infinities were sent as null)."""
    values: dict[str, Any] = {c: item.get(c) for c in COLUMNS}
    if values["value"] is None:
        values["value"] = math.nan
    for name in ("window", "rows", "labeled_rows"):
        values[name] = int(values[name] or 0)
    segment = item.get(SEGMENT)
    return with_segment(WindowResult(**values), str(segment) if segment not in (None, "") else None)


def _short(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.4g}"
