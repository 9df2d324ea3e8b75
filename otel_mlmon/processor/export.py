"""What the processor sends out: results and alerts as OTLP metrics and events, to Alertmanager, to a webhook.

OTLP goes through the OTel SDK configured from the standard ``OTEL_EXPORTER_OTLP_*`` variables (or the providers
given): gauges of the newest window per series (``ml.drift.score``, ``ml.drift.threshold``,
``ml.evaluation.score``, ``ml.evaluation.estimated_score`` (CBPE), ``ml.label.coverage``, ``ml.label.latency``),
``ml.alert.firing`` (1 while an alert fires, 0 once resolved), the ``ml.alerts`` counter, and an ``ml.alert`` event
per transition (ERROR for realized performance and performance changes, WARN for the other kinds: drift, data
quality, estimated performance; a performance change also carries ``ml.alert.change.*``). Alertmanager gets
``POST /api/v2/alerts`` with every firing alert, resent each ``resend_s`` while it fires, and an ``endsAt`` when it
resolves. Alertmanager and webhook sends leave the tick: one background thread per sink with a bounded queue, a
timeout per request, a few retries with backoff, and no redirects followed (a 3xx is a failed delivery). Export
failures are counted and never stop the processor.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry._logs import SeverityNumber, get_logger
from opentelemetry.metrics import Observation, get_meter

from otel_mlmon import semconv
from otel_mlmon._version import __version__
from otel_mlmon.engine.estimate import ESTIMATED_PERFORMANCE, SAMPLING_ERROR
from otel_mlmon.engine.results import iso_utc_ns
from otel_mlmon.processor.alerts import FIRING, Transition
from otel_mlmon.processor.store import PERFORMANCE_CHANGE

_logger = logging.getLogger("otel_mlmon.processor")

# Kinds whose alerts are errors (critical in Alertmanager): realized performance, and its changes on the label stream.
_CRITICAL = frozenset({"performance", PERFORMANCE_CHANGE})
# (attribute, result field, type) of what a performance_change result adds (processor.sequential.change_result)
_CHANGE_ATTRIBUTES: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    (semconv.ML_ALERT_CHANGE_METRIC, "change_metric", str), (semconv.ML_ALERT_CHANGE_BEFORE, "before", float),
    (semconv.ML_ALERT_CHANGE_AFTER, "after", float), (semconv.ML_ALERT_CHANGE_START_LABEL, "change_start_label", int),
    (semconv.ML_ALERT_CHANGE_LABEL, "change_label", int))


def _threshold(r: dict[str, Any]) -> float | None:
    """The threshold a result crossed (the lower one for a drop below it), else its upper one, else its lower."""
    lower, upper, value = r.get("lower_threshold"), r.get("upper_threshold"), r.get("value")
    if lower is not None and value is not None and value < lower:
        return float(lower)
    return float(upper) if upper is not None else None if lower is None else float(lower)


class OtlpExport:
    """Gauges of the newest results, the alert counter and alert events, through the OTel SDK."""

    def __init__(self, meter_provider: Any = None, logger_provider: Any = None) -> None:
        self._providers = (meter_provider, logger_provider)
        self.logger_provider = logger_provider
        self.log_handler: logging.Handler | None = None  # set by configure_logging; detached by close()
        meter = self._meter = get_meter(semconv.INSTRUMENTATION_SCOPE, __version__, meter_provider)
        self.logger = get_logger(semconv.INSTRUMENTATION_SCOPE, __version__, logger_provider=logger_provider)
        self._lock = threading.Lock()
        self._latest: dict[tuple[str, tuple[tuple[str, Any], ...]], tuple[int, float]] = {}
        for name, description in ((semconv.ML_DRIFT_SCORE, "Drift of a column in the newest window"),
                                  (semconv.ML_DRIFT_THRESHOLD, "Upper threshold of that drift value"),
                                  (semconv.ML_EVALUATION_SCORE, "Realized performance in the newest window"),
                                  (semconv.ML_EVALUATION_ESTIMATED_SCORE,
                                   "Performance estimated without labels (CBPE) in the newest window"),
                                  (semconv.ML_LABEL_COVERAGE, "Share of the newest window's rows with a label")):
            meter.create_observable_gauge(name, callbacks=[self._observer(name)], unit="1", description=description)
        meter.create_observable_gauge(semconv.ML_LABEL_LATENCY, callbacks=[self._observer(semconv.ML_LABEL_LATENCY)],
                                      unit="s", description="Mean time from prediction to label, newest window")
        self.alerts = meter.create_counter(semconv.ML_ALERTS, unit="{alert}", description="Alerts that fired")
        self._firing: dict[tuple[tuple[str, Any], ...], int] = {}
        meter.create_observable_gauge(semconv.ML_ALERT_FIRING, callbacks=[self._observe_firing],
                                      unit=semconv.ML_ALERT_FIRING_UNIT,
                                      description="1 while the alert fires, 0 once it resolved")

    def watch(self, counters: Callable[[], dict[str, int]], store_path: str) -> None:
        """The processor's own telemetry: records by outcome, what waits, the store's size, export failures."""
        meter = self._meter

        def records(options: Any) -> Iterable[Observation]:
            found = counters()
            return [Observation(found.get(key, 0), {semconv.ML_PROCESSOR_OUTCOME: outcome}) for key, outcome in (
                ("predictions", "prediction_stored"), ("duplicate_predictions", "prediction_duplicate"),
                ("labels_joined", "label_joined"), ("labels_orphaned", "label_orphaned"),
                ("duplicate_labels", "label_duplicate"), ("expired_predictions", "prediction_expired"),
                ("expired_orphans", "label_expired"), ("rejected_records", "rejected"),
                ("backpressure_predictions", "backpressure"), ("backpressure_labels", "backpressure_labels"))]

        def pending(options: Any) -> Iterable[Observation]:
            found = counters()
            return [Observation(found.get("pending_predictions", 0), {semconv.ML_PROCESSOR_STATE: "predictions"}),
                    Observation(found.get("orphan_labels", 0), {semconv.ML_PROCESSOR_STATE: "orphan_labels"})]

        def size(options: Any) -> Iterable[Observation]:
            total = sum(os.path.getsize(store_path + suffix) for suffix in ("", "-wal")
                        if os.path.exists(store_path + suffix))
            return [Observation(total)]

        def failures(options: Any) -> Iterable[Observation]:
            return [Observation(counters().get("export_failures", 0))]

        meter.create_observable_counter(semconv.ML_PROCESSOR_RECORDS, [records], unit="{record}",
                                        description="Records the processor received, by outcome")
        meter.create_observable_gauge(semconv.ML_PROCESSOR_PENDING, [pending], unit="{record}",
                                      description="Predictions waiting for labels, and labels for predictions")
        meter.create_observable_gauge(semconv.ML_PROCESSOR_STORE_SIZE, [size], unit="By",
                                      description="Size of the processor's SQLite state on disk")
        meter.create_observable_counter(semconv.ML_PROCESSOR_EXPORT_FAILURES, [failures], unit="{failure}",
                                        description="Alert deliveries that failed")

    def close(self) -> None:
        """Flushes and shuts down the providers given (the last results go out while the store is still open)."""
        if self.log_handler is not None:  # later records go to the console only, not to a provider shut down
            logging.getLogger().removeHandler(self.log_handler)
        for provider in self._providers:
            if provider is not None and hasattr(provider, "shutdown"):
                provider.shutdown()

    def _observer(self, name: str) -> Any:
        def observe(options: Any) -> Iterable[Observation]:
            with self._lock:
                items = [(attributes, value) for (metric, attributes), (_, value) in self._latest.items()
                         if metric == name]
            return [Observation(value, dict(attributes)) for attributes, value in items]

        return observe

    def _set(self, name: str, attributes: dict[str, Any], window: int, value: float | None) -> None:
        if value is None:
            return
        key = (name, tuple(sorted(attributes.items())))
        with self._lock:
            if window >= self._latest.get(key, (-1, 0.0))[0]:
                self._latest[key] = (window, float(value))

    def results(self, rows: Sequence[dict[str, Any]], label_latency_s: float | None) -> None:
        for r in rows:
            if r.get("period") != "analysis" or r.get("value") is None:
                continue
            base = {semconv.ML_MODEL_NAME: r["model"], semconv.ML_MODEL_VERSION: r["model_version"]}
            if r.get("segment") is not None:  # bounded: the reference's segments, __other__ and __missing__
                base[semconv.ML_SEGMENT] = r["segment"]
            if r["kind"] == "drift":
                attributes = {**base, semconv.ML_FEATURE_NAME: r["column"], semconv.ML_DRIFT_METHOD: r["metric"]}
                self._set(semconv.ML_DRIFT_SCORE, attributes, r["window"], r["value"])
                self._set(semconv.ML_DRIFT_THRESHOLD, attributes, r["window"], r["upper_threshold"])
            elif r["kind"] == "performance":
                self._set(semconv.ML_EVALUATION_SCORE, {**base, semconv.ML_EVALUATION_NAME: r["metric"]}, r["window"],
                          r["value"])
            elif r["kind"] == ESTIMATED_PERFORMANCE and not r["metric"].endswith(SAMPLING_ERROR):
                self._set(semconv.ML_EVALUATION_ESTIMATED_SCORE, {**base, semconv.ML_EVALUATION_NAME: r["metric"]},
                          r["window"], r["value"])
        if rows:
            first = rows[0]
            base = {semconv.ML_MODEL_NAME: first["model"], semconv.ML_MODEL_VERSION: first["model_version"]}
            if first.get("rows"):
                self._set(semconv.ML_LABEL_COVERAGE, base, first["window"], first["labeled_rows"] / first["rows"])
            self._set(semconv.ML_LABEL_LATENCY, base, first["window"], label_latency_s)

    def _observe_firing(self, options: Any) -> Iterable[Observation]:
        with self._lock:
            return [Observation(value, dict(attributes)) for attributes, value in self._firing.items()]

    def firing_state(self, transitions: Sequence[Transition]) -> None:
        """Sets ``ml.alert.firing`` for these alerts (at start: the alerts that fire in the persisted state)."""
        with self._lock:
            for t in transitions:
                r = t.result
                attributes = {semconv.ML_MODEL_NAME: r["model"], semconv.ML_MODEL_VERSION: r["model_version"],
                              semconv.ML_ALERT_KIND: r["kind"], semconv.ML_FEATURE_NAME: r["column"],
                              semconv.ML_ALERT_METRIC: r["metric"]}
                if r.get("segment") is not None:  # a segment's alert is a series of its own
                    attributes[semconv.ML_SEGMENT] = r["segment"]
                key = tuple(sorted(attributes.items()))
                self._firing[key] = int(t.state == FIRING)

    def transitions(self, transitions: Sequence[Transition]) -> None:
        self.firing_state(transitions)
        for t in transitions:
            r = t.result
            attributes = {semconv.ML_MODEL_NAME: r["model"], semconv.ML_MODEL_VERSION: r["model_version"],
                          semconv.ML_ALERT_KIND: r["kind"], semconv.ML_ALERT_STATE: t.state,
                          semconv.ML_FEATURE_NAME: r["column"], semconv.ML_ALERT_METRIC: r["metric"],
                          semconv.ML_ALERT_WINDOW: int(r["window"])}
            if r.get("segment") is not None:
                attributes[semconv.ML_SEGMENT] = r["segment"]
            if r.get("value") is not None:
                attributes[semconv.ML_ALERT_VALUE] = float(r["value"])
            threshold = _threshold(r)
            if threshold is not None:
                attributes[semconv.ML_ALERT_THRESHOLD] = float(threshold)
            for name, key, kind in _CHANGE_ATTRIBUTES:
                if r.get(key) is not None:
                    attributes[name] = kind(r[key])
            severity = SeverityNumber.ERROR if r["kind"] in _CRITICAL else SeverityNumber.WARN
            self.logger.emit(timestamp=t.since_ns, observed_timestamp=time.time_ns(), severity_number=severity,
                             severity_text=severity.name, attributes=attributes, event_name=semconv.EVENT_ALERT)
            if t.state == FIRING:
                self.alerts.add(1, {semconv.ML_MODEL_NAME: r["model"], semconv.ML_MODEL_VERSION: r["model_version"],
                                    semconv.ML_ALERT_KIND: r["kind"]})


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx answer is an answer, not an instruction: urllib then raises it as an HTTPError (a failed delivery)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def post_json(url: str, document: Any, timeout_s: float) -> tuple[bool, bool, str]:
    """POST a JSON document once: (delivered, worth retrying, what happened). Never raises for the network."""
    request = urllib.request.Request(url, data=json.dumps(document).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(request, timeout=timeout_s) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        if 300 <= exc.code < 400:
            return False, False, f"answered {exc.code} (redirects are not followed: configure the final URL)"
        return False, exc.code in _RETRYABLE_STATUS, f"answered {exc.code}"
    except (OSError, ValueError) as exc:  # refused, unreachable, timed out, reset; a malformed answer
        return False, True, str(exc) or type(exc).__name__
    if 200 <= status < 300:
        return True, False, f"answered {status}"
    return False, status in _RETRYABLE_STATUS, f"answered {status}"


class Delivery:
    """Posts JSON documents to one URL from one background thread, in order, off the caller's path.

    A bounded queue (a full queue counts the document as failed), a timeout per request, ``attempts`` tries
    per document with exponential backoff from ``backoff_s`` (connection errors, timeouts, 408/429/5xx; never a
    redirect or another 4xx). ``failures`` counts documents that were not delivered.
    """

    def __init__(self, url: str, what: str, timeout_s: float = 5.0, attempts: int = 3, backoff_s: float = 1.0,
                 max_queue: int = 256, on_done: Callable[[bool, Any], None] | None = None) -> None:
        if attempts < 1 or max_queue < 1 or not timeout_s > 0 or backoff_s < 0:
            raise ValueError("Delivery: attempts and max_queue must be >= 1, timeout_s > 0, backoff_s >= 0")
        self.url = url
        self.what = what
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_queue = max_queue
        self.on_done = on_done
        self.delivered = 0
        self.failures = 0
        self._pending: deque[tuple[Any, Any]] = deque()
        self._busy = False
        self._closed = False
        self._closing = threading.Event()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, document: Any, tag: Any = None) -> bool:
        """Queue a document (``tag`` goes back to ``on_done``); False when the queue is full or closed."""
        with self._cond:
            if self._closed or len(self._pending) >= self.max_queue:
                self.failures += 1
                _logger.warning("%s: %s; an alert delivery to %s was dropped", self.what,
                                "closed" if self._closed else f"{self.max_queue} deliveries already wait", self.url)
                return False
            self._pending.append((document, tag))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"mlmon-{self.what}", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return True

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued document was delivered or given up; False if ``timeout_s`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout_s)

    def close(self, timeout_s: float = 2.0) -> None:
        """Deliver what waits within ``timeout_s`` (no more retries), then stop; the rest counts as failed."""
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._cond:
            self._closed = True
            abandoned = len(self._pending) + self._busy
            self.failures += len(self._pending)
            self._pending.clear()
        if abandoned:
            _logger.warning("%s: %d alert deliveries to %s were not done at shutdown", self.what, abandoned,
                            self.url)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closing.is_set())
                if not self._pending:
                    return
                document, tag = self._pending.popleft()
                self._busy = True
            ok = False
            try:
                ok = self._deliver(document)
            finally:
                with self._cond:
                    self._busy = False
                    if ok:
                        self.delivered += 1
                    else:
                        self.failures += 1
                    self._cond.notify_all()
            if self.on_done is not None:
                self.on_done(ok, tag)

    def _deliver(self, document: Any) -> bool:
        detail = ""
        for attempt in range(self.attempts):
            ok, retryable, detail = post_json(self.url, document, self.timeout_s)
            if ok:
                return True
            if not retryable or attempt + 1 == self.attempts or self._closing.wait(self.backoff_s * 2 ** attempt):
                break
        _logger.warning("%s at %s failed: %s", self.what, self.url, detail)
        return False


class AlertmanagerSink:
    """Posts alerts to Alertmanager's v2 API; firing alerts are resent so that Alertmanager keeps them.

    Sends leave the caller at once (a :class:`Delivery` thread posts them); a resend that fails is tried again at
    the next call instead of ``resend_s`` later."""

    def __init__(self, url: str, resend_s: float = 60.0, timeout_s: float = 5.0, attempts: int = 3,
                 backoff_s: float = 1.0, max_queue: int = 256) -> None:
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.resend_s = resend_s
        self.delivery = Delivery(self.url, "sending alerts to Alertmanager", timeout_s, attempts, backoff_s,
                                 max_queue, on_done=self._done)
        self._last_sent = -math.inf

    @property
    def failures(self) -> int:
        return self.delivery.failures

    @staticmethod
    def payload(t: Transition, now_ns: int) -> dict[str, Any]:
        r = t.result
        if r.get("before") is not None and r.get("after") is not None:  # a performance change
            summary = (f"{r.get('change_metric', 'performance')} of {r['column']} moved from {r['before']:.4g} to "
                       f"{r['after']:.4g} ({r['metric']}, window {r['window']})")
        else:
            value = "none" if r.get("value") is None else f"{r['value']:.6g}"
            summary = f"{r['kind']} {r['metric']} of {r['column']} is {value} in window {r['window']}"
        threshold = _threshold(r)
        alert = {"labels": {"alertname": f"ml_{r['kind']}", **t.labels,
                            "severity": "critical" if r["kind"] in _CRITICAL else "warning"},
                 "annotations": {"summary": summary, "value": repr(r.get("value")), "window": str(r["window"]),
                                 "threshold": repr(threshold)},
                 "startsAt": iso_utc_ns(t.since_ns), "generatorURL": "https://github.com/otel-mlmon"}
        if t.state != FIRING:
            alert["endsAt"] = iso_utc_ns(now_ns)
        return alert

    def send(self, transitions: Sequence[Transition], firing: Sequence[Transition], now_ns: int,
             force: bool = False) -> bool:
        """Queue the transitions, plus every firing alert when a resend is due; False if it could not be queued."""
        due = force or time.monotonic() - self._last_sent >= self.resend_s
        chosen = list(transitions) + ([t for t in firing if t not in transitions] if due else [])
        if not chosen:
            return True
        queued = self.delivery.submit([self.payload(t, now_ns) for t in chosen], tag=due)
        if queued and due:
            self._last_sent = time.monotonic()
        return queued

    def _done(self, ok: bool, resend: Any) -> None:
        if resend and not ok:
            self._last_sent = -math.inf  # the firing alerts did not get through: resend at the next tick

    def flush(self, timeout_s: float | None = None) -> bool:
        return self.delivery.flush(timeout_s)

    def close(self, timeout_s: float = 2.0) -> None:
        self.delivery.close(timeout_s)


class TensorBoardSink:
    """Each evaluated window's results as TensorBoard scalars (``--tensorboard DIR``): the tags, steps (window
    index) and wall times (window end) of ``mlmon evaluate --tensorboard``, in ``DIR/<model>/<version>/<period>``,
    one writer per run kept open. A revised window writes its step again (TensorBoard keeps the latest). Never
    raises into the evaluation: a failure is logged once and counted (``failures``)."""

    def __init__(self, logdir: str) -> None:
        from otel_mlmon.batch.tensorboard import writer_class

        self.logdir = logdir
        self._writer_type = writer_class()  # a missing tensorboardX stops startup with the extra to install
        self._writers: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()
        self.failures = 0
        self.written = 0

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        from otel_mlmon.batch.report_data import as_results
        from otel_mlmon.batch.tensorboard import _safe, scalars

        try:
            results = [r for r in as_results(rows) if r.kind != PERFORMANCE_CHANGE]
            with self._lock:
                for run, points in scalars(results).items():
                    model, version, period = (results[0].model, results[0].model_version, run[-1])
                    where = (model, version or "_", period)
                    writer = self._writers.get(where)
                    if writer is None:
                        writer = self._writer_type(logdir=os.path.join(self.logdir, *map(_safe, where)),
                                                   flush_secs=3600)
                        self._writers[where] = writer
                    for name, value, step, when in points:
                        writer.add_scalar(name, value, global_step=step, walltime=when)
                        self.written += 1
                    writer.flush()
        except Exception:
            self.failures += 1
            if self.failures == 1:
                _logger.exception("writing TensorBoard scalars into %s failed (logged once, counted)", self.logdir)

    def close(self) -> None:
        with self._lock:
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()


class WebhookSink:
    """POSTs each alert transition as JSON to a URL (for example to start a retraining job), off the caller's
    path: a :class:`Delivery` thread, no redirects followed."""

    def __init__(self, url: str, timeout_s: float = 5.0, attempts: int = 3, backoff_s: float = 1.0,
                 max_queue: int = 256) -> None:
        self.url = url
        self.delivery = Delivery(url, "sending alerts to the webhook", timeout_s, attempts, backoff_s, max_queue)

    @property
    def failures(self) -> int:
        return self.delivery.failures

    def send(self, transitions: Sequence[Transition], now_ns: int) -> bool:
        """Queue the transitions; False if they could not be queued (counted as a failure)."""
        document = {"alerts": [{"state": t.state, "since": iso_utc_ns(t.since_ns), **t.labels,
                                "value": t.result["value"], "window": t.result["window"],
                                "upper_threshold": t.result.get("upper_threshold"),
                                "lower_threshold": t.result.get("lower_threshold"),
                                **{key: t.result[key] for _, key, _ in _CHANGE_ATTRIBUTES if key in t.result}}
                               for t in transitions],
                    "sent": iso_utc_ns(now_ns)}
        return self.delivery.submit(document)

    def flush(self, timeout_s: float | None = None) -> bool:
        return self.delivery.flush(timeout_s)

    def close(self, timeout_s: float = 2.0) -> None:
        self.delivery.close(timeout_s)


# --- the processor's own telemetry, from the SDK's standard environment ---------------------------------------
_SIGNALS = {"metrics": "OTEL_METRICS_EXPORTER", "logs": "OTEL_LOGS_EXPORTER"}
DEFAULT_SERVICE_NAME = "mlmon-processor"


def _signal_on(signal: str, environ: Mapping[str, str]) -> bool:
    """Whether ``signal`` goes out: ``OTEL_<SIGNAL>_EXPORTER`` is ``otlp`` (the default) rather than ``none``, and
    an OTLP endpoint is set for it (without one the processor sends nothing, as before: the SDK's default endpoint,
    localhost:4318, is the processor's own listener)."""
    variable = _SIGNALS[signal]
    chosen = {v.strip().lower() for v in environ.get(variable, "otlp").split(",") if v.strip()} or {"otlp"}
    unknown = chosen - {"otlp", "none"}
    if unknown:
        raise ValueError(f"{variable}={environ[variable]!r}: the processor exports over OTLP only; set otlp or none")
    if "none" in chosen:
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
                or environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip())


def _grpc(signal: str, environ: Mapping[str, str]) -> bool:
    """``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL``, else ``OTEL_EXPORTER_OTLP_PROTOCOL``, else ``http/protobuf``."""
    for variable in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(variable, "").strip()
        if protocol:
            if protocol not in ("grpc", "http/protobuf"):
                raise ValueError(f"{variable}={protocol!r}: the processor's OTLP exporters speak grpc or "
                                 "http/protobuf")
            return protocol == "grpc"
    return False


def resource_from_environment() -> Any:
    """The SDK's resource (``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SERVICE_NAME``); service.name defaults to
    ``mlmon-processor``."""
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "unknown_service")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    if SERVICE_VERSION not in resource.attributes:
        resource = resource.merge(Resource({SERVICE_VERSION: __version__}))
    return resource


def otlp_from_environment() -> OtlpExport | None:
    """Results, alerts and the processor's own metrics and logs over OTLP, configured as the OTel SDK is.

    The exporters are built without arguments, so the SDK reads ``OTEL_EXPORTER_OTLP_*`` itself (endpoint,
    headers, certificate and client certificate, compression, timeout; per signal or for all); the gRPC or HTTP
    class follows the protocol variables. ``OTEL_SDK_DISABLED=true`` turns all of it off;
    ``OTEL_METRICS_EXPORTER=none`` / ``OTEL_LOGS_EXPORTER=none`` one signal. ``OTEL_METRIC_EXPORT_INTERVAL`` and
    ``OTEL_BLRP_*`` tune the reader and the batch processor. None when nothing would be sent.
    """
    environ = os.environ  # the SDK's exporters read it too: one source
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    metrics, logs = _signal_on("metrics", environ), _signal_on("logs", environ)
    if not (metrics or logs):
        return None
    from opentelemetry._logs import NoOpLoggerProvider
    from opentelemetry.metrics import NoOpMeterProvider

    resource = resource_from_environment()
    meter_provider: Any = NoOpMeterProvider()
    logger_provider: Any = None
    if metrics:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        if _grpc("metrics", environ):
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
                OTLPMetricExporter,
            )
        meter_provider = MeterProvider([PeriodicExportingMetricReader(OTLPMetricExporter())], resource=resource)
    if logs:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        if _grpc("logs", environ):
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        else:
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # type: ignore[assignment]
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    return OtlpExport(meter_provider, logger_provider if logs else NoOpLoggerProvider())


# --- the processor's logs ---------------------------------------------------------------------------------------

class JsonLineFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and ``trace_id`` / ``span_id`` (hex, as in OTLP) when
    the record was emitted inside a span; an exception's traceback stays inside the line."""

    def format(self, record: logging.LogRecord) -> str:
        from opentelemetry.trace import format_span_id, format_trace_id, get_current_span

        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        context = get_current_span().get_span_context()  # the emitting thread's: handlers run in it
        if context.is_valid:
            entry["trace_id"], entry["span_id"] = format_trace_id(context.trace_id), format_span_id(context.span_id)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class _NotOpenTelemetry(logging.Filter):
    """The SDK's own records (an export that failed) stay off the OTLP handler: exporting them could loop."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("opentelemetry")


def configure_logging(level: str = "info", otlp: OtlpExport | None = None) -> None:
    """The root logger at ``level``: JSON lines on stderr, and through the OTel SDK's ``LoggingHandler`` when
    ``otlp`` exports logs (records become OTLP log records, with the trace and span ids of the span they were
    emitted in)."""
    logger_provider = otlp.logger_provider if otlp is not None else None
    console = logging.StreamHandler()
    console.setFormatter(JsonLineFormatter())
    handlers: list[logging.Handler] = [console]
    if logger_provider is not None and hasattr(logger_provider, "add_log_record_processor"):
        import warnings

        from opentelemetry.sdk._logs import LoggingHandler

        with warnings.catch_warnings():  # 1.39+: "use opentelemetry-instrumentation-logging's"; same records
            warnings.simplefilter("ignore", DeprecationWarning)
            exported = LoggingHandler(logger_provider=logger_provider)
        exported.setFormatter(logging.Formatter("%(message)s"))  # the body is the message (basicConfig would
        exported.addFilter(_NotOpenTelemetry())                  # otherwise prefix it with level and logger)
        handlers.append(exported)
        assert otlp is not None
        otlp.log_handler = exported
    numeric = getattr(logging, level.upper())
    logging.basicConfig(level=numeric, handlers=handlers, force=True)
    logging.getLogger("aiohttp.access").setLevel(max(numeric, logging.WARNING))
