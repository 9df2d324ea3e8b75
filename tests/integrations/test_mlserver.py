"""A real ``mlserver start`` (MLServer + mlserver-sklearn from PyPI) serving the scikit-learn model of
examples/mlserver through otel-mlmon's runtime, under ``opentelemetry-instrument``: each V2 REST inference request
is one span, its metrics and one ``ml.predictions`` event under the settings' name and version, its rows carry the
request id as prediction ids, and labels sent later under those ids join in a real processor."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest

from otel_mlmon import semconv
from tests.conftest import eventually, free_port
from tests.otlp_receiver import attributes

pytestmark = pytest.mark.integration
pytest.importorskip("mlserver")
pytest.importorskip("mlserver_sklearn")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mlserver"
REPOSITORY = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(EXAMPLE))
from client import infer  # noqa: E402 - the example's own client
from train import customers  # noqa: E402

sys.path.remove(str(EXAMPLE))


@pytest.fixture
def served(tmp_path: Path, tee: Any) -> Iterator[tuple[str, Any]]:
    """The example folder (settings, model-settings, a model its train.py wrote), served by ``mlserver start``
    under ``opentelemetry-instrument``, exporting OTLP/HTTP to the tee in front of the processor."""
    folder = tmp_path / "churn"
    folder.mkdir()
    for name in ("settings.json", "model-settings.json"):
        shutil.copy(EXAMPLE / name, folder / name)
    subprocess.run([sys.executable, str(EXAMPLE / "train.py"), str(folder)], check=True, capture_output=True,
                   timeout=120)
    http_port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # mlserver may live in a virtualenv of its own
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MLSERVER_"))}
    env = {**clean, "PATH": bin_dir + os.pathsep + clean.get("PATH", ""), "PYTHONPATH": str(REPOSITORY),
           "OTEL_SERVICE_NAME": "churn-mlserver", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
           "OTEL_EXPORTER_OTLP_ENDPOINT": tee.url, "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp",
           "OTEL_LOGS_EXPORTER": "otlp", "OTEL_METRIC_EXPORT_INTERVAL": "500", "OTEL_BSP_SCHEDULE_DELAY": "100",
           "OTEL_BLRP_SCHEDULE_DELAY": "100", "OTEL_PYTHON_MLMON_EVENT_MODE": "per_call",
           "MLSERVER_HTTP_PORT": str(http_port), "MLSERVER_GRPC_PORT": str(free_port()),
           "MLSERVER_METRICS_PORT": str(free_port())}
    log = open(tmp_path / "mlserver.log", "wb")  # noqa: SIM115 - closed at teardown
    server = subprocess.Popen(
        [sys.executable, "-c", "from opentelemetry.instrumentation.auto_instrumentation import run; run()",
         "mlserver", "start", str(folder)], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{http_port}"

    def ready() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"mlserver exited: {(tmp_path / 'mlserver.log').read_text()[-3000:]}")
        return urllib.request.urlopen(f"{url}/v2/models/churn/versions/v3/ready", timeout=2).status == 200

    try:
        eventually(ready, 240, "mlserver model churn v3 ready", interval_s=0.25)  # slow to start on a busy machine
        yield url, joblib.load(folder / "model.joblib")
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # mlserver and its inference worker
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        log.close()


def _infer_without_id(url: str, frame: Any) -> dict[str, Any]:
    body = {"parameters": {"content_type": "pd"},
            "inputs": [{"name": c, "shape": [len(frame)], "datatype": "FP64", "data": frame[c].tolist()}
                       for c in frame.columns]}
    request = urllib.request.Request(f"{url}/v2/models/churn/infer", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_each_v2_request_is_one_span_and_event_and_its_rows_join_labels_by_request_id(
        served: tuple[str, Any], tee: Any, processor: Any) -> None:
    url, model = served
    frame, churned = customers(26, seed=5)
    sizes = [1, 5, 12, 3]
    expected: dict[str, tuple[int, int]] = {}  # prediction id -> (predicted, true) class
    start = 0
    for k, rows in enumerate(sizes):
        part, truth = frame.iloc[start:start + rows], churned[start:start + rows]
        start += rows
        answer = infer(url, f"order-{k}", part)
        assert answer["id"] == f"order-{k}" and answer["model_version"] == "v3"
        predicted = answer["outputs"][0]["data"]
        assert predicted == model.predict(part).tolist()  # the model the example trained, answering over HTTP
        ids = [f"order-{k}"] if rows == 1 else [f"order-{k}-{row}" for row in range(rows)]
        expected.update(zip(ids, zip(predicted, truth.tolist())))
    # A request without id: MLServer gives it one and answers with it.
    part, truth = frame.iloc[start:], churned[start:]
    answer = _infer_without_id(url, part)
    generated = answer["id"]
    assert generated and answer["outputs"][0]["data"] == model.predict(part).tolist()
    expected.update(zip([f"{generated}-{row}" for row in range(len(part))],
                        zip(answer["outputs"][0]["data"], truth.tolist())))
    sizes.append(len(part))
    total = sum(sizes)

    # One ml.predictions event per request (per_call), its ids the request's, its labels the answers.
    events = eventually(lambda: len(tee.events(semconv.EVENT_PREDICTIONS)) >= len(sizes) and
                        tee.events(semconv.EVENT_PREDICTIONS), 60, "one ml.predictions event per request")
    assert len(events) == len(sizes)
    recorded = [attributes(e) for e in events]
    assert {(a[semconv.ML_MODEL_NAME], a[semconv.ML_MODEL_VERSION]) for a in recorded} == {("churn", "v3")}
    recorded_ids = [pid for a in recorded for pid in a[semconv.ML_PREDICTION_ID]]
    assert sorted(recorded_ids) == sorted(expected)
    for a in recorded:
        assert a[semconv.ML_PREDICTION_LABEL] == [expected[pid][0] for pid in a[semconv.ML_PREDICTION_ID]]

    # One span per request, nothing nested, with the request's rows.
    def model_spans() -> list[Any]:
        return [s for s in tee.spans() if attributes(s).get(semconv.ML_MODEL_NAME) == "churn"]

    spans = eventually(lambda: len(model_spans()) >= len(sizes) and model_spans(), 60, "one span per request")
    assert len(spans) == len(sizes)
    assert {s.name for s in spans} == {"predict churn"}
    assert sorted(attributes(s)[semconv.ML_BATCH_SIZE] for s in spans) == sorted(sizes)
    assert {(attributes(s)[semconv.ML_MODEL_VERSION], attributes(s)[semconv.ML_SYSTEM_NAME]) for s in spans} == \
        {("v3", semconv.SYSTEM_SKLEARN)}

    # Metrics: rows counted, one duration per request (cumulative: the newest point of the stream).
    def newest(name: str, value: Any) -> Any:
        points = [p for p in tee.metric_points(name) if attributes(p).get(semconv.ML_MODEL_NAME) == "churn"]
        return value(max(points, key=lambda p: p.time_unix_nano)) if points else None

    eventually(lambda: newest(semconv.ML_PREDICTIONS, lambda p: p.as_int) == total, 30, "ml.predictions = rows")
    eventually(lambda: newest(semconv.ML_OPERATION_DURATION, lambda p: p.count) == len(sizes), 30,
               "one ml.operation.duration per request")

    # The processor stored every row; the truth sent later under the request ids joins each of them.
    eventually(lambda: len(processor.joined("churn", "v3")) == total, 30, "every row stored", interval_s=0.1)
    ids = list(expected)
    processor.send_labels("churn", "v3", ids, [expected[i][1] for i in ids])
    eventually(lambda: processor.joined("churn", "v3") == {i: expected[i][1] for i in ids}, 30,
               "every label joined", interval_s=0.1)
    assert processor.processor.counters()["labels_joined"] == total


def test_request_ids_follow_the_baggage_rule() -> None:
    from mlserver.types import InferenceRequest

    from otel_mlmon.instrumentation.mlserver import request_ids

    def request(rows: int, request_id: str | None) -> Any:
        return InferenceRequest(id=request_id, inputs=[
            {"name": "tenure", "shape": [rows, 1], "datatype": "FP64", "data": [1.0] * rows},
            {"name": "calls", "shape": [rows, 1], "datatype": "FP64", "data": [2.0] * rows}])

    assert request_ids(request(1, "a")) == ["a"]
    assert request_ids(request(3, "a")) == ["a-0", "a-1", "a-2"]
    assert request_ids(request(3, None)) is None
    assert request_ids(InferenceRequest(id="a", inputs=[])) is None


def test_runtime_options_come_from_the_model_settings(tmp_path: Path) -> None:
    import mlserver_sklearn
    from mlserver.settings import ModelSettings

    from otel_mlmon.instrumentation.mlserver import SKLearnModel, _options

    settings_path = tmp_path / "model-settings.json"
    settings_path.write_text(json.dumps({
        "name": "churn", "implementation": "otel_mlmon.instrumentation.mlserver.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "extra": {"otel_mlmon": {"task": "classification",
                                                                         "reference": "profile.json"}}}}))
    settings = ModelSettings.parse_file(str(settings_path))
    assert settings.implementation.__name__ == "SKLearnModel"
    assert issubclass(SKLearnModel, mlserver_sklearn.SKLearnModel)
    assert _options(settings) == {"task": "classification", "reference": str(tmp_path / "profile.json")}
    settings.parameters.extra["otel_mlmon"] = {"tsk": "classification"}
    with pytest.raises(ValueError, match=r"unknown keys \['tsk'\]"):
        _options(settings)
