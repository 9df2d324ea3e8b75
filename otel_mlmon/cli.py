"""The ``mlmon`` command.

Exit codes: 0 done, 1 data error (a file, a column, a value), 2 bad usage. Subcommands import their dependencies
when they run, so ``mlmon --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from otel_mlmon._version import __version__

TASKS = ("classification", "regression")


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    return names


def _pairs(text: str | None, flag: str, shape: str) -> list[tuple[str, str]]:
    """``a=b,c=d`` as [(a, b), (c, d)]; a malformed part is a usage error naming the flag."""
    out = []
    for part in text.split(",") if text else []:
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{flag} takes {shape},… (got {part!r})")
        out.append((key.strip(), value.strip()))
    return out


def _score_columns(text: str | None) -> dict[str, str]:
    return dict(_pairs(text, "--score-columns", "label=column"))


def _thresholds(text: str | None) -> tuple[tuple[str, float], ...]:
    out = []
    for method, value in _pairs(text, "--thresholds", "method=number"):
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if number != number:
            raise ValueError(f"--thresholds takes method=number,… (got {method}={value!r})")
        out.append((method, number))
    return tuple(out)


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
    demo.add_argument("--hold", type=float, default=None, metavar="SECONDS",
                      help="with --stack: keep the stack up this long after the run (default: until Ctrl-C)")
    demo.add_argument("--prepare", metavar="DIR", help="only write the demo's model, reference profile and "
                      "serving data to DIR (the compose stack's inputs), then exit")
    demo.add_argument("--report", default="mlmon-demo-report.html", help="where the HTML report goes")

    evaluate = commands.add_parser("evaluate", help="drift, data quality and realized performance over files")
    evaluate.add_argument("--reference", required=True, help="reference data file, or a profile (.json)")
    evaluate.add_argument("--analysis", required=True, help="analysis data file (.parquet, .csv, .csv.gz)")
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
    _add_column_flags(evaluate)
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
    serve.add_argument("--config", help="YAML file of settings (flags > OTEL_PYTHON_MLMON_PROCESSOR_* > file)")
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
    replay.add_argument("--version", dest="model_version", default="", help="model version")
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
    _add_column_flags(replay)

    reference = commands.add_parser("reference", help="reference profiles")
    reference_commands = reference.add_subparsers(dest="reference_command", metavar="SUBCOMMAND")
    build = reference_commands.add_parser("build", help="build a reference profile from a data file")
    build.add_argument("--data", required=True, help="reference data file (.parquet, .csv, .csv.gz)")
    build.add_argument("--labels", help="labels file: id and target columns")
    build.add_argument("--model", required=True, help="model name")
    build.add_argument("--version", dest="model_version", default="", help="model version")
    build.add_argument("--output", required=True, help="profile.json")
    _add_column_flags(build)
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


def _columns(args: argparse.Namespace) -> Any:
    from otel_mlmon.batch.runner import Columns

    return Columns(id_column=args.id_column, timestamp_column=args.timestamp_column,
                   target_column=args.target_column, prediction_column=args.prediction_column,
                   score_column=args.score_column, score_columns=_score_columns(args.score_columns),
                   features=_names(args.features), categorical=_names(args.categorical) or [], task=args.task)


def _spec(args: argparse.Namespace, default: Any = None) -> Any:
    from otel_mlmon.engine.windows import WindowSpec

    if args.chunk_size is None and args.window is None and args.chunks is None:
        return default if default is not None else WindowSpec(chunks=10)
    if args.window is not None and not args.timestamp_column and default is None:
        raise ValueError("--window needs --timestamp-column")
    return WindowSpec(chunk_size=args.chunk_size, window=args.window, chunks=args.chunks)


def _is_profile(path: str) -> bool:
    return path.lower().endswith(".json")


def _evaluate(args: argparse.Namespace) -> int:
    from otel_mlmon.batch.output import output_format, write_results
    from otel_mlmon.batch.runner import build_profile, columns_from_profile, evaluate_file
    from otel_mlmon.engine.evaluate import Policy, evaluate_window, reference_results
    from otel_mlmon.engine.profile import ReferenceProfile

    output_format(args.output)
    policy = Policy(methods=tuple(_names(args.methods) or ()) or None, preset=args.preset,
                    thresholds=_thresholds(args.thresholds))
    columns = _columns(args)
    progress = Progress("reading")
    if _is_profile(args.reference):
        from otel_mlmon.batch.reader import DataError

        try:
            profile = ReferenceProfile.load(args.reference)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        spec = _spec(args, profile.window)
        columns = columns_from_profile(profile, columns)
        reference_rows = reference_results(profile, policy)
    else:
        spec = _spec(args)
        if spec.window is not None and not columns.timestamp_column:
            raise ValueError("--window needs --timestamp-column")
        profile, windows = build_profile(args.reference, columns, spec, args.model or "model",
                                         args.model_version or "", None, policy, progress, args.max_columns)
        reference_rows = [row for w in windows for row in evaluate_window(profile, w, policy)]
    if args.model is not None:
        profile.model = args.model
    if args.model_version is not None:
        profile.version = args.model_version
    analysis_rows = list(evaluate_file(profile, args.analysis, columns, args.labels, policy, progress, spec,
                                       args.max_columns))
    progress.done()
    rows = [r for r in reference_rows] + analysis_rows
    if args.model is not None or args.model_version is not None:
        from dataclasses import replace

        rows = [replace(r, model=profile.model, model_version=profile.version) for r in rows]
    written = write_results(rows, args.output)
    alerts = sum(1 for r in analysis_rows if r.alert)
    print(f"{written} result rows -> {args.output}; {alerts} alert(s) in the analysis period", file=sys.stderr)
    if args.report:
        from otel_mlmon.batch.report import write_report

        write_report(rows, args.report, profile)
        print(f"report -> {args.report}", file=sys.stderr)
    return 0


def _reference_build(args: argparse.Namespace) -> int:
    from otel_mlmon.batch.runner import build_profile

    spec = _spec(args)
    columns = _columns(args)
    if spec.window is not None and not columns.timestamp_column:
        raise ValueError("--window needs --timestamp-column")
    progress = Progress("reading")
    profile, windows = build_profile(args.data, columns, spec, args.model, args.model_version, args.labels,
                                     progress=progress, max_columns=args.max_columns)
    progress.done()
    profile.save(args.output)
    print(f"profile of {profile.rows} rows, {len(windows)} windows, {len(profile.columns)} columns -> "
          f"{args.output}", file=sys.stderr)
    return 0


def _otlp_export() -> Any:
    """Results and alerts over OTLP when an OTLP endpoint is configured (the standard OTEL_EXPORTER_OTLP_*)."""
    import os

    if not any(os.environ.get(name) for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                                                 "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")):
        return None
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    from otel_mlmon.processor.export import OtlpExport

    grpc = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") == "grpc"
    if grpc:
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # type: ignore[assignment]
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
            OTLPMetricExporter,
        )
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "mlmon-processor")})
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    meter_provider = MeterProvider([PeriodicExportingMetricReader(OTLPMetricExporter())], resource=resource)
    return OtlpExport(meter_provider, logger_provider)


def _json_logs() -> None:
    """The service logs one JSON object a line on stderr (time, level, logger, message)."""
    import json
    import logging

    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                     "message": record.getMessage()}
            if record.exc_info:
                entry["exception"] = self.formatException(record.exc_info)
            return json.dumps(entry)

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from otel_mlmon.engine.profile import ReferenceProfile
    from otel_mlmon.processor import grpc_receiver
    from otel_mlmon.processor.config import load
    from otel_mlmon.processor.export import AlertmanagerSink, WebhookSink
    from otel_mlmon.processor.security import Security
    from otel_mlmon.processor.server import serve
    from otel_mlmon.processor.service import Processor
    from otel_mlmon.processor.store import Store

    _json_logs()
    config = load({"grpc_endpoint": args.grpc_endpoint, "http_endpoint": args.http_endpoint, "store": args.store,
                   "references": tuple(args.reference), "alertmanager": args.alertmanager, "webhook": args.webhook,
                   "auth_token": args.auth_token, "auth_token_file": args.auth_token_file, "tls_cert": args.tls_cert,
                   "tls_key": args.tls_key, "tls_client_ca": args.tls_client_ca,
                   "allow_unauthenticated": args.allow_unauthenticated}, yaml_path=args.config)
    security = Security.from_config(config)  # a missing or empty token file, bad TLS files: refused here
    host, _, port = config.http_endpoint.rpartition(":")
    profiles = [ReferenceProfile.load(path) for path in config.references]  # bad profiles stop startup
    store = Store(config.store, label_ttl_s=config.label_ttl_s, orphan_ttl_s=config.orphan_ttl_s,
                  max_pending=config.max_pending, max_orphans=config.max_orphans,
                  max_lateness_s=config.max_lateness_s, max_models=config.max_models,
                  max_features=config.max_features, retention_s=config.retention_s)
    processor = Processor(store, otlp=_otlp_export(),
                          alertmanager=AlertmanagerSink(config.alertmanager) if config.alertmanager else None,
                          bootstrap_windows=config.bootstrap_windows,
                          bootstrap_window_rows=config.bootstrap_window_rows,
                          require_reference=config.require_reference,
                          webhook=WebhookSink(config.webhook) if config.webhook else None,
                          allowed_lateness_s=config.allowed_lateness_s, idle_timeout_s=config.idle_timeout_s,
                          sketch_window_s=config.sketch_window_s, max_future_s=config.max_future_s)
    for profile in profiles:
        processor.register(profile)
    grpc_server, _ = grpc_receiver.start(processor, config.grpc_endpoint, config.max_grpc_message_bytes,
                                         credentials=security.tls.grpc if security.tls else None,
                                         interceptors=security.grpc_interceptors())

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        def stopping() -> None:  # a tick in progress stops between windows; what is left resumes after a restart
            processor.stopping.set()
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping)
        log = logging.getLogger("otel_mlmon.processor")
        log.info("serving OTLP/HTTP and the API on %s://%s:%s, OTLP/gRPC on %s; %d model(s) monitored",
                 "https" if security.tls else "http", host, port, config.grpc_endpoint, len(processor.monitored))
        (log.info if config.authenticated else log.warning)("access: %s", security.describe(config))
        await serve(processor, host, int(port), config.tick_s, stop, config.max_body_bytes, security=security)

    asyncio.run(main())
    grpc_server.stop(grace=5).wait()
    for sink in (processor.alertmanager, processor.webhook):
        if sink is not None:
            sink.close(timeout_s=2.0)  # what waits goes out (one try each), bounded: SIGTERM stops within 10 s
    if processor.otlp is not None:
        processor.otlp.close()  # before the store closes: the SDK's last collection reads the store's counters
    processor.store.close()
    return 0


def _replay(args: argparse.Namespace) -> int:
    """Exit 0 when the endpoint acknowledged every prediction and label, 1 when some were not delivered."""
    from otel_mlmon.replay import ReplayOptions, replay

    options = ReplayOptions(endpoint=args.endpoint, protocol=args.protocol, batch_rows=args.batch_rows,
                            rate=args.rate, label_delay=args.label_delay, label_shuffle=args.label_shuffle,
                            label_fraction=args.label_fraction, service=args.service, retry_for=args.retry_for)
    if args.service and args.model_file:
        raise ValueError("--service and --model-file exclude each other: the service holds the model")
    progress = Progress("replaying")
    result = replay(args.analysis, _columns(args), args.model, args.model_version, options, args.labels, progress,
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


def _run(action: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    from otel_mlmon.batch.reader import DataError

    try:
        return action(args)
    except DataError as exc:
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
        from otel_mlmon import _demo

        if args.prepare:
            for what, path in _demo.prepare(args.prepare).items():
                print(f"{what}: {path}")
            return 0
        return _demo.stack(hold_s=args.hold) if args.stack else _demo.run(report_path=args.report)
    if args.command == "evaluate":
        return _run(_evaluate, args)
    if args.command == "reference" and args.reference_command == "build":
        return _run(_reference_build, args)
    if args.command == "processor" and args.processor_command == "serve":
        return _run(_serve, args)
    if args.command == "replay":
        return _run(_replay, args)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
