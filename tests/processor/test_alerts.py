"""Alerts: one firing per alert until it resolves, no re-fire after a restart, out over OTLP and to a real
Alertmanager (Debian's prometheus-alertmanager, started on loopback)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_mlmon import semconv
from otel_mlmon.engine.columns import profile_from_columns
from otel_mlmon.engine.windows import WindowSpec
from otel_mlmon.processor.decode import Decoded, LabelBatch, PredictionBatch
from otel_mlmon.processor.export import AlertmanagerSink, OtlpExport
from otel_mlmon.processor.service import Processor
from otel_mlmon.processor.store import Store
from tests.conftest import eventually, free_port

ROWS = 300


def _profile():
    rng = np.random.default_rng(0)
    profile, _ = profile_from_columns({"age": rng.normal(40, 10, 3000)}, WindowSpec(chunk_size=ROWS), model="m",
                                      version="1")
    return profile


def _send(processor: Processor, window: int, shift: float) -> None:
    rng = np.random.default_rng(window + 1)
    ages = rng.normal(40 + shift, 10, ROWS).tolist()
    batch = PredictionBatch("m", "1", 10**18 + window, [f"{window}-{i}" for i in range(ROWS)],
                            features={"age": ages})
    processor.accept_logs(Decoded(predictions=[batch]), 10**18 + window)  # received as it was made


def _otlp():
    reader = InMemoryMetricReader()
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    return OtlpExport(MeterProvider([reader], shutdown_on_exit=False), logger_provider), reader, logs


def _alert_events(logs) -> list[dict]:
    return [dict(r.log_record.attributes) for r in logs.get_finished_logs()
            if r.log_record.event_name == semconv.EVENT_ALERT]


def test_one_firing_until_resolved_and_no_refire_after_restart(tmp_path: Path) -> None:
    otlp, reader, logs = _otlp()
    processor = Processor(Store(str(tmp_path / "p.db")), otlp=otlp)
    processor.register(_profile())
    for window, shift in enumerate([0, 15, 15, 15]):
        _send(processor, window, shift)
    assert processor.tick() == 4
    events = _alert_events(logs)
    fired = [e for e in events if e[semconv.ML_ALERT_STATE] == "firing"]
    assert {(e[semconv.ML_FEATURE_NAME], e[semconv.ML_ALERT_KIND]) for e in fired} == {
        ("age", "drift"), ("age", "data_quality")}  # a 1.5 sd shift also leaves the reference range
    assert len(fired) == len({e[semconv.ML_ALERT_METRIC] for e in fired})  # once per metric, not per window
    assert all(e[semconv.ML_ALERT_WINDOW] == 1 for e in fired)
    data = reader.get_metrics_data()
    metrics = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert sum(p.value for p in metrics[semconv.ML_ALERTS].data.data_points) == len(fired)
    firing = {(p.attributes[semconv.ML_ALERT_KIND], p.attributes[semconv.ML_ALERT_METRIC]): p.value
              for p in metrics[semconv.ML_ALERT_FIRING].data.data_points}
    assert firing == {(e[semconv.ML_ALERT_KIND], e[semconv.ML_ALERT_METRIC]): 1 for e in fired}
    drift = {p.attributes[semconv.ML_DRIFT_METHOD]: p.value for p in metrics[semconv.ML_DRIFT_SCORE].data.data_points}
    assert drift["kolmogorov_smirnov"] > 0.3  # the newest window's value
    # The processor's own telemetry.
    records = {p.attributes[semconv.ML_PROCESSOR_OUTCOME]: p.value
               for p in metrics[semconv.ML_PROCESSOR_RECORDS].data.data_points}
    assert records["prediction_stored"] == 4 * ROWS and records["prediction_duplicate"] == 0
    pending = {p.attributes[semconv.ML_PROCESSOR_STATE]: p.value
               for p in metrics[semconv.ML_PROCESSOR_PENDING].data.data_points}
    assert pending == {"predictions": 0, "orphan_labels": 0}  # event times of 2001: past the label TTL already
    assert records["prediction_expired"] == 4 * ROWS
    assert metrics[semconv.ML_PROCESSOR_STORE_SIZE].data.data_points[0].value > 0
    processor.store.close()

    otlp, reader, logs = _otlp()  # a restart on the same state: the alerts are still firing, nothing re-fires
    restarted = Processor(Store(str(tmp_path / "p.db")), otlp=otlp)
    restarted.register(_profile())

    def firing_gauge() -> dict:
        data = reader.get_metrics_data()
        found = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                 if m.name == semconv.ML_ALERT_FIRING]
        return {p.attributes[semconv.ML_ALERT_METRIC]: p.value for p in found[0].data.data_points}

    assert firing_gauge() == {e[semconv.ML_ALERT_METRIC]: 1 for e in fired}  # restored from the state file
    _send(restarted, 4, 15)
    assert restarted.tick() == 1
    assert _alert_events(logs) == []
    _send(restarted, 5, 0)  # back to normal: resolved, once
    restarted.tick()
    resolved = _alert_events(logs)
    assert resolved and {e[semconv.ML_ALERT_STATE] for e in resolved} == {"resolved"}
    assert {e[semconv.ML_ALERT_WINDOW] for e in resolved} == {5}
    assert firing_gauge() == {e[semconv.ML_ALERT_METRIC]: 0 for e in fired}


HOUR = 3600 * 10**9


def _drifting(processor: Processor) -> Processor:
    """A normal window, then a drifted one, an hour apart; the processor's clock ten hours later (both closed)."""
    processor.register(_profile())
    for window, shift in enumerate([0, 15]):
        rng = np.random.default_rng(window + 1)
        batch = PredictionBatch("m", "1", 10**18 + window * HOUR, [f"{window}-{i}" for i in range(ROWS)],
                                features={"age": rng.normal(40 + shift, 10, ROWS).tolist()})
        processor.accept_logs(Decoded(predictions=[batch]), 10**18 + window * HOUR)  # received when made
    return processor


def _late_clock() -> int:
    return 10**18 + 10 * HOUR


@pytest.fixture
def alertmanager(tmp_path: Path):
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.fail("Alertmanager is not installed: `make test` installs it (scripts/system-deps.sh)")
    config = tmp_path / "alertmanager.yml"
    config.write_text("route:\n  receiver: quiet\n  group_wait: 1s\nreceivers:\n  - name: quiet\n")
    port = free_port()
    process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.path={tmp_path / 'am'}",
                                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=1).read(), 30, "Alertmanager ready",
                   interval_s=0.1)
    except AssertionError:
        process.kill()
        pytest.fail("Alertmanager did not start: " + process.stderr.read().decode()[-2000:])
    yield url
    process.terminate()
    process.wait(10)


@pytest.mark.integration
def test_drift_alerts_reach_a_real_alertmanager_and_resolve(tmp_path: Path, alertmanager: str) -> None:
    sink = AlertmanagerSink(alertmanager, resend_s=3600)
    clock = [_late_clock()]
    processor = _drifting(Processor(Store(str(tmp_path / "p.db")), clock=lambda: clock[0], alertmanager=sink))
    processor.tick()
    assert sink.flush(30)  # sends leave the tick: wait for the sink's thread

    def active() -> list[dict]:
        alerts = json.loads(urllib.request.urlopen(f"{alertmanager}/api/v2/alerts", timeout=5).read())
        return [a for a in alerts if a["status"]["state"] == "active"]

    firing = active()
    drift = [a for a in firing if a["labels"]["alertname"] == "ml_drift"]
    assert drift and {a["labels"]["column"] for a in drift} == {"age"}
    assert all(a["labels"]["model"] == "m" and a["labels"]["severity"] == "warning" for a in drift)
    assert sink.failures == 0
    batch = PredictionBatch("m", "1", 10**18 + 9 * HOUR, [f"2-{i}" for i in range(ROWS)],
                            features={"age": np.random.default_rng(3).normal(40, 10, ROWS).tolist()})
    processor.accept_logs(Decoded(predictions=[batch]), clock[0])  # back to normal
    processor.tick()
    clock[0] += 10 * HOUR  # idle since: its window closes
    processor.tick()
    assert sink.flush(30)
    deadline = time.monotonic() + 10
    while active() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert active() == []  # resolved with endsAt


def test_time_windows_close_after_their_end_and_count_from_zero(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    profile, _ = profile_from_columns({"age": rng.normal(40, 10, 3000)}, WindowSpec(chunk_size=ROWS), model="m",
                                      version="1")
    profile.window = WindowSpec(window="1min")
    minute = 60 * 10**9
    start = 1_000 * minute
    clock = [start + int(2.1 * minute)]
    processor = Processor(Store(str(tmp_path / "p.db")), clock=lambda: clock[0], allowed_lateness_s=5,
                          idle_timeout_s=60)
    processor.register(profile)
    for n, offset in enumerate((0.2, 0.7, 2.1, 1.5)):  # minutes: windows 1000, 1000, 1002, 1001 (out of order)
        batch = PredictionBatch("m", "1", start + int(offset * minute), [f"{n}-{i}" for i in range(50)],
                                features={"age": rng.normal(40, 10, 50).tolist()})
        processor.accept_logs(Decoded(predictions=[batch]), clock[0])
    # the watermark (newest event 2.1 min, less 5 s of allowed lateness) is past window 1001's end, not 1002's
    assert processor.tick() == 2
    results = processor.store.results(model="m", period="analysis", kind="data_quality", metric="missing_rate")
    assert [(r["window"], r["rows"], r["window_start"]) for r in results] == [
        (0, 100, "1970-01-01T16:40:00Z"), (1, 50, "1970-01-01T16:41:00Z")]
    clock[0] = start + int(3.2 * minute)
    assert processor.tick() == 1  # the model is idle (a minute without data): its last window closes too
    assert processor.tick() == 0  # and nothing is evaluated twice without new labels


def test_a_model_without_a_reference_gets_one_from_its_first_windows(tmp_path: Path) -> None:
    processor = Processor(Store(str(tmp_path / "p.db")), bootstrap_windows=3, bootstrap_window_rows=200)
    rng = np.random.default_rng(3)
    for n in range(6):
        shift = 3.0 if n >= 4 else 0.0
        scores = rng.beta(2 + 3 * shift, 2, 200).tolist()
        batch = PredictionBatch("auto", "", 10**18, [f"{n}-{i}" for i in range(200)],
                                labels=[int(s > 0.5) for s in scores], scores={"": scores},
                                features={"x": rng.normal(shift, 1, 200).tolist()})
        processor.accept_logs(Decoded(predictions=[batch]), 0)
        if n == 1:
            assert processor.tick() == 0  # not enough rows yet: nothing monitored
    assert processor.tick() == 6
    profile = processor.monitored[("auto", "")].profile
    assert profile.rows == 600 and profile.task == "classification" and profile.classes == ["0", "1"]
    assert {c.name: c.role for c in profile.columns.values()} == {"prediction": "prediction", "score": "score",
                                                                  "x": "feature"}
    drift = processor.store.results(model="auto", period="analysis", kind="drift")
    alerted = {(r["window"], r["column"]) for r in drift if r["alert"]}
    assert {w for w, _ in alerted} == {4, 5} and ("x" in {c for _, c in alerted})


def test_registered_references_survive_a_restart_and_unknown_models_can_be_refused(tmp_path: Path) -> None:
    processor = Processor(Store(str(tmp_path / "p.db")))
    processor.register(_profile())
    processor.store.close()
    restarted = Processor(Store(str(tmp_path / "p.db")), require_reference=True)
    assert ("m", "1") in restarted.monitored
    decoded = Decoded(predictions=[PredictionBatch("m", "1", 1, ["a"], values=[1.0]),
                                   PredictionBatch("other", "", 1, ["b"], values=[2.0])], accepted=2)
    restarted.accept_logs(decoded, 0)
    assert decoded.rejected_count == 1 and decoded.accepted == 1
    assert restarted.store.counters()["predictions"] == 1


def test_alert_transitions_reach_a_webhook(tmp_path: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from otel_mlmon.processor.export import WebhookSink

    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        processor = _drifting(Processor(Store(str(tmp_path / "p.db")), clock=_late_clock,
                                        webhook=WebhookSink(f"http://127.0.0.1:{server.server_address[1]}/retrain")))
        processor.tick()
        assert processor.webhook is not None and processor.webhook.flush(30)
    finally:
        server.shutdown()
    alerts = [a for message in received for a in message["alerts"]]
    assert alerts and {a["state"] for a in alerts} == {"firing"} and {a["column"] for a in alerts} == {"age"}
    assert processor.counters()["export_failures"] == 0


def test_a_window_that_fails_to_evaluate_is_counted_and_the_others_go_on(tmp_path: Path, monkeypatch) -> None:
    from otel_mlmon.processor import service

    # 10 s after the rows (within their label TTL), the model idle for 5 s: its windows are closed
    processor = Processor(Store(str(tmp_path / "p.db")), clock=lambda: 10**18 + 10**10, idle_timeout_s=5)
    processor.register(_profile())
    for window in range(3):
        _send(processor, window, 0)
    real = service.evaluate_window
    calls = []

    def flaky(profile, data, policy=None):
        calls.append(data.index)
        if data.index == 1:
            raise FloatingPointError("a window the engine cannot take")
        return real(profile, data, policy)

    monkeypatch.setattr(service, "evaluate_window", flaky)
    assert processor.tick() == 2
    assert processor.counters()["evaluation_failures"] == 1
    assert {r["window"] for r in processor.store.results(model="m", period="analysis")} == {0, 2}
    # the same data fails the same way: not retried (nor logged) at every tick
    assert processor.tick() == 0 and calls == [0, 1, 2]
    assert processor.counters()["evaluation_failures"] == 1
    # a label for one of its rows changes the window: it is tried again (and now goes through)
    monkeypatch.setattr(service, "evaluate_window", real)
    processor.accept_logs(Decoded(labels=[LabelBatch("m", "1", 10**18 + 5, ["1-0"], [1.0])]), 10**18 + 5)
    assert processor.tick() == 1
    assert {r["window"] for r in processor.store.results(model="m", period="analysis")} == {0, 1, 2}


# --- the sinks' delivery: off the tick, no redirects, retries, counted failures -------------------------------
class _Endpoint:
    """A loopback HTTP server whose answer the test sets: a status (with an optional Location), or "hold" (read
    the request, never answer until ``release`` is set, then drop the connection)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.answer: tuple[int, str | None] | str = (200, None)
        self.requests: list[tuple[str, str, object]] = []  # method, path, JSON body
        self.holding = threading.Event()
        self.release = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                endpoint.requests.append((self.command, self.path, body))
                answer = endpoint.answer
                if answer == "hold":
                    endpoint.holding.set()
                    endpoint.release.wait(60)
                    self.close_connection = True
                    return
                status, location = answer
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    found = _Endpoint()
    yield found
    found.close()


def test_a_webhook_that_never_answers_does_not_hold_the_tick_and_is_counted(tmp_path: Path, endpoint) -> None:
    from otel_mlmon.processor.export import WebhookSink

    endpoint.answer = "hold"
    sink = WebhookSink(endpoint.url + "/hook", timeout_s=60, attempts=2, backoff_s=0.01)
    processor = _drifting(Processor(Store(str(tmp_path / "p.db")), clock=_late_clock, webhook=sink))
    assert processor.tick() == 2  # returned while the webhook still holds the request unanswered:
    assert endpoint.holding.wait(30) and not endpoint.release.is_set()
    assert sink.failures == 0 and not sink.flush(0)  # the delivery is still under way, off the tick
    endpoint.release.set()  # the webhook drops the connection without an answer, and every retry too
    assert sink.flush(30)
    assert sink.failures == 1 and sink.delivery.delivered == 0
    assert processor.counters()["export_failures"] == 1
    assert [method for method, _, _ in endpoint.requests] == ["POST", "POST"]  # tried twice


def test_a_sink_request_times_out_and_is_retried_then_counted(endpoint) -> None:
    from otel_mlmon.processor.export import Delivery

    endpoint.answer = "hold"
    delivery = Delivery(endpoint.url + "/slow", "test", timeout_s=0.2, attempts=3, backoff_s=0.01)
    assert delivery.submit({"n": 1})
    assert delivery.flush(30)
    assert (delivery.failures, delivery.delivered, len(endpoint.requests)) == (1, 0, 3)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_sinks_follow_no_redirect_and_count_it_as_a_failure(endpoint, status: int) -> None:
    from otel_mlmon.processor.export import WebhookSink

    endpoint.answer = (status, endpoint.url + "/elsewhere")
    sink = WebhookSink(endpoint.url + "/hook", attempts=3, backoff_s=0.01)
    assert sink.send([], 0)
    assert sink.flush(30)
    assert sink.failures == 1 and sink.delivery.delivered == 0
    assert [(m, p) for m, p, _ in endpoint.requests] == [("POST", "/hook")]  # no GET, no retry of a redirect
    alertmanager = AlertmanagerSink(endpoint.url, attempts=3, backoff_s=0.01)
    assert alertmanager.send([], [], 0, force=True) is True  # nothing to send
    endpoint.requests.clear()
    from otel_mlmon.processor.alerts import Transition

    firing = Transition("firing", 0, {"model": "m", "model_version": "1", "kind": "drift", "column": "age",
                                      "metric": "psi", "value": 1.0, "window": 3, "upper_threshold": 0.2})
    assert alertmanager.send([firing], [firing], 0)
    assert alertmanager.flush(30)
    assert alertmanager.failures == 1 and [(m, p) for m, p, _ in endpoint.requests] == [("POST", "/api/v2/alerts")]


def test_alertmanager_gets_firing_alerts_again_and_a_failed_resend_is_retried_at_the_next_tick(
        tmp_path: Path, endpoint) -> None:
    sink = AlertmanagerSink(endpoint.url, resend_s=3600, attempts=1)
    processor = _drifting(Processor(Store(str(tmp_path / "p.db")), clock=_late_clock, alertmanager=sink))
    endpoint.answer = (503, None)
    processor.tick()  # the drift fires; Alertmanager is down
    assert sink.flush(30) and sink.failures == 1

    def posted() -> list[dict]:
        assert sink.flush(30)
        alerts = [alert for _, _, body in endpoint.requests for alert in body]  # type: ignore[union-attr]
        endpoint.requests.clear()
        return alerts

    fired = posted()
    assert fired and {a["labels"]["column"] for a in fired} == {"age"} and all("endsAt" not in a for a in fired)
    endpoint.answer = (200, None)
    processor.tick()  # no new window, and an hour is not over: still resent, since the last resend failed
    resent = posted()
    assert sorted(a["labels"]["metric"] for a in resent) == sorted(a["labels"]["metric"] for a in fired)
    assert sink.failures == 1 and sink.delivery.delivered == 1
    processor.tick()  # delivered: the next resend waits for resend_s
    assert posted() == []
    sink.resend_s = 0
    processor.tick()  # due again: every firing alert once more, Alertmanager keeps them active
    assert sorted(a["labels"]["metric"] for a in posted()) == sorted(a["labels"]["metric"] for a in fired)


def test_close_delivers_what_waits_and_refuses_what_comes_after(endpoint) -> None:
    from otel_mlmon.processor.export import WebhookSink

    sink = WebhookSink(endpoint.url + "/hook")
    for n in range(5):
        assert sink.send([], n)
    sink.close(timeout_s=30)
    assert sink.delivery.delivered == 5 and len(endpoint.requests) == 5
    assert not sink.send([], 6) and sink.failures == 1
