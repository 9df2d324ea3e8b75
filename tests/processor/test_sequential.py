"""Sequential change detection in the processor: labels fed to the engine's monitor as they join (in join order,
orphans included), a performance_change result and alert before the window closes, the same detections as the engine
(and river) fed the same labels, none on a stationary stream, and the same detections across restarts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_mlmon import semconv
from otel_mlmon.engine.columns import build_profile
from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.engine.sequential import DETECTORS, SequentialMonitor
from otel_mlmon.engine.windows import WindowSpec
from otel_mlmon.processor import config
from otel_mlmon.processor.decode import Decoded, LabelBatch, PredictionBatch
from otel_mlmon.processor.export import OtlpExport, WebhookSink
from otel_mlmon.processor.service import Processor
from otel_mlmon.processor.store import Store

SECOND = 1_000_000_000
START = 1_796_000_000 * SECOND
STEP_NS = 10_000_000  # 10 ms between rows
WINDOW_ROWS = 2500
BLOCK = 100  # rows per prediction event and per label event
LAG = 3  # labels come 3 blocks after their predictions


def _profile(task: str = "classification", window_rows: int = WINDOW_ROWS) -> ReferenceProfile:
    rng = np.random.default_rng(11)
    n = 3000
    if task == "regression":
        value = rng.normal(0, 1, n)
        columns = {"x": rng.normal(0, 1, n), "value": value, "target": value + rng.normal(0, 0.5, n)}
        profile, _ = build_profile(columns, WindowSpec(chunk_size=window_rows), model="m", version="1",
                                   task="regression", prediction_column="value", target_column="target")
        return profile
    score = rng.random(n)
    prediction = (score >= 0.5).astype(int)
    target = np.where(rng.random(n) < 0.94, prediction, 1 - prediction)
    profile, _ = build_profile({"x": rng.normal(0, 1, n), "prediction": prediction, "score": score,
                                "target": target}, WindowSpec(chunk_size=window_rows), model="m", version="1",
                               prediction_column="prediction", score_columns={"1": "score"}, target_column="target")
    return profile


def _classification_stream(n: int, change_at: int | None, seed: int) -> tuple[list[int], list[int]]:
    """Predictions and labels: right with probability 0.94, then 0.5 from row ``change_at``."""
    rng = np.random.default_rng(seed)
    predicted = rng.integers(0, 2, n)
    accuracy = np.where(np.arange(n) < (change_at if change_at is not None else n), 0.94, 0.5)
    truth = np.where(rng.random(n) < accuracy, predicted, 1 - predicted)
    return predicted.tolist(), truth.tolist()


def _events(predicted: list, truth: list, orphans_every: int = 7) -> list[Decoded]:
    """Prediction events of ``BLOCK`` rows in time order, their labels ``LAG`` blocks later; the labels of every
    ``orphans_every``-th block arrive before their predictions (orphans that join when the predictions come)."""
    n = len(predicted)
    blocks = range(0, n, BLOCK)
    regression = isinstance(predicted[0], float)

    def predictions(begin: int) -> Decoded:
        rows = range(begin, min(begin + BLOCK, n))
        return Decoded(predictions=[PredictionBatch(
            "m", "1", START + begin * STEP_NS, [f"p{i:06d}" for i in rows],
            labels=None if regression else [predicted[i] for i in rows],
            scores={} if regression else {"": [0.25 + 0.5 * predicted[i] for i in rows]},
            values=[predicted[i] for i in rows] if regression else None)])

    def labels(begin: int) -> Decoded:
        rows = range(begin, min(begin + BLOCK, n))
        return Decoded(labels=[LabelBatch("m", "1", 0, [f"p{i:06d}" for i in rows], [truth[i] for i in rows])])

    early = {b for k, b in enumerate(blocks) if k % orphans_every == orphans_every - 1}
    events: list[Decoded] = []
    for begin in blocks:
        if begin in early:
            events.append(labels(begin))
        events.append(predictions(begin))
        late = begin - LAG * BLOCK
        if late >= 0 and late not in early:
            events.append(labels(late))
    events += [labels(b) for b in blocks[-LAG:] if b not in early]
    return events


def _join_order(events: list[Decoded]) -> list[str]:
    """The order the labels join in: at once when their prediction is stored, else when it arrives (in the
    prediction event's row order) — the store's rule, independently."""
    stored: set[str] = set()
    waiting: dict[str, bool] = {}
    order: list[str] = []
    for event in events:
        for batch in event.predictions:
            stored.update(batch.ids)
            order += [pid for pid in batch.ids if waiting.pop(pid, False)]
        for labels in event.labels:
            for pid in labels.ids:
                if pid in stored:
                    order.append(pid)
                else:
                    waiting[pid] = True
    return order


class Run:
    """A processor fed event by event, ticking after each label event; can be restarted on the same store."""

    def __init__(self, path: Path, profile: ReferenceProfile, detector: str = "adwin", otlp: OtlpExport | None = None,
                 webhook: WebhookSink | None = None):
        self.path, self.detector, self.otlp, self.webhook = str(path), detector, otlp, webhook
        self.now = START
        self.processor = self._start()
        self.processor.register(profile)

    def _start(self) -> Processor:
        return Processor(Store(self.path), clock=lambda: self.now, otlp=self.otlp, sequential_detector=self.detector,
                         allowed_lateness_s=1, idle_timeout_s=3600, sweep_s=3600, webhook=self.webhook)

    def restart(self) -> None:
        self.processor.store.close()
        self.processor.alerts.close()
        self.processor = self._start()

    def send(self, event: Decoded) -> None:
        for batch in event.predictions:
            self.now = max(self.now, batch.time_unix_nano)
        self.processor.accept_logs(event, self.now)
        if event.labels:
            self.processor.tick()

    def changes(self) -> list[dict]:
        return self.processor.store.results(model="m", version="1", kind="performance_change")


def _direct(detector: str, events: list[Decoded], predicted: list, truth: list, task: str = "classification",
            scale: float = 1.0) -> tuple[list[tuple[int, int]], SequentialMonitor]:
    """The engine's monitor fed the same labels in join order: its detections as (label index, row of the
    prediction whose label revealed it), and the monitor."""
    position = {f"p{i:06d}": i for i in range(len(predicted))}
    order = [position[pid] for pid in _join_order(events)]
    monitor = SequentialMonitor(detector, task, scale)
    changes = monitor.update_labels([truth[i] for i in order],
                                    [str(predicted[i]) if task == "classification" else predicted[i] for i in order])
    return [(c.index, order[c.index]) for c in changes], monitor


def _last_per_window(detections: list[tuple[int, int]], window_rows: int = WINDOW_ROWS) -> list[int]:
    """The label index of the last detection in each row window (a result row per window and detector)."""
    last: dict[int, int] = {}
    for index, row in detections:
        last[row // window_rows] = index
    return [last[w] for w in sorted(last)]


def _otlp() -> tuple[OtlpExport, InMemoryLogRecordExporter]:
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    return OtlpExport(MeterProvider([InMemoryMetricReader()], shutdown_on_exit=False), logger_provider), logs


def test_accuracy_drop_alerts_before_its_window_closes_where_the_engine_and_river_detect(tmp_path: Path) -> None:
    change_at = 2 * WINDOW_ROWS  # the first row of window 2
    predicted, truth = _classification_stream(3 * WINDOW_ROWS, change_at, seed=3)
    events = _events(predicted, truth)
    otlp, logs = _otlp()
    run = Run(tmp_path / "s.db", _profile(), otlp=otlp)
    fired_at = None
    for n, event in enumerate(events):
        run.send(event)
        if run.changes():
            fired_at = n
            # at that moment window 2 has not been evaluated: no realized performance for it yet
            assert not run.processor.store.results(model="m", kind="performance", window=2)
            assert run.processor.store.results(model="m", kind="performance", window=0)  # earlier ones closed
            break
    assert fired_at is not None, "no performance_change before window 2 closed"
    change = run.changes()[0]
    assert change["window"] == 2 and change["alert"] is True and change["metric"] == "adwin"
    assert change["column"] == "target" and change["change_metric"] == "accuracy"
    assert change["window_start"] is None  # the window is not complete yet: its bounds are not known
    assert change["before"] > 0.9 and change["after"] < 0.7
    assert change["value"] > change["upper_threshold"] > 0
    labels_after_change = change["change_label"] - change_at
    assert 0 < labels_after_change < 400, labels_after_change
    # the engine fed the same labels in the same (join) order detects at the same label
    for later in events[fired_at + 1:]:
        run.send(later)
    detected = [c["change_label"] for c in sorted(run.changes(), key=lambda c: c["window"])]
    expected, monitor = _direct("adwin", events, predicted, truth)
    assert detected == _last_per_window(expected) and change["change_label"] == expected[0][0]
    assert json.loads(run.processor.store.sequential_state("m", "1")) == monitor.to_dict()  # the same state
    # ... and so does river's ADWIN (river's defaults are the processor's)
    drift = pytest.importorskip("river.drift")
    position = {f"p{i:06d}": i for i in range(len(predicted))}
    river, found = drift.ADWIN(), []
    for n, pid in enumerate(_join_order(events)):
        i = position[pid]
        river.update(float(truth[i] == predicted[i]))
        if river.drift_detected:
            found.append(n)
    assert found[0] == expected[0][0]
    # the ml.alert event: fired, with the change's before/after
    alerts = [dict(r.log_record.attributes) for r in logs.get_finished_logs()
              if r.log_record.event_name == semconv.EVENT_ALERT
              and r.log_record.attributes[semconv.ML_ALERT_KIND] == "performance_change"]
    first = alerts[0]
    assert first[semconv.ML_ALERT_STATE] == "firing"
    assert next(r.log_record.severity_text for r in logs.get_finished_logs()
                if r.log_record.attributes[semconv.ML_ALERT_KIND] == "performance_change") == "ERROR"
    assert first[semconv.ML_ALERT_METRIC] == "adwin" and first[semconv.ML_ALERT_WINDOW] == 2
    assert first[semconv.ML_ALERT_CHANGE_METRIC] == "accuracy"
    assert first[semconv.ML_ALERT_CHANGE_BEFORE] == change["before"]
    assert first[semconv.ML_ALERT_CHANGE_AFTER] == change["after"]
    assert first[semconv.ML_ALERT_CHANGE_LABEL] == change["change_label"]
    assert first[semconv.ML_ALERT_CHANGE_START_LABEL] == change["change_start_label"]


def test_results_survive_the_window_evaluation(tmp_path: Path) -> None:
    predicted, truth = _classification_stream(3 * WINDOW_ROWS, 2 * WINDOW_ROWS, seed=3)
    run = Run(tmp_path / "s.db", _profile())
    for event in _events(predicted, truth):
        run.send(event)
    before = run.changes()
    assert before
    run.now += 7200 * SECOND  # idle: every window closes and is evaluated (with the labels that arrived)
    while run.processor.tick():
        pass
    assert run.processor.store.results(model="m", kind="performance", window=2)
    after = run.changes()
    assert [c["change_label"] for c in after] == [c["change_label"] for c in before]


@pytest.mark.parametrize("detector", DETECTORS)
def test_a_stationary_stream_gives_no_change(tmp_path: Path, detector: str) -> None:
    predicted, truth = _classification_stream(20_000, None, seed=5)
    events = _events(predicted, truth)
    assert _direct(detector, events, predicted, truth)[0] == []
    run = Run(tmp_path / "s.db", _profile(window_rows=5000), detector=detector)
    for event in events:
        run.send(event)
    assert run.changes() == []
    assert [t for t in run.processor.alerts.firing() if t.result["kind"] == "performance_change"] == []
    state = json.loads(run.processor.store.sequential_state("m", "1"))
    assert state["count"] == 20_000 and state["detector"] == detector  # every label fed once


@pytest.mark.parametrize("detector", DETECTORS)
def test_restarts_give_the_detections_of_an_uninterrupted_run(tmp_path: Path, detector: str) -> None:
    predicted, truth = _classification_stream(3 * WINDOW_ROWS, 2 * WINDOW_ROWS, seed=8)
    events = _events(predicted, truth)
    runs = {}
    for name, restarts in (("clean", set()), ("restarted", {7, 40, 41, 90, 150, 200})):
        run = Run(tmp_path / f"{name}.db", _profile(), detector=detector)
        for n, event in enumerate(events):
            if n in restarts:
                run.restart()
            run.send(event)
        runs[name] = ([(c["change_label"], c["window"], c["value"], c["before"], c["after"], c["alert"])
                       for c in run.changes()], run.processor.store.sequential_state("m", "1"))
    assert runs["clean"][0], "the change was found"
    assert runs["restarted"] == runs["clean"]
    expected, monitor = _direct(detector, events, predicted, truth)
    assert sorted(c[0] for c in runs["clean"][0]) == _last_per_window(expected)
    assert json.loads(runs["clean"][1]) == monitor.to_dict()


def test_a_change_reported_before_a_restart_is_not_reported_again(tmp_path: Path) -> None:
    predicted, truth = _classification_stream(3 * WINDOW_ROWS, 2 * WINDOW_ROWS, seed=3)
    otlp, logs = _otlp()
    run = Run(tmp_path / "s.db", _profile(), otlp=otlp)
    for event in _events(predicted, truth):
        run.send(event)
    assert [r for r in logs.get_finished_logs() if r.log_record.attributes[semconv.ML_ALERT_KIND] ==
            "performance_change"]
    run.restart()
    assert run.processor.report_changes(run.now) == 0 and run.processor.store.sequential_changes() == []
    assert "performance_change" in [t.result["kind"] for t in run.processor.alerts.firing()]


def test_regression_errors_are_fed_over_the_reference_mae(tmp_path: Path) -> None:
    profile = _profile("regression")
    mae = profile.reference_performance["mae"]
    rng = np.random.default_rng(4)
    n = 6000
    predicted = rng.normal(0, 1, n).tolist()
    noise = np.where(np.arange(n) < 4000, 0.5, 2.0)  # errors grow fourfold from row 4000
    truth = (np.asarray(predicted) + rng.normal(0, 1, n) * noise).tolist()
    events = _events(predicted, truth)
    run = Run(tmp_path / "s.db", profile)
    for event in events:
        run.send(event)
    state = json.loads(run.processor.store.sequential_state("m", "1"))
    assert state["task"] == "regression" and state["scale"] == mae
    changes = run.changes()
    expected, monitor = _direct("adwin", events, predicted, truth, "regression", mae)
    assert len(expected) > 1  # several in one window: its result row is the last one
    assert [c["change_label"] for c in changes] == _last_per_window(expected) and state == monitor.to_dict()
    assert changes[0]["change_metric"] == "mae" and changes[0]["alert"] is True
    assert changes[0]["after"] > 2 * changes[0]["before"]


def test_time_windows_name_the_window_and_its_bounds(tmp_path: Path) -> None:
    profile = _profile()
    profile.window = WindowSpec(window="20s")  # 2,000 rows of 10 ms a window
    predicted, truth = _classification_stream(6000, 4000, seed=3)
    run = Run(tmp_path / "s.db", profile)
    for event in _events(predicted, truth):
        run.send(event)
    change = run.changes()[0]
    first = START // (20 * SECOND)
    bucket = (START + (change["change_label"]) * STEP_NS) // (20 * SECOND)  # about where the label's row is
    assert change["window"] in (bucket - first, bucket - first - 1)
    row_time = int(np.datetime64(change["event_time"].rstrip("Z"), "ns").astype(np.int64))
    key = row_time // (20 * SECOND)
    assert change["window"] == key - first  # every 20 s window from the first has rows
    assert change["window_start"] == np.datetime_as_string(np.datetime64(key * 20, "s"), unit="s") + "Z"


def test_off_feeds_nothing_and_the_setting_is_validated(tmp_path: Path) -> None:
    predicted, truth = _classification_stream(3 * WINDOW_ROWS, 2 * WINDOW_ROWS, seed=3)
    run = Run(tmp_path / "s.db", _profile(), detector="off")
    for event in _events(predicted, truth):
        run.send(event)
    assert run.changes() == [] and run.processor.store.sequential_state("m", "1") is None
    assert set(config.SEQUENTIAL_DETECTORS) == {*DETECTORS, "off"}
    assert config.load({"sequential_detector": "page_hinkley"}, environ={}).sequential_detector == "page_hinkley"
    assert config.load({}, environ={}).sequential_detector == "adwin"
    with pytest.raises(ValueError, match="sequential_detector"):
        config.load({}, environ={f"{config.ENV_PREFIX}SEQUENTIAL_DETECTOR": "cusum"})


def test_a_change_found_before_a_restart_is_reported_after_it(tmp_path: Path) -> None:
    predicted, truth = _classification_stream(3 * WINDOW_ROWS, 2 * WINDOW_ROWS, seed=3)
    run = Run(tmp_path / "s.db", _profile())
    for event in _events(predicted, truth):  # joined, never ticked: the changes wait in the store
        run.processor.accept_logs(event, run.now)
    waiting = run.processor.store.sequential_changes()
    assert waiting and run.changes() == []
    run.restart()
    assert run.processor.report_changes(run.now) == len(waiting)
    assert {c["change_label"] for c in run.changes()} <= {c["index"] for *_, c in waiting}
    assert "performance_change" in [t.result["kind"] for t in run.processor.alerts.firing()]


def test_the_webhook_gets_the_change(tmp_path: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

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
    predicted, truth = _classification_stream(3 * WINDOW_ROWS, 2 * WINDOW_ROWS, seed=3)
    try:
        run = Run(tmp_path / "s.db", _profile(), webhook=WebhookSink(f"http://127.0.0.1:{server.server_address[1]}/"))
        for event in _events(predicted, truth):
            run.send(event)
        assert run.processor.webhook is not None and run.processor.webhook.flush(30)
    finally:
        server.shutdown()
    changes = [a for message in received for a in message["alerts"] if a["kind"] == "performance_change"]
    first = run.changes()[0]
    assert changes[0]["state"] == "firing" and changes[0]["metric"] == "adwin" and changes[0]["window"] == 2
    assert (changes[0]["before"], changes[0]["after"], changes[0]["change_label"]) == \
        (first["before"], first["after"], first["change_label"])
