"""``mlmon demo``: the whole product on one machine, with no external server; and ``mlmon demo --stack``.

A generated churn dataset (drift injected part-way: :mod:`otel_mlmon.demo.data`), a scikit-learn model instrumented
with otel-mlmon and exporting over real OTLP/HTTP to an embedded processor on loopback, labels arriving late, one
line per window as the processor evaluates it (:mod:`otel_mlmon.demo.console`), and an HTML report at the end.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, TextIO

from otel_mlmon.demo.console import (
    COUNTS_DIFFER,
    HEADER,
    WindowTable,
    alert_lines,
    analysis_alerts,
    drift_plan,
    legend,
    window_results,
)
from otel_mlmon.demo.data import (
    BATCH_ROWS,
    FEATURES,
    REFERENCE_ROWS,
    STACK_ROWS,
    TRAIN_ROWS,
    WINDOW_ROWS,
    demo_inputs,
    one_thread,
    require_extras,
    window_shares,
)


def _print(out: TextIO, lines: list[str]) -> None:
    for line in lines:
        print(line, file=out, flush=True)


def run(out: TextIO = sys.stdout, report_path: str = "mlmon-demo-report.html") -> int:
    """``mlmon demo``: serve the drifting rows through an instrumented model to an embedded processor, print one
    line per window, the alerts, and write the HTML report to ``report_path``."""
    require_extras()
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import otel_mlmon
    from otel_mlmon.batch.report import write_report
    from otel_mlmon.demo.ports import free_port
    from otel_mlmon.instrumentation import force_flush
    from otel_mlmon.instrumentation._api import telemetry_for
    from otel_mlmon.processor.server import serve
    from otel_mlmon.processor.service import Processor
    from otel_mlmon.processor.store import Store

    model, profile, serve_rows = demo_inputs()
    table = WindowTable(window_shares(model, serve_rows))

    folder = tempfile.mkdtemp(prefix="mlmon-demo-")
    # The demo serves its rows within seconds: windows close half a second behind the newest row, and all of
    # them two seconds after the last one (a service defaults to 30 s and 2 min).
    processor = Processor(Store(os.path.join(folder, "state.db")), bootstrap_windows=0, allowed_lateness_s=0.5,
                          idle_timeout_s=2.0)
    processor.register(profile)
    port = free_port()
    loop, stop = asyncio.new_event_loop(), asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete,
                              args=(serve(processor, "127.0.0.1", port, 0.2, stop),), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    _print(out, ["otel-mlmon demo: a churn model served with otel-mlmon, an embedded processor on " + url,
                 f"  model trained on {TRAIN_ROWS} rows; reference: {REFERENCE_ROWS} held-out labelled rows; "
                 f"{len(serve_rows)} rows served in calls of {BATCH_ROWS}, windows of {WINDOW_ROWS}",
                 *drift_plan(), "", *legend(), ""])

    old = os.environ.get("OTEL_PYTHON_MLMON_CAPTURE_FEATURES")
    os.environ["OTEL_PYTHON_MLMON_CAPTURE_FEATURES"] = "true"  # exact feature drift, like `mlmon evaluate`
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(f"{url}/v1/traces")))
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(f"{url}/v1/logs"),
                                                                     schedule_delay_millis=200))
    meter_provider = MeterProvider([PeriodicExportingMetricReader(OTLPMetricExporter(f"{url}/v1/metrics"),
                                                                  export_interval_millis=2000)])
    served = otel_mlmon.instrument_model(model, name="churn", version="1", task="classification",
                                         tracer_provider=tracer_provider, meter_provider=meter_provider,
                                         logger_provider=logger_provider)
    if old is None:
        os.environ.pop("OTEL_PYTHON_MLMON_CAPTURE_FEATURES")
    else:
        os.environ["OTEL_PYTHON_MLMON_CAPTURE_FEATURES"] = old
    _print(out, [HEADER])

    def show(final: bool = False) -> None:
        _print(out, table.lines(processor.store.results(model="churn", period="analysis"), final))

    threads = one_thread()  # the served model predicts on one thread (see one_thread) until the run ends
    try:
        started = time.monotonic()
        for begin in range(0, len(serve_rows), BATCH_ROWS):
            rows = serve_rows.iloc[begin: begin + BATCH_ROWS]
            with otel_mlmon.prediction_ids(ids=rows["id"].tolist()):
                served.predict_proba(rows[FEATURES])
            late = begin - 2 * WINDOW_ROWS  # the truth of rows served two windows ago arrives now
            if late >= 0 and late % WINDOW_ROWS == 0:
                truth = serve_rows.iloc[late: late + WINDOW_ROWS]
                otel_mlmon.record_labels("churn", ids=truth["id"].tolist(), labels=truth["churned"].tolist(),
                                         version="1", logger_provider=logger_provider)
            if begin % WINDOW_ROWS == WINDOW_ROWS - BATCH_ROWS:
                force_flush()
                logger_provider.force_flush()
                time.sleep(0.3)
                show()
        for late in range(max(0, len(serve_rows) - 2 * WINDOW_ROWS), len(serve_rows), WINDOW_ROWS):
            truth = serve_rows.iloc[late: late + WINDOW_ROWS]
            otel_mlmon.record_labels("churn", ids=truth["id"].tolist(), labels=truth["churned"].tolist(),
                                     version="1", logger_provider=logger_provider)
        force_flush()
        logger_provider.force_flush()
        windows = -(-len(serve_rows) // WINDOW_ROWS)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(table.printed) < windows:
            time.sleep(0.3)
            show()
        show(final=True)
        results = processor.store.results(model="churn")
        firing = [transition.result for transition in processor.alerts.firing()]
        _print(out, ["", *alert_lines(results, firing)])
        write_report(window_results(results), report_path, profile)
        counters = processor.counters()
        _print(out, ["", f"the processor received {counters.get('predictions', 0)} predictions and joined "
                     f"{counters.get('labels_joined', 0)} labels in {time.monotonic() - started:.1f} s",
                     f"report: {os.path.abspath(report_path)} ({analysis_alerts(results)} alerts, the count above); "
                     f"results: GET {url}/v1/results (while running)"])
    finally:
        threads.restore_original_limits()
        # Send the last sketches and retire this telemetry (no exit-time flush into shut-down providers), then
        # shut the providers down while the processor still listens.
        telemetry_for(tracer_provider, meter_provider, logger_provider).close()
        for provider in (logger_provider, meter_provider, tracer_provider):
            provider.shutdown()
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
    return 0


NEEDS_CHECKOUT = ("mlmon demo --stack needs a source checkout of otel-mlmon (the Collector's build, its configs and "
                  "the model service are not in the installed package): run it from a clone of the repository; "
                  "`mlmon demo` runs from this install")


def in_checkout() -> bool:
    """Whether ``mlmon demo --stack`` runs from a source checkout; if not, say so (one line on stderr)."""
    from otel_mlmon.demo.stack import source_checkout

    if source_checkout() is None:
        print(f"mlmon: error: {NEEDS_CHECKOUT}", file=sys.stderr)
        return False
    return True


def _stack_alert_lines(results: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> list[str]:
    """The report's count (the processor's results), the processor's alerts firing in Alertmanager, and the rest."""
    from_processor = sum(1 for a in alerts if not a["labels"]["alertname"].startswith("ML"))
    return [f"{analysis_alerts(results)} alerts in the analysis windows, {from_processor} firing now (the "
            f"processor's); Alertmanager holds {len(alerts)}: those {from_processor} and "
            f"{len(alerts) - from_processor} from Prometheus rules",
            f"  {COUNTS_DIFFER}"]


def run_stack(out: TextIO = sys.stdout, hold_s: float | None = None, kafka: bool = False, replicas: int = 1) -> int:
    """``mlmon demo --stack``: the docker-compose topology natively (:mod:`otel_mlmon.demo.stack`): the model
    service under ``opentelemetry-instrument``, the Collector built from our manifest, the processor, Prometheus
    with our rules and Alertmanager. Streams the drifting data with late labels, shows windows and alerts as they
    come, then keeps the stack up for ``hold_s`` seconds (None: until Ctrl-C) so that Prometheus and Alertmanager
    can be browsed. With ``kafka``, Kafka runs between the Collector and ``replicas`` processors
    (:mod:`otel_mlmon.demo.kafka`). Exit 2 (one line on stderr) outside a source checkout, or with ``kafka`` when
    Java or the cloud Collector build is missing."""
    import pickle
    from pathlib import Path

    from otel_mlmon.demo.kafka import KafkaStack, find_kafka
    from otel_mlmon.demo.stack import NativeStack, find_binaries

    if not in_checkout():
        return 2
    kafka_collector, lacking = find_kafka() if kafka else (None, "")
    if lacking:
        print(f"mlmon: error: {lacking}", file=sys.stderr)
        return 2
    if kafka:
        print(f"mlmon demo --stack --kafka: the demo stack of docker-compose.yml natively, with Kafka between the "
              f"Collector and {replicas} processor{'s' if replicas > 1 else ''} (docker-compose.kafka.yml): an "
              "instrumented model service, the otel-mlmon Collector writing to a Kafka broker, a Collector reading "
              "it in front of each processor, Prometheus and Alertmanager.", file=out)
    else:
        print("mlmon demo --stack: the demo stack of docker-compose.yml, natively: an instrumented model service, "
              "the otel-mlmon Collector, the processor, Prometheus and Alertmanager.", file=out)
    binaries, missing = find_binaries(collector=kafka_collector)
    if binaries is None:
        print("Missing here:", file=out)
        for line in missing:
            print(f"  - {line}", file=out)
        print("(`mlmon demo` without --stack needs none of them.)", file=out)
        return 1
    require_extras()
    import pandas as pd

    folder = Path(tempfile.mkdtemp(prefix="mlmon-stack-"))
    native = (KafkaStack(folder, binaries, interval_s=2.0, kafka_collector=kafka_collector or "", replicas=replicas)
              if kafka else NativeStack(folder, binaries, interval_s=2.0))
    inputs = native.prepare(serve_rows=STACK_ROWS)
    with open(inputs["model"], "rb") as handle:  # the service's model: the shares of its predictions per window
        table = WindowTable(window_shares(pickle.load(handle), pd.read_csv(inputs["serving"])))
    try:
        try:
            native.start()
        except RuntimeError as exc:  # a component that does not start: say which, and where its log is
            print(f"the stack did not start: {exc}\nlogs: {folder}", file=out)
            return 1
        apis = native.processor_apis()
        for name, what in (("model", "model service"), ("otlp_http", "Collector OTLP/HTTP"),
                           *((api, f"processor {api[-1]} (/v1/results)" if kafka else "processor API (/v1/results)")
                             for api in apis),
                           ("prometheus", "Prometheus"), ("alertmanager", "Alertmanager")):
            print(f"  {what:<28} {native.url(name)}", file=out)
        if isinstance(native, KafkaStack):
            print(f"  {'Kafka broker':<28} {native.brokers} (topics otel-mlmon-events, otel-mlmon-sketches)",
                  file=out)
        if binaries.jaeger:
            print(f"  {'Jaeger (traces)':<28} {native.url('jaeger_query')}", file=out)
        print(f"  logs and state in {folder}\n", file=out)
        _print(out, [f"streaming {STACK_ROWS} rows to the model service; labels 5 s after the rows, through the "
                     "Collector", *drift_plan(), "", *legend(), "", HEADER])
        failures: list[BaseException] = []

        def drive() -> None:
            try:
                native.drive(rate=400.0, label_delay_s=5.0)
            except BaseException as exc:  # shown below
                failures.append(exc)

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        alerts_seen: set[tuple[str, str]] = set()
        results: list[dict[str, Any]] = []
        alerts: list[dict[str, Any]] = []
        deadline = None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(1.0)
            try:
                results = native.results()
                _print(out, table.lines(results))
                alerts = native.alerts()
                for alert in alerts:
                    labels = alert["labels"]
                    key = (labels["alertname"], labels.get("ml_feature_name") or labels.get("ml_evaluation_name")
                           or labels.get("column", ""))
                    if key not in alerts_seen:
                        alerts_seen.add(key)
                        source = "Prometheus rule" if labels["alertname"].startswith("ML") else "processor"
                        print(f"  alert in Alertmanager: {labels['alertname']} {key[1]} ({source})", file=out,
                              flush=True)
            except OSError:
                pass  # a component is busy; the next second tells
            if not driver.is_alive() and deadline is None:
                deadline = time.monotonic() + 20  # the last labels, windows and rule evaluations
            if not driver.is_alive() and failures:
                break
            if (deadline is not None and len(table.printed) == STACK_ROWS // WINDOW_ROWS
                    and any(k[0] == "MLFeatureDrift" for k in alerts_seen)):
                break
        if failures:
            print(f"the load driver failed: {failures[0]}; see {folder / 'replay.log'}", file=out)
            return 1
        _print(out, table.lines(results, final=True))
        _print(out, ["", *_stack_alert_lines(results, alerts),
                     "Prometheus holds the ml_* series; Alertmanager groups and routes the alerts."])
        if isinstance(native, KafkaStack):  # what went through Kafka: the broker's own count
            try:
                _print(out, native.offset_lines())
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                print(f"Kafka: the consumer groups' offsets could not be read ({exc})", file=out)
        if hold_s is None:
            print("The stack keeps running: browse Prometheus and Alertmanager above. Ctrl-C stops it.", file=out,
                  flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        else:
            time.sleep(hold_s)
    except KeyboardInterrupt:  # Ctrl-C while the rows stream: stop the stack, no traceback
        print("\nstopped", file=out)
        return 130
    finally:
        native.stop()
    return 0
