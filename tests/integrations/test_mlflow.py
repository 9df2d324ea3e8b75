"""Models loaded from a real MLflow tracking server with a model registry (``mlflow server``, SQLite backend store,
artifacts served by the server, on loopback) are recorded under their registered name, their registry version
(an alias resolved) and their run id; their prediction ids join labels in a real processor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from otel_mlmon import semconv
from tests.conftest import column, eventually, free_port
from tests.otlp_receiver import OtlpReceiver, attributes

pytestmark = pytest.mark.integration
mlflow = pytest.importorskip("mlflow")

from otel_mlmon.instrumentation.mlflow import (  # noqa: E402 - after the importorskip
    ML_MODEL_RUN_ID,
    MlflowInstrumentor,
    instrument_mlflow_model,
    resolve,
)

FEATURES = ["tenure", "charges", "calls"]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` with a SQLite backend store and a local artifact root, on a loopback port."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed at teardown
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"mlflow server exited: {(root / 'server.log').read_text()[-3000:]}")
        return urllib.request.urlopen(f"{url}/health", timeout=2).read() == b"OK"

    previous = mlflow.get_tracking_uri()
    try:
        eventually(healthy, 240, "mlflow server /health", interval_s=0.25)  # slow to import on a busy machine
        mlflow.set_tracking_uri(url)
        yield url
    finally:
        mlflow.set_tracking_uri(previous)
        os.killpg(server.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        log.close()


def _frame(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"tenure": rng.integers(1, 72, rows).astype(float), "charges": rng.normal(70, 20, rows),
                          "calls": rng.poisson(2, rows).astype(float)})
    score = -0.05 * frame["tenure"] + 0.03 * frame["charges"] + 0.4 * frame["calls"] - 1.0
    return frame, (rng.random(rows) < 1 / (1 + np.exp(-score))).astype(int).to_numpy()


@dataclass
class Registry:
    models: dict[str, Any]  # version -> the sklearn model registered as that version of "churn"
    runs: dict[str, str]  # version -> run id
    test: pd.DataFrame
    truth: np.ndarray


@pytest.fixture(scope="module")
def registry(mlflow_server: str) -> Registry:
    """``churn`` v1 (logistic regression, alias ``champion``) and v2 (a scaled, more regularized one, logged to
    serve ``predict_proba`` through pyfunc), each from its own run."""
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, target = _frame(400, 1)
    test, truth = _frame(40, 2)
    models = {"1": LogisticRegression(max_iter=500).fit(train, target),
              "2": make_pipeline(StandardScaler(), LogisticRegression(C=0.05)).fit(train, target)}
    mlflow.set_experiment("otel-mlmon")
    runs = {}
    for version, model in models.items():
        extra = {"pyfunc_predict_fn": "predict_proba"} if version == "2" else {}
        with mlflow.start_run() as run:
            info = mlflow.sklearn.log_model(model, name="model", registered_model_name="churn",
                                            signature=infer_signature(train, model.predict(train)),
                                            pip_requirements=["scikit-learn"], **extra)  # no inference run
        assert str(info.registered_model_version) == version
        runs[version] = run.info.run_id
    mlflow.MlflowClient().set_registered_model_alias("churn", "champion", "1")
    return Registry(models, runs, test, truth)


@pytest.fixture
def instrumented(providers: Any) -> Iterator[Any]:
    instrumentor = MlflowInstrumentor()
    instrumentor.instrument(**providers.kwargs())
    yield providers
    instrumentor.uninstrument()


def _span_identity(span: Any) -> tuple[str, str, str, str | None]:
    attributes = span.attributes
    return (attributes[semconv.ML_OPERATION_NAME], attributes[semconv.ML_MODEL_NAME],
            attributes[semconv.ML_MODEL_VERSION], attributes.get(ML_MODEL_RUN_ID))


def test_registry_models_are_recorded_by_name_version_and_run_and_their_labels_join(
        registry: Registry, instrumented: Any, processor: Any) -> None:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    providers = instrumented
    # The application's events go to the processor too (the in-memory copy is what the assertions read).
    providers.logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(f"{processor.url}/v1/logs")))
    test = registry.test
    by_version = mlflow.pyfunc.load_model("models:/churn/2")  # serves predict_proba (pyfunc_predict_fn)
    by_alias = mlflow.sklearn.load_model("models:/churn@champion")
    by_run = mlflow.pyfunc.load_model(f"runs:/{registry.runs['1']}/model")

    scores = by_version.predict(test)
    labels_alias = by_alias.predict(test)
    labels_run = by_run.predict(test)
    np.testing.assert_array_equal(scores, registry.models["2"].predict_proba(test))
    np.testing.assert_array_equal(labels_alias, registry.models["1"].predict(test))
    np.testing.assert_array_equal(labels_run, registry.models["1"].predict(test))

    # One span per call, nothing nested, each under the registry's name, version and run.
    spans = providers.finished_spans()
    assert [_span_identity(s) for s in spans] == [
        ("predict_proba", "churn", "2", registry.runs["2"]),
        ("predict", "churn", "1", registry.runs["1"]),
        ("predict", "churn", "1", registry.runs["1"]),
    ]
    assert {s.attributes[semconv.ML_SYSTEM_NAME] for s in spans} == {semconv.SYSTEM_SKLEARN}
    assert all(s.attributes[semconv.ML_BATCH_SIZE] == len(test) for s in spans)

    # Events: the rows, under the same identity, with what the models answered.
    events = providers.events(semconv.EVENT_PREDICTIONS)
    v1 = [e for e in events if e.attributes[semconv.ML_MODEL_VERSION] == "1"]
    v2 = [e for e in events if e.attributes[semconv.ML_MODEL_VERSION] == "2"]
    assert {e.attributes[semconv.ML_MODEL_NAME] for e in events} == {"churn"}
    assert {e.attributes[ML_MODEL_RUN_ID] for e in v1} == {registry.runs["1"]}
    assert {e.attributes[ML_MODEL_RUN_ID] for e in v2} == {registry.runs["2"]}
    assert column(v1, semconv.ML_PREDICTION_LABEL) == [*labels_alias.tolist(), *labels_run.tolist()]
    np.testing.assert_allclose(column(v2, semconv.ML_PREDICTION_SCORE), scores[:, 1])
    rows = {p.attributes[semconv.ML_MODEL_VERSION]: p.value
            for p in providers.metric_points(semconv.ML_PREDICTIONS)}
    assert rows == {"1": 2 * len(test), "2": len(test)}

    # Labels sent later for the recorded ids join in the processor under the same name and version.
    ids_v1, ids_v2 = column(v1, semconv.ML_PREDICTION_ID), column(v2, semconv.ML_PREDICTION_ID)
    assert len(set(ids_v1)) == 2 * len(test) and len(set(ids_v2)) == len(test)
    truth = registry.truth.tolist()
    eventually(lambda: len(processor.joined("churn", "1")) == len(ids_v1) and
               len(processor.joined("churn", "2")) == len(ids_v2), 30, "predictions stored", interval_s=0.1)
    processor.send_labels("churn", "1", ids_v1, truth + truth)
    processor.send_labels("churn", "2", ids_v2, truth)
    expected_v1, expected_v2 = dict(zip(ids_v1, truth + truth)), dict(zip(ids_v2, truth))
    eventually(lambda: processor.joined("churn", "1") == expected_v1 and
               processor.joined("churn", "2") == expected_v2, 30, "every label joined", interval_s=0.1)
    assert processor.processor.counters()["labels_joined"] == 3 * len(test)


def test_one_call_api_on_a_loaded_model_and_a_downloaded_copy(registry: Registry, providers: Any) -> None:
    latest_uri = "models:/churn/latest"
    latest = instrument_mlflow_model(mlflow.pyfunc.load_model(latest_uri), latest_uri, **providers.kwargs())
    # A local copy of version 1: its MLmodel names its run, whose registered model is churn v1.
    local = mlflow.artifacts.download_artifacts("models:/churn/1")
    copy = instrument_mlflow_model(mlflow.sklearn.load_model(local), local, **providers.kwargs())
    latest.predict(registry.test)
    copy.predict(registry.test)
    assert [_span_identity(s) for s in providers.finished_spans()] == [
        ("predict_proba", "churn", "2", registry.runs["2"]),
        ("predict", "churn", "1", registry.runs["1"]),
    ]
    for uri in ("models:/churn@champion", Path(local).as_uri()):
        info = resolve(uri)
        assert (info.name, info.version, info.run_id) == ("churn", "1", registry.runs["1"]), uri


def test_uninstrument_restores_the_loaders(registry: Registry, providers: Any) -> None:
    original = mlflow.pyfunc.load_model
    instrumentor = MlflowInstrumentor()
    instrumentor.instrument(**providers.kwargs())
    assert mlflow.pyfunc.load_model is not original and mlflow.pyfunc.load_model.__wrapped__ is original
    instrumentor.uninstrument()
    assert mlflow.pyfunc.load_model is original
    assert not hasattr(mlflow.sklearn.load_model, "__wrapped__")
    mlflow.pyfunc.load_model("models:/churn/1").predict(registry.test)
    assert providers.finished_spans() == ()


def test_an_unreachable_registry_never_fails_the_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    dead = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}",
                               registry_uri=f"http://127.0.0.1:{free_port()}")
    info = resolve("models:/churn@champion", client=dead)
    assert (info.name, info.version, info.run_id) == ("churn", "", None)
    info = resolve("models:/churn/7", client=dead)
    assert (info.name, info.version) == ("churn", "7")


ZERO_CODE_APP = textwrap.dedent('''
    """An application that knows nothing of otel-mlmon: it serves the champion from the registry."""
    import json, sys
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(sys.argv[1])
    model = mlflow.pyfunc.load_model("models:/churn@champion")
    rows = pd.read_json(sys.argv[2], orient="split").astype("float64")  # JSON turns 19.0 into 19
    print(json.dumps(model.predict(rows).tolist()))
''')


def test_zero_code_through_the_entry_point(registry: Registry, mlflow_server: str, tmp_path: Path) -> None:
    found = [ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name == "mlmon_mlflow"]
    assert found, ("no 'mlmon_mlflow' opentelemetry_instrumentor entry point: add it to pyproject.toml "
                   "(otel_mlmon.instrumentation.mlflow:MlflowInstrumentor) and reinstall otel-mlmon")
    assert found[0].value == "otel_mlmon.instrumentation.mlflow:MlflowInstrumentor"
    app, data = tmp_path / "app.py", tmp_path / "rows.json"
    app.write_text(ZERO_CODE_APP)
    registry.test.to_json(data, orient="split")
    with OtlpReceiver() as receiver:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MLFLOW_"))}
        env = {**clean, "OTEL_SERVICE_NAME": "churn-app", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
               "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_METRICS_EXPORTER": "none",
               "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        run = subprocess.run(
            [sys.executable, "-c", "from opentelemetry.instrumentation.auto_instrumentation import run; run()",
             sys.executable, str(app), mlflow_server, str(data)], env=env, capture_output=True, text=True,
            timeout=240)
        assert run.returncode == 0, run.stderr[-3000:]
        assert json.loads(run.stdout.strip().splitlines()[-1]) == registry.models["1"].predict(registry.test).tolist()
        assert receiver.wait_for(lambda: bool(receiver.spans()) and bool(receiver.logs(semconv.EVENT_PREDICTIONS)))
        spans = [attributes(s) for s in receiver.spans() if s.name.startswith("predict")]
        assert [(s[semconv.ML_MODEL_NAME], s[semconv.ML_MODEL_VERSION], s[ML_MODEL_RUN_ID]) for s in spans] == \
            [("churn", "1", registry.runs["1"])]
        events = [attributes(e) for e in receiver.logs(semconv.EVENT_PREDICTIONS)]
        assert sum(len(e[semconv.ML_PREDICTION_ID]) for e in events) == len(registry.test)
        assert {(e[semconv.ML_MODEL_NAME], e[semconv.ML_MODEL_VERSION]) for e in events} == {("churn", "1")}


def test_a_custom_pyfunc_model_is_recorded_as_its_pyfunc_predict(providers: Any, tmp_path: Path) -> None:
    class Doubler(mlflow.pyfunc.PythonModel):
        def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
            return model_input["x"].to_numpy() * 2.0

    path = tmp_path / "doubler"
    mlflow.pyfunc.save_model(str(path), python_model=Doubler(), pip_requirements=[])
    instrumentor = MlflowInstrumentor()
    instrumentor.instrument(**providers.kwargs())
    try:
        model = mlflow.pyfunc.load_model(str(path))
    finally:
        instrumentor.uninstrument()
    assert model.predict(pd.DataFrame({"x": [1.0, 2.5]})).tolist() == [2.0, 5.0]
    spans = providers.finished_spans()
    assert [(s.name, s.attributes[semconv.ML_MODEL_VERSION]) for s in spans] == [("predict doubler", "")]
    assert ML_MODEL_RUN_ID not in spans[0].attributes  # saved outside any run
    events = providers.events(semconv.EVENT_PREDICTIONS)
    # Its task is unknown (no task= given, nothing to infer it from): predict's outputs are recorded as labels.
    assert column(events, semconv.ML_PREDICTION_LABEL) == [2.0, 5.0]
