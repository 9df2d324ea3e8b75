"""The examples run as a user runs them (examples/model_service.py runs in the stack tests, tests/stack)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(argv: list[str], tmp_path: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**clean, **env})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout + done.stderr


def test_manual_instrumentation(tmp_path: Path) -> None:
    out = _run([sys.executable, str(EXAMPLES / "manual_instrumentation.py")], tmp_path)
    for name in ('"name": "predict_proba iris"', '"name": "ml.operation.duration"', '"name": "ml.feature.value"',
                 '"name": "ml.prediction.score"', '"ml.model.name": "iris"'):
        assert name in out, name


def test_zero_code(tmp_path: Path) -> None:
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    out = _run([str(instrument), sys.executable, str(EXAMPLES / "zero_code_app.py")], tmp_path,
               OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="console", OTEL_LOGS_EXPORTER="console")
    assert '"name": "predict_proba cancer"' in out and '"name": "ml.feature.value"' in out


def test_batch_evaluate(tmp_path: Path) -> None:
    out = _run([sys.executable, str(EXAMPLES / "batch_evaluate.py"), str(tmp_path)], tmp_path)
    windows = [line for line in out.splitlines() if line.startswith("window ")]
    assert len(windows) == 6
    assert all(line.endswith("drift in nothing") for line in windows[:3])  # drift starts at row 3000
    assert all("monthly_charges" in line and "y_score" in line for line in windows[3:])
    assert (tmp_path / "report.html").stat().st_size > 0


def test_zero_code_ids_joins_the_callers_ids(tmp_path: Path) -> None:
    """examples/zero_code_ids.py under opentelemetry-instrument, OTLP to a receiver: the ids in the ml.predictions
    events are the order ids the callers sent, and the id column is not sketched as a feature."""
    import json
    import signal
    import urllib.request

    from otel_mlmon import semconv
    from tests.otlp_receiver import OtlpReceiver, attributes

    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    rows = [{"order_id": f"o-{i}", "mean radius": 10.0 + i, "mean texture": 20.0, "mean smoothness": 0.1,
             "worst concavity": 0.2 * i} for i in range(5)]
    with OtlpReceiver() as receiver:
        env = {**clean, "PYTHONPATH": str(EXAMPLES.parent), "OTEL_PYTHON_MLMON_ID_COLUMN": "order_id",
               "OTEL_SERVICE_NAME": "zero-code-ids", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
               "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_TRACES_EXPORTER": "otlp",
               "OTEL_METRICS_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "otlp"}
        service = subprocess.Popen([str(instrument), sys.executable, str(EXAMPLES / "zero_code_ids.py"), "--port",
                                    "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                   env=env)
        try:
            url = service.stdout.readline().split()[-1]  # type: ignore[union-attr]
            answers = []
            for batch in (rows[:3], rows[3:4], rows[4:]):  # a 3-row call and two one-row calls
                request = urllib.request.Request(f"{url}/predict", data=json.dumps({"rows": batch}).encode(),
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=30) as response:
                    answers.append(json.loads(response.read()))
        finally:
            service.send_signal(signal.SIGTERM)
            _, stderr = service.communicate(timeout=60)
        assert service.returncode == 0, stderr[-2000:]
        assert [i for answer in answers for i in answer["ids"]] == [r["order_id"] for r in rows]
        assert receiver.wait_for(lambda: sum(len(attributes(e)[semconv.ML_PREDICTION_ID])
                                             for e in receiver.logs(semconv.EVENT_PREDICTIONS)) >= len(rows))
        events = receiver.logs(semconv.EVENT_PREDICTIONS)
        ids = [i for e in events for i in attributes(e)[semconv.ML_PREDICTION_ID]]
        assert sorted(ids) == sorted(r["order_id"] for r in rows)
        assert {attributes(e)[semconv.ML_MODEL_NAME] for e in events} == {"fraud"}
        labels = {i: label for e in events for i, label in zip(attributes(e)[semconv.ML_PREDICTION_ID],
                                                               attributes(e)[semconv.ML_PREDICTION_LABEL])}
        assert [labels[r["order_id"]] for r in rows] == [p for answer in answers for p in answer["predictions"]]
        assert receiver.wait_for(lambda: receiver.metrics(semconv.ML_FEATURE_VALUE))
        sketched = {attributes(p)[semconv.ML_FEATURE_NAME] for name in (semconv.ML_FEATURE_VALUE,
                                                                        semconv.ML_FEATURE_CATEGORY_COUNT)
                    for m in receiver.metrics(name)
                    for p in (m.histogram.data_points if m.HasField("histogram") else m.sum.data_points)}
        assert sketched == {"mean radius", "mean texture", "mean smoothness", "worst concavity"}
