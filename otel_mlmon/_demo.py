"""``mlmon demo``: the whole product on one machine, with no external server.

A generated churn dataset (drift injected part-way), a scikit-learn model instrumented with otel-mlmon and
exporting over real OTLP/HTTP to an embedded processor on loopback, labels arriving late, a live view of each
window's drift, accuracy and alerts as the processor evaluates them, and an HTML report at the end.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import threading
import time
from typing import Any, TextIO

WINDOW_ROWS = 500
BATCH_ROWS = 50
DRIFT_FROM = 1500
STACK_ROWS = 3000  # rows `mlmon demo --stack` streams
FEATURES = ["tenure", "monthly_charges", "support_calls", "plan"]
PLANS = ["basic", "plus", "premium"]


def _require_sklearn() -> Any:
    import importlib.util

    missing = [name for name in ("sklearn", "pandas", "aiohttp") if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"mlmon demo needs {', '.join(missing)}: pip install 'otel-mlmon[sklearn,processor,batch]'")


def churn(rows: int, seed: int, drift_from: int | None = None) -> Any:
    """A churn dataset: tenure, monthly charges, support calls, plan; drift (older, pricier customers on a new
    plan mix) from row ``drift_from`` on."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    drifted = np.zeros(rows, dtype=bool) if drift_from is None else np.arange(rows) >= drift_from
    tenure = rng.gamma(2.0, 12.0, rows) + np.where(drifted, 18.0, 0.0)
    charges = rng.normal(70, 20, rows) + np.where(drifted, 25.0, 0.0)
    calls = rng.poisson(np.where(drifted, 3.0, 1.5))
    plan = np.where(drifted, rng.choice(["basic", "plus", "premium"], rows, p=[0.2, 0.3, 0.5]),
                    rng.choice(["basic", "plus", "premium"], rows, p=[0.5, 0.35, 0.15]))
    logit = -1.0 - 0.04 * tenure + 0.03 * (charges - 70) + 0.5 * calls + 0.4 * (plan == "basic")
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"tenure": tenure, "monthly_charges": charges, "support_calls": calls.astype(float),
                         "plan": plan, "churned": churned, "id": [f"{seed}-{i}" for i in range(rows)]})


def churn_model(train: Any) -> Any:
    """The churn model: a scikit-learn Pipeline that takes the raw features (the plan as text), as a service would."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    encode = ColumnTransformer([("plan", OrdinalEncoder(categories=[PLANS]), ["plan"])], remainder="passthrough",
                               verbose_feature_names_out=False)
    model = Pipeline([("encode", encode), ("trees", HistGradientBoostingClassifier(
        max_iter=60, categorical_features=[0], random_state=0))])
    return model.fit(train[FEATURES], train["churned"])


def churn_profile(model: Any, train: Any) -> Any:
    """The reference profile: the training rows with the model's outputs, windowed like the stream."""
    import numpy as np

    from otel_mlmon.engine.columns import build_profile
    from otel_mlmon.engine.windows import WindowSpec

    scores = model.predict_proba(train[FEATURES])[:, 1]
    reference = {name: train[name].to_numpy(dtype=object if name == "plan" else float) for name in FEATURES}
    reference["prediction"] = np.where(scores > 0.5, "1", "0").astype(object)
    reference["score"] = scores
    # No labels: the model's accuracy on its own training rows would set an optimistic performance band.
    profile, _ = build_profile(reference, WindowSpec(chunk_size=WINDOW_ROWS), model="churn", version="1",
                               prediction_column="prediction", score_columns={"1": "score"},
                               target_column="churned", classes=["0", "1"])
    return profile


def prepare(folder: str, serve_rows: int = 3000, drift_from: int = DRIFT_FROM) -> dict[str, str]:
    """The demo stack's inputs, written to ``folder``: the pickled model, the reference profile, and the serving
    data (``id``, the features, the ``churned`` truth; drift from row ``drift_from``) that the load driver sends."""
    import pickle

    _require_sklearn()
    os.makedirs(folder, exist_ok=True)
    train = churn(4000, 1)
    model = churn_model(train)
    paths = {"model": os.path.join(folder, "model.pkl"), "reference": os.path.join(folder, "reference.json"),
             "serving": os.path.join(folder, "serving.csv")}
    with open(paths["model"], "wb") as handle:
        pickle.dump(model, handle)
    churn_profile(model, train).save(paths["reference"])
    churn(serve_rows, 2, drift_from=drift_from).to_csv(paths["serving"], index=False)
    return paths


WINDOW_HEADER = f"{'window':>6} {'rows':>5} {'labels':>6} {'accuracy':>8}  drift alerts"


def window_lines(results: list[dict[str, Any]]) -> dict[int, tuple[int, str]]:
    """Per window of the processor's analysis results: its labeled rows, and its line (rows, labels, accuracy,
    drifted columns)."""
    by_window: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        if r["period"] == "analysis":
            by_window.setdefault(r["window"], []).append(r)
    lines = {}
    for window in sorted(by_window):
        found = by_window[window]
        accuracy = next((r["value"] for r in found if r["metric"] == "accuracy"), None)
        drifted = sorted({r["column"] for r in found if r["kind"] == "drift" and r["alert"]})
        lines[window] = (int(found[0]["labeled_rows"]), f"{window:>6} {found[0]['rows']:>5} "
                         f"{found[0]['labeled_rows']:>6} {'' if accuracy is None else f'{accuracy:8.3f}':>8}  "
                         f"{', '.join(drifted) or '-'}")
    return lines


def run(out: TextIO = sys.stdout, report_path: str = "mlmon-demo-report.html") -> int:
    _require_sklearn()
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
    from otel_mlmon._stack import free_port
    from otel_mlmon.batch.report import write_report
    from otel_mlmon.engine.results import WindowResult
    from otel_mlmon.instrumentation import force_flush
    from otel_mlmon.instrumentation._api import telemetry_for
    from otel_mlmon.processor.server import serve
    from otel_mlmon.processor.service import Processor
    from otel_mlmon.processor.store import Store

    train, serve_rows = churn(4000, 1), churn(3000, 2, drift_from=DRIFT_FROM)
    model = churn_model(train)
    profile = churn_profile(model, train)

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
    print("otel-mlmon demo: a churn model served with otel-mlmon, an embedded processor on " + url, file=out)
    print(f"  {len(train)} training rows; {len(serve_rows)} served in calls of {BATCH_ROWS} rows, windows of "
          f"{WINDOW_ROWS}; drift from row {DRIFT_FROM}; labels arrive two windows late\n", file=out)

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
    print(WINDOW_HEADER, file=out)
    shown: dict[int, tuple[int, str]] = {}

    def show() -> None:
        for window, entry in window_lines(processor.store.results(model="churn", period="analysis")).items():
            if shown.get(window) != entry:
                shown[window] = entry
                print(entry[1], file=out, flush=True)

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
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.3)
            show()
            if len(shown) == len(serve_rows) // WINDOW_ROWS and all(
                    labels == WINDOW_ROWS for labels, _ in shown.values()):
                break
        fired = processor.alerts.firing()
        print(f"\nalerts firing: {len(fired)}", file=out)
        for transition in sorted(fired, key=lambda t: (t.result["kind"], t.result["column"], t.result["metric"])):
            r = transition.result
            print(f"  {r['kind']:<12} {r['column']:<16} {r['metric']:<20} value {r['value']:.3f} in window "
                  f"{r['window']} (threshold {r['upper_threshold']:.3f})", file=out)
        results = [WindowResult(**r) for r in processor.store.results(model="churn")]
        write_report(results, report_path, profile)
        counters = processor.counters()
        print(f"\nthe processor received {counters.get('predictions', 0)} predictions and joined "
              f"{counters.get('labels_joined', 0)} labels in {time.monotonic() - started:.1f} s", file=out)
        print(f"report: {os.path.abspath(report_path)}   results: GET {url}/v1/results (while running)", file=out)
    finally:
        # Send the last sketches and retire this telemetry (no exit-time flush into shut-down providers), then
        # shut the providers down while the processor still listens.
        telemetry_for(tracer_provider, meter_provider, logger_provider).close()
        for provider in (logger_provider, meter_provider, tracer_provider):
            provider.shutdown()
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
    return 0


def stack(out: TextIO = sys.stdout, hold_s: float | None = None) -> int:
    """``mlmon demo --stack``: the docker-compose topology natively (otel_mlmon._stack): the model service under
    ``opentelemetry-instrument``, the Collector built from our manifest, the processor, Prometheus with our rules
    and Alertmanager. Streams the drifting data with late labels, shows windows and alerts as they come, then keeps
    the stack up for ``hold_s`` seconds (None: until Ctrl-C) so that Prometheus and Alertmanager can be browsed."""
    import threading
    from pathlib import Path

    from otel_mlmon._stack import NativeStack, find_binaries

    print("mlmon demo --stack: the demo stack of docker-compose.yml, natively: an instrumented model service, the "
          "otel-mlmon Collector, the processor, Prometheus and Alertmanager.", file=out)
    binaries, missing = find_binaries()
    if binaries is None:
        print("Missing here:", file=out)
        for line in missing:
            print(f"  - {line}", file=out)
        print("(`mlmon demo` without --stack needs none of them.)", file=out)
        return 1
    _require_sklearn()
    folder = Path(tempfile.mkdtemp(prefix="mlmon-stack-"))
    native = NativeStack(folder, binaries, interval_s=2.0)
    native.prepare(serve_rows=STACK_ROWS)
    try:
        try:
            native.start()
        except RuntimeError as exc:  # a component that does not start: say which, and where its log is
            print(f"the stack did not start: {exc}\nlogs: {folder}", file=out)
            return 1
        for name, what in (("model", "model service"), ("otlp_http", "Collector OTLP/HTTP"),
                           ("processor_http", "processor API (/v1/results)"), ("prometheus", "Prometheus"),
                           ("alertmanager", "Alertmanager")):
            print(f"  {what:<28} {native.url(name)}", file=out)
        if binaries.jaeger:
            print(f"  {'Jaeger (traces)':<28} {native.url('jaeger_query')}", file=out)
        print(f"  logs and state in {folder}\n", file=out)
        print(f"streaming {STACK_ROWS} rows (drift from row {DRIFT_FROM}) to the model service; labels 5 s after the "
              f"rows, through the Collector\n{WINDOW_HEADER}", file=out, flush=True)
        failures: list[BaseException] = []

        def drive() -> None:
            try:
                native.drive(rate=400.0, label_delay_s=5.0)
            except BaseException as exc:  # shown below
                failures.append(exc)

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        shown: dict[int, tuple[int, str]] = {}
        alerts_seen: set[tuple[str, str]] = set()
        deadline = None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(1.0)
            try:
                for window, entry in window_lines(native.results()).items():
                    if shown.get(window) != entry:
                        shown[window] = entry
                        print(entry[1], file=out, flush=True)
                for alert in native.alerts():
                    labels = alert["labels"]
                    key = (labels["alertname"], labels.get("ml_feature_name") or labels.get("column", ""))
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
            labeled = [window for window, (labels, _) in shown.items() if labels == WINDOW_ROWS]
            if (deadline is not None and len(labeled) == STACK_ROWS // WINDOW_ROWS
                    and any(k[0] == "MLFeatureDrift" for k in alerts_seen)):
                break
        if failures:
            print(f"the load driver failed: {failures[0]}; see {folder / 'replay.log'}", file=out)
            return 1
        print(f"\n{len(alerts_seen)} alert(s) reached Alertmanager; Prometheus holds the ml_* series.", file=out)
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
