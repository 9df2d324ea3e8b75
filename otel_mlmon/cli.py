"""The ``mlmon`` command.

Exit codes: 0 done, 1 data error (a file, a column, a value) or an output that failed, 2 bad usage (or a missing
extra), 3 an analysis window alerted (``mlmon evaluate --fail-on-alert``). ``evaluate`` and ``reference build`` are
``otel_mlmon.batch.evaluate`` and ``build_reference`` behind the parser. Subcommands import their dependencies when
they run, so ``mlmon --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from otel_mlmon._version import __version__

TASKS = ("classification", "regression")

# What an extra adds to the core install (an application's: instrumentation, sketches), {distribution: module}.
EXTRAS = {
    "batch": {"scipy": "scipy", "pandas": "pandas", "pyarrow": "pyarrow"},
    "processor": {"scipy": "scipy", "grpcio": "grpc", "aiohttp": "aiohttp",
                  "opentelemetry-proto": "opentelemetry.proto", "pyyaml": "yaml"},
    "sklearn": {"scikit-learn": "sklearn"},
}


def lacks_extras(command: str, *extras: str) -> bool:
    """True, after one ``mlmon: error:`` line naming what to install, when a package of ``extras`` is missing
    (looked up before anything imports it: no traceback)."""
    import importlib.util

    def installed(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except ImportError:  # its parent package is missing
            return False

    missing = sorted({name for extra in extras for name, module in EXTRAS[extra].items() if not installed(module)})
    if missing:
        print(f"mlmon: error: mlmon {command} needs {', '.join(missing)} (not installed): "
              f"pip install 'otel-mlmon[{','.join(extras)}]'", file=sys.stderr)
    return bool(missing)


def _add_column_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id-column", help="row id column (joins --labels)")
    parser.add_argument("--timestamp-column", help="event time column (needed for --window)")
    parser.add_argument("--target-column", help="true label column")
    parser.add_argument("--prediction-column", help="predicted label (classification) or value (regression)")
    scores = parser.add_mutually_exclusive_group()
    scores.add_argument("--score-column", help="positive-class score of a binary classifier")
    scores.add_argument("--score-columns", help="multiclass scores: label=column,…")
    parser.add_argument("--task", choices=TASKS, help="default: inferred from the outputs")
    parser.add_argument("--features", help="comma-separated feature columns (default: all other columns)")
    parser.add_argument("--categorical", help="comma-separated features to treat as categorical")
    windows = parser.add_mutually_exclusive_group()
    windows.add_argument("--chunk-size", type=int, help="windows of N rows")
    windows.add_argument("--window", help="windows of event time: 30s, 15min, 1h, 1d, 1w")
    windows.add_argument("--chunks", type=int, help="N windows per period")


def _segment_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 2:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 2, got {text!r}")
    return count


def _add_group_flags(parser: argparse.ArgumentParser) -> None:
    """Segments and fairness (``evaluate`` and ``reference build``)."""
    groups = parser.add_argument_group("segments and fairness")
    groups.add_argument("--segment-by", metavar="COLUMN", help="also drift, data quality and performance per value "
                        "of COLUMN; the rest as __other__")
    groups.add_argument("--max-segments", type=_segment_count, metavar="N",
                        help="with --segment-by: the N most frequent values in the reference (counting __other__) "
                             "(default 10)")
    groups.add_argument("--sensitive-column", metavar="COLUMN", help="fairness across COLUMN per window: "
                        "demographic parity and equal opportunity differences (> 0.1 alerts), disparate-impact "
                        "ratio (< 0.8 alerts)")
    groups.add_argument("--positive-class", metavar="LABEL", help="favourable prediction for fairness (default: "
                        "a binary model's positive class)")


def _group_options(args: argparse.Namespace) -> dict[str, Any]:
    """The segment and fairness flags as ``otel_mlmon.batch`` keywords."""
    return {"segment_by": args.segment_by, "max_segments": args.max_segments,
            "sensitive_column": args.sensitive_column, "positive_class": args.positive_class}


def _column_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of columns, got {text!r}")
    return count


def _add_max_columns(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-columns", type=_column_count, default=10_000, metavar="N",
                        help="refuse data files with more columns than this, before reading them (default 10000)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlmon", description="ML model monitoring on OpenTelemetry.")
    parser.add_argument("--version", action="version", version=f"otel-mlmon {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser("demo", help="the whole product on this machine, no server needed")
    demo.add_argument("--stack", action="store_true", help="the docker-compose stack run natively (Collector, "
                      "processor, Prometheus, Alertmanager); needs those binaries")
    demo.add_argument("--kafka", action="store_true", help="with --stack: Apache Kafka (KRaft, on loopback) between "
                      "the Collector and the processors; needs Java 17 and the cloud Collector build")
    demo.add_argument("--replicas", type=int, choices=(1, 2), default=1,
                      help="with --stack --kafka: processor replicas splitting the models (default 1)")
    demo.add_argument("--hold", type=float, default=None, metavar="SECONDS",
                      help="with --stack: keep the stack up this long after the run (default: until Ctrl-C)")
    demo.add_argument("--prepare", metavar="DIR", help="only write the demo's model, reference profile and "
                      "serving data to DIR (the compose stack's inputs), then exit")
    demo.add_argument("--report", default="mlmon-demo-report.html", help="where the HTML report goes")

    evaluate = commands.add_parser("evaluate", help="drift, data quality and realized performance over files")
    evaluate.add_argument("--reference", required=True, help="reference data file, or a profile (.json)")
    evaluate.add_argument("--analysis", required=True, help="analysis data file (.parquet, .csv, .csv.gz; with "
                          "--engine spark also a directory of them)")
    evaluate.add_argument("--labels", help="late labels file: id and target columns")
    evaluate.add_argument("--model", default=None, help="model name in the results (default: the profile's)")
    evaluate.add_argument("--model-version", default=None, help="model version in the results")
    evaluate.add_argument("--methods", help="drift methods, comma-separated (default: jensen_shannon, "
                          "kolmogorov_smirnov for numbers; jensen_shannon, chi2 for categories)")
    evaluate.add_argument("--preset", choices=("evidently", "vertex", "azure", "sagemaker"),
                          help="use another product's published drift defaults")
    evaluate.add_argument("--thresholds", help="constant drift thresholds: method=value,… (e.g. psi=0.2)")
    evaluate.add_argument("--output", required=True, help="results.csv | results.json | results.parquet")
    evaluate.add_argument("--report", help="also write a self-contained HTML report")
    evaluate.add_argument("--engine", choices=("local", "spark"), default="local",
                          help="local: this process; spark: Apache Spark reads the data (files or directories of "
                               "Parquet/CSV) and builds the windows in parallel, with the same results "
                               "(pip install 'otel-mlmon[spark]', Java 17+)")
    evaluate.add_argument("--spark-master", metavar="URL",
                          help="with --engine spark: the master (local[4], spark://host:7077, yarn; default: local[*])")
    evaluate.add_argument("--fail-on-alert", action="store_true",
                          help="exit with status 3 when a window of the analysis period alerts (CI gating)")
    evaluate.add_argument("--tensorboard", metavar="DIR", help="also write drift, data-quality and performance "
                          "scalars per window into this TensorBoard log directory (needs otel-mlmon[tensorboard])")
    mlflow = evaluate.add_mutually_exclusive_group()
    mlflow.add_argument("--mlflow-experiment", metavar="NAME", help="also log the window metrics (step = window), "
                        "the results and the report to a new MLflow run of this experiment (needs "
                        "otel-mlmon[mlflow])")
    mlflow.add_argument("--mlflow-run", metavar="ID", help="the same, into this existing MLflow run")
    evaluate.add_argument("--mlflow-tracking-uri", metavar="URI",
                          help="the MLflow tracking server (default: MLFLOW_TRACKING_URI, else MLflow's default)")
    _add_column_flags(evaluate)
    _add_group_flags(evaluate)
    _add_max_columns(evaluate)

    processor = commands.add_parser("processor", help="the streaming processor service")
    processor_commands = processor.add_subparsers(dest="processor_command", metavar="SUBCOMMAND")
    serve = processor_commands.add_parser("serve", help="receive OTLP, join late labels, evaluate windows")
    serve.add_argument("--grpc-endpoint", help="HOST:PORT of OTLP/gRPC (default 127.0.0.1:4317)")
    serve.add_argument("--http-endpoint", help="HOST:PORT of OTLP/HTTP and the API (default 127.0.0.1:4318)")
    serve.add_argument("--store", help="SQLite file of the processor's state (default mlmon-processor.db)")
    serve.add_argument("--reference", action="append", default=[], help="a reference profile (repeatable)")
    serve.add_argument("--alertmanager", help="Alertmanager base URL (alerts go to its /api/v2/alerts)")
    serve.add_argument("--webhook", help="URL that receives every alert transition as JSON")
    serve.add_argument("--tensorboard", dest="tensorboard_dir", metavar="DIR",
                       help="also write each window's scalars into this TensorBoard log directory, as mlmon evaluate "
                            "--tensorboard does (needs otel-mlmon[tensorboard])")
    serve.add_argument("--config", help="YAML file of settings (flags > OTEL_PYTHON_MLMON_PROCESSOR_* > file)")
    serve.add_argument("--sequential-detector", choices=("adwin", "page_hinkley", "off"),
                       help="change detection on each model's label stream, alerting as labels arrive (default "
                            "adwin)")
    serve.add_argument("--log-level", type=str.lower, choices=("debug", "info", "warning", "error", "critical"),
                       help="the processor's own log lines at and above this level (default info); its OTLP export "
                            "follows the SDK's OTEL_* variables")
    auth = serve.add_argument_group("authentication and TLS (both listeners; without a token: loopback only)")
    token = auth.add_mutually_exclusive_group()
    token.add_argument("--auth-token-file", metavar="FILE", help="file holding the bearer token that OTLP and the "
                       "API require (all but /healthz and /readyz)")
    token.add_argument("--auth-token", metavar="TOKEN", help="the bearer token itself (visible to other users in "
                       "the process list: prefer --auth-token-file or OTEL_PYTHON_MLMON_PROCESSOR_AUTH_TOKEN)")
    auth.add_argument("--tls-cert", metavar="PEM", help="server certificate (chain): TLS on both listeners")
    auth.add_argument("--tls-key", metavar="PEM", help="the certificate's private key (unencrypted PEM)")
    auth.add_argument("--tls-client-ca", metavar="PEM", help="CA of the client certificates: mTLS, clients "
                      "without a certificate it signed are refused")
    auth.add_argument("--allow-unauthenticated", action="store_true", default=None, help="bind a non-loopback "
                      "address without a token or client certificates (only behind something that "
                      "authenticates, such as a service mesh)")

    replay = commands.add_parser("replay", help="send a dataset's predictions and labels over OTLP")
    replay.add_argument("--analysis", required=True, help="data file with the model's outputs")
    replay.add_argument("--labels", help="labels file: id and target columns (default: the target column)")
    replay.add_argument("--model", required=True, help="model name")
    replay.add_argument("--model-version", "--version", dest="model_version", default="",
                        help="model version (--version is its former name)")
    replay.add_argument("--endpoint", required=True, help="OTLP/HTTP base URL, or host:port with --protocol grpc")
    replay.add_argument("--protocol", default="http/protobuf", choices=("http/protobuf", "grpc"))
    replay.add_argument("--label-delay", type=float, default=0.0, help="seconds between predictions and labels")
    replay.add_argument("--label-shuffle", action="store_true", help="send the labels in random order")
    replay.add_argument("--label-fraction", type=float, default=1.0, help="share of rows that get a label")
    replay.add_argument("--rate", type=float, help="rows per second at most")
    replay.add_argument("--batch-rows", type=int, default=100, help="rows per predict call")
    replay.add_argument("--retry-for", type=float, default=60.0, metavar="SECONDS",
                        help="how long an endpoint that is down or throttling (503, 429, UNAVAILABLE) is retried, "
                             "honouring Retry-After, before its rows count as not delivered (default 60)")
    replay.add_argument("--model-file", help="a pickled model to predict with, instead of the file's outputs")
    replay.add_argument("--service", help="a model service's URL: rows go to its POST /predict (the service is "
                                          "instrumented itself; examples/model_service.py), labels over OTLP")
    replay.add_argument("--feature-sketches", action="store_true",
                        help="also send feature sketches (per segment with --segment-by); default: features are "
                             "only captured in the events")
    _add_column_flags(replay)
    replay_groups = replay.add_argument_group("segments and fairness")
    replay_groups.add_argument("--segment-by", metavar="COLUMN", help="each row's ml.segment is its value of "
                               "COLUMN (on the events, and on the sketches with --feature-sketches)")
    replay_groups.add_argument("--max-segments", type=_segment_count, metavar="N",
                               help="with --segment-by: the first N - 1 values seen are kept, the rest sent as "
                                    "__other__ (default 10)")
    replay_groups.add_argument("--sensitive-column", metavar="COLUMN", help="each row's ml.fairness.group is its "
                               "value of COLUMN (on the events only; COLUMN is then not a feature)")

    reference = commands.add_parser("reference", help="reference profiles")
    reference_commands = reference.add_subparsers(dest="reference_command", metavar="SUBCOMMAND")
    build = reference_commands.add_parser("build", help="build a reference profile from a data file")
    build.add_argument("--data", required=True, help="reference data file (.parquet, .csv, .csv.gz)")
    build.add_argument("--labels", help="labels file: id and target columns")
    build.add_argument("--model", required=True, help="model name")
    build.add_argument("--model-version", "--version", dest="model_version", default="",
                       help="model version (--version is its former name)")
    build.add_argument("--output", required=True, help="profile.json")
    _add_column_flags(build)
    _add_group_flags(build)
    _add_max_columns(build)
    return parser


class Progress:
    """Rows read, on stderr, only when it is a terminal and the run lasts more than a second."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.rows = 0
        self.started = time.monotonic()
        self.enabled = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, rows: int) -> None:
        self.rows += rows
        now = time.monotonic()
        if self.enabled and now - self.started > 1 and now - self._last > 0.2:
            self._last = now
            rate = self.rows / max(now - self.started, 1e-9)
            print(f"\r{self.label}: {self.rows:,} rows ({rate:,.0f} rows/s)", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.enabled and self._last:
            print(file=sys.stderr)


def _column_options(args: argparse.Namespace) -> dict[str, Any]:
    """The column and window flags as ``otel_mlmon.batch`` keywords (lists and pairs still as text)."""
    return {"id_column": args.id_column, "timestamp_column": args.timestamp_column,
            "target_column": args.target_column, "prediction_column": args.prediction_column,
            "score_column": args.score_column, "score_columns": args.score_columns, "task": args.task,
            "features": args.features, "categorical": args.categorical, "chunk_size": args.chunk_size,
            "window": args.window, "chunks": args.chunks}


def _columns(args: argparse.Namespace) -> Any:
    from otel_mlmon.batch.api import columns_from_options

    options = _column_options(args)
    return columns_from_options(*(options[name] for name in (
        "id_column", "timestamp_column", "target_column", "prediction_column", "score_column", "score_columns",
        "task", "features", "categorical")))


def _evaluate(args: argparse.Namespace) -> int:
    from otel_mlmon.batch.api import evaluate

    progress = Progress("reading")
    results = evaluate(args.reference, args.analysis, labels=args.labels, model=args.model,
                       model_version=args.model_version, methods=args.methods, preset=args.preset,
                       thresholds=args.thresholds, max_columns=args.max_columns, output=args.output,
                       report=args.report, tensorboard=args.tensorboard, mlflow_experiment=args.mlflow_experiment,
                       mlflow_run=args.mlflow_run, mlflow_tracking_uri=args.mlflow_tracking_uri, progress=progress,
                       engine=args.engine, spark_master=args.spark_master,
                       **_column_options(args), **_group_options(args))
    progress.done()
    alerts = results.alert_rows()
    print(f"{len(results)} result rows -> {args.output}; {len(alerts)} alert(s) in the analysis period",
          file=sys.stderr)
    for flag, where in (("report", "report"), ("tensorboard", "TensorBoard scalars")):
        if getattr(args, flag):
            print(f"{where} -> {getattr(args, flag)}", file=sys.stderr)
    if results.mlflow_run_id is not None:
        print(f"MLflow run {results.mlflow_run_id}", file=sys.stderr)
    if args.fail_on_alert and alerts:
        windows = sorted({r.window for r in alerts})
        what = sorted({f"{r.kind} {r.column} {r.metric}" for r in alerts})
        print(f"mlmon: {len(alerts)} alert(s) in analysis window(s) {', '.join(map(str, windows[:20]))}"
              f"{' …' if len(windows) > 20 else ''} ({'; '.join(what[:10])}{'; …' if len(what) > 10 else ''}): "
              "exit status 3 (--fail-on-alert)", file=sys.stderr)
        return 3
    return 0


def _reference_build(args: argparse.Namespace) -> int:
    from otel_mlmon.batch.api import build_reference

    progress = Progress("reading")
    results = build_reference(args.data, model=args.model, version=args.model_version, labels=args.labels,
                              max_columns=args.max_columns, output=args.output, progress=progress,
                              **_column_options(args), **_group_options(args))
    progress.done()
    profile = results.profile
    assert profile is not None
    segments = f", {len(results.segmented.segments)} segments of {results.segmented.column!r}" \
        if results.segmented is not None else ""
    print(f"profile of {profile.rows} rows, {len(profile.reference_windows)} windows, {len(profile.columns)} "
          f"columns{segments} -> {args.output}", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from otel_mlmon.processor import grpc_receiver
    from otel_mlmon.processor.config import load
    from otel_mlmon.processor.export import (
        AlertmanagerSink,
        TensorBoardSink,
        WebhookSink,
        configure_logging,
        otlp_from_environment,
    )
    from otel_mlmon.processor.security import Security
    from otel_mlmon.processor.segmented import reference_load
    from otel_mlmon.processor.server import serve
    from otel_mlmon.processor.service import Processor
    from otel_mlmon.processor.store import Store

    config = load({"grpc_endpoint": args.grpc_endpoint, "http_endpoint": args.http_endpoint, "store": args.store,
                   "references": tuple(args.reference), "alertmanager": args.alertmanager, "webhook": args.webhook,
                   "tensorboard_dir": args.tensorboard_dir,
                   "auth_token": args.auth_token, "auth_token_file": args.auth_token_file, "tls_cert": args.tls_cert,
                   "tls_key": args.tls_key, "tls_client_ca": args.tls_client_ca,
                   "allow_unauthenticated": args.allow_unauthenticated,
                   "sequential_detector": args.sequential_detector, "log_level": args.log_level},
                  yaml_path=args.config)
    otlp = otlp_from_environment()  # OTEL_EXPORTER_OTLP_*, OTEL_SDK_DISABLED, OTEL_{METRICS,LOGS}_EXPORTER
    configure_logging(config.log_level, otlp)
    security = Security.from_config(config)  # a missing or empty token file, bad TLS files: refused here
    host, _, port = config.http_endpoint.rpartition(":")
    # Reference profiles, segmented ones too (`reference build --segment-by`): bad profiles stop startup.
    profiles = [reference_load(path) for path in config.references]
    store = Store(config.store, label_ttl_s=config.label_ttl_s, orphan_ttl_s=config.orphan_ttl_s,
                  max_pending=config.max_pending, max_orphans=config.max_orphans,
                  max_lateness_s=config.max_lateness_s, max_models=config.max_models,
                  max_features=config.max_features, retention_s=config.retention_s)
    processor = Processor(store, otlp=otlp,
                          alertmanager=AlertmanagerSink(config.alertmanager) if config.alertmanager else None,
                          bootstrap_windows=config.bootstrap_windows,
                          bootstrap_window_rows=config.bootstrap_window_rows,
                          require_reference=config.require_reference,
                          webhook=WebhookSink(config.webhook) if config.webhook else None,
                          allowed_lateness_s=config.allowed_lateness_s, idle_timeout_s=config.idle_timeout_s,
                          sketch_window_s=config.sketch_window_s, max_future_s=config.max_future_s,
                          sequential_detector=config.sequential_detector,
                          revision_interval_s=config.revision_interval_s,
                          tensorboard=TensorBoardSink(config.tensorboard_dir) if config.tensorboard_dir else None)
    for profile in profiles:
        processor.register(profile)
    try:
        grpc_server, _ = grpc_receiver.start(processor, config.grpc_endpoint, config.max_grpc_message_bytes,
                                             credentials=security.tls.grpc if security.tls else None,
                                             interceptors=security.grpc_interceptors())
    except ValueError:  # its port is taken: said, after the store is closed
        processor.close()
        raise

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        def stopping() -> None:  # a tick in progress stops between windows; what is left resumes after a restart
            processor.stopping.set()
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping)
        log = logging.getLogger("otel_mlmon.processor")

        def started() -> None:  # said once both listeners are bound
            log.info("serving OTLP/HTTP and the API on %s://%s:%s, OTLP/gRPC on %s; %d model(s) monitored",
                     "https" if security.tls else "http", host, port, config.grpc_endpoint, len(processor.monitored))
            (log.info if config.authenticated else log.warning)("access: %s", security.describe(config))

        await serve(processor, host, int(port), config.tick_s, stop, config.max_body_bytes, security=security,
                    started=started)

    try:
        asyncio.run(main())
    except ValueError:  # the HTTP listener's port: the gRPC one and the store close before the message
        grpc_server.stop(grace=None)
        processor.close()
        raise
    grpc_server.stop(grace=5).wait()
    for sink in (processor.alertmanager, processor.webhook):
        if sink is not None:
            sink.close(timeout_s=2.0)  # what waits goes out (one try each), bounded: SIGTERM stops within 10 s
    if processor.tensorboard is not None:
        processor.tensorboard.close()
    if processor.otlp is not None:
        processor.otlp.close()  # before the store closes: the SDK's last collection reads the store's counters
    processor.close()  # the alert book's connection, then the store (its WAL checkpointed)
    return 0


def _replay(args: argparse.Namespace) -> int:
    """Exit 0 when the endpoint acknowledged every prediction and label, 1 when some were not delivered."""
    import dataclasses

    from otel_mlmon.replay import ReplayOptions, replay

    options = ReplayOptions(endpoint=args.endpoint, protocol=args.protocol, batch_rows=args.batch_rows,
                            rate=args.rate, label_delay=args.label_delay, label_shuffle=args.label_shuffle,
                            label_fraction=args.label_fraction, service=args.service, retry_for=args.retry_for,
                            max_segments=args.max_segments, feature_sketches=args.feature_sketches)
    if args.service and args.model_file:
        raise ValueError("--service and --model-file exclude each other: the service holds the model")
    if args.labels and not args.id_column:
        raise ValueError("--labels needs --id-column: the labels file's ids join the predictions")
    progress = Progress("replaying")
    columns = dataclasses.replace(_columns(args), segment_by=args.segment_by,
                                  sensitive_column=args.sensitive_column)
    result = replay(args.analysis, columns, args.model, args.model_version, options, args.labels, progress,
                    args.model_file)
    progress.done()
    if result.delivered:
        print(f"replayed {result.rows_acknowledged} predictions and {result.labels_acknowledged} labels to "
              f"{args.endpoint} (all acknowledged)", file=sys.stderr)
        return 0
    reasons = "; ".join(result.errors) or "no answer"
    print(f"mlmon: error: {result.rows_lost} of {result.rows} predictions and {result.labels_lost} of "
          f"{result.labels} labels were not delivered to {args.endpoint} ({reasons})", file=sys.stderr)
    return 1


def _run(action: Callable[[argparse.Namespace], int], args: argparse.Namespace, command: str, extra: str) -> int:
    """Run a subcommand: its warnings as ``mlmon: warning:`` lines, its errors as one ``mlmon: error:`` line and
    an exit code (1 data or output, 2 usage or a missing ``extra``)."""
    if lacks_extras(command, extra):
        return 2
    import warnings

    from otel_mlmon.batch.output import MissingExtraError, OutputError
    from otel_mlmon.batch.reader import DataError
    from otel_mlmon.batch.runner import LooksLikeIdWarning

    standard = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if issubclass(category, LooksLikeIdWarning):
            print(f"mlmon: warning: {message}", file=sys.stderr)
        else:
            standard(message, category, filename, lineno, file, line)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            return action(args)
    except MissingExtraError as exc:  # --tensorboard, --mlflow-*: an extra, like the command's own (exit 2)
        print(f"mlmon: error: {exc}", file=sys.stderr)
        return 2
    except (DataError, OutputError) as exc:
        print(f"mlmon: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a missing file, a model service that is down or refuses
        print(f"mlmon: error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"mlmon: error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from otel_mlmon.demo import data  # these two import the standard library only, until they run
        from otel_mlmon.demo import run as demo

        if (args.kafka or args.replicas != 1) and not args.stack:
            parser.error("--kafka and --replicas go with --stack")
        if args.replicas != 1 and not args.kafka:
            parser.error("--replicas goes with --stack --kafka")
        if args.stack and not args.prepare and not demo.in_checkout():
            return 2
        if lacks_extras("demo", "sklearn", "processor", "batch"):
            return 2
        if args.prepare:
            for what, path in data.prepare(args.prepare).items():
                print(f"{what}: {path}")
            return 0
        if args.stack:
            return demo.run_stack(hold_s=args.hold, kafka=args.kafka, replicas=args.replicas)
        return demo.run(report_path=args.report)
    if args.command == "evaluate":
        return _run(_evaluate, args, "evaluate", "batch")
    if args.command == "reference" and args.reference_command == "build":
        return _run(_reference_build, args, "reference build", "batch")
    if args.command == "processor" and args.processor_command == "serve":
        return _run(_serve, args, "processor serve", "processor")
    if args.command == "replay":
        return _run(_replay, args, "replay", "batch")
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
