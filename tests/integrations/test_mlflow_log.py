"""`mlmon evaluate --mlflow-experiment / --mlflow-run` against a real MLflow tracking server (``mlflow server`` with
a SQLite backend and a local artifact root, started here on loopback)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from otel_mlmon import batch, cli
from tests.batch.conftest import write_files
from tests.conftest import free_port

pytest.importorskip("mlflow")  # the [mlflow] extra
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.integration

@pytest.fixture
def files(tmp_path: Path) -> dict[str, Any]:
    return write_files(tmp_path)


FLAGS = ["--id-column", "id", "--target-column", "target", "--prediction-column", "prediction",
         "--score-column", "score", "--timestamp-column", "ts", "--chunk-size", "1000"]


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` on a free loopback port (its start takes a minute or more on a busy machine)."""
    tmp = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (tmp / "server.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               f"sqlite:///{tmp / 'mlflow.db'}", "--default-artifact-root", str(tmp / "artifacts"),
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail("mlflow server did not start: " + (tmp / "server.log").read_text()[-2000:])
        time.sleep(0.5)
    yield url
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


def _epoch_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def test_a_new_run_gets_window_metrics_and_the_files(files, tmp_path, tracking_uri, capsys) -> None:
    out, report = tmp_path / "results.csv", tmp_path / "report.html"
    assert cli.main(["evaluate", "--reference", str(files["reference"]), "--analysis", str(files["analysis"]),
                     "--labels", str(files["labels"]), *FLAGS, "--model", "churn", "--model-version", "3",
                     "--output", str(out), "--report", str(report), "--mlflow-experiment", "churn monitoring",
                     "--mlflow-tracking-uri", tracking_uri]) == 0
    err = capsys.readouterr().err
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("churn monitoring")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    assert f"MLflow run {run.info.run_id}" in err
    assert run.info.status == "FINISHED"
    results = pd.read_csv(out, keep_default_na=False)
    analysis = results[results.period == "analysis"]
    alerts = int((analysis["alert"].astype(str).str.lower() == "true").sum())
    assert run.data.tags["mlmon.model"] == "churn" and run.data.tags["mlmon.model_version"] == "3"
    assert run.data.tags["mlmon.alerts"] == str(alerts) and alerts > 0
    for key, kind, column, metric in (("drift/age_years/jensen_shannon", "drift", "age years", "jensen_shannon"),
                                      ("drift/plan/chi2", "drift", "plan", "chi2"),
                                      ("performance/accuracy", "performance", "target", "accuracy"),
                                      ("data_quality/income/missing_rate", "data_quality", "income", "missing_rate")):
        rows = analysis[(analysis.kind == kind) & (analysis.column == column) & (analysis.metric == metric)]
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == [int(w) for w in rows["window"]], key
        assert [m.value for m in history] == [float(v) for v in rows["value"]], key  # doubles, exactly
        assert [m.timestamp for m in history] == [_epoch_ms(t) for t in rows["window_end"]], key
    assert "drift/age_years/jensen_shannon" in run.data.metrics and not any(
        k.startswith("reference") for k in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "mlmon")}
    assert artifacts == {"mlmon/results.csv", "mlmon/report.html"}
    downloaded = client.download_artifacts(run.info.run_id, "mlmon/results.csv", str(tmp_path / "down"))
    assert Path(downloaded).read_bytes() == out.read_bytes()


def test_an_existing_run_from_the_environment(files, tmp_path, tracking_uri, monkeypatch) -> None:
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("training")
    run_id = client.create_run(experiment_id, run_name="train churn").info.run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    results = batch.evaluate(files["reference"], files["analysis"], labels=files["labels"], chunk_size=1000,
                             id_column="id", target_column="target", prediction_column="prediction",
                             score_column="score", timestamp_column="ts", mlflow_run=run_id)
    assert results.mlflow_run_id == run_id
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"  # the training job's run: left for its owner to end
    accuracy = sorted(client.get_metric_history(run_id, "performance/accuracy"), key=lambda m: m.step)
    frame = results.frame
    expected = frame[(frame.period == "analysis") & (frame.kind == "performance") & (frame.metric == "accuracy")]
    assert [m.value for m in accuracy] == expected["value"].tolist()
    artifacts = {a.path for a in client.list_artifacts(run_id, "mlmon")}
    assert artifacts == {"mlmon/results.csv", "mlmon/report.html"}  # written for the run
    downloaded = client.download_artifacts(run_id, "mlmon/results.csv", str(tmp_path / "down"))
    results.write(tmp_path / "expected.csv")
    assert Path(downloaded).read_bytes() == (tmp_path / "expected.csv").read_bytes()


def test_an_unknown_run_is_a_clear_error(files, tmp_path, tracking_uri, capsys) -> None:
    code = cli.main(["evaluate", "--reference", str(files["reference"]), "--analysis", str(files["analysis"]),
                     *FLAGS, "--output", str(tmp_path / "r.csv"), "--mlflow-run", "0123456789abcdef0123456789abcdef",
                     "--mlflow-tracking-uri", tracking_uri])
    err = capsys.readouterr().err
    assert code == 1 and f"mlmon: error: MLflow at {tracking_uri}: " in err and "0123456789abcdef" in err
    with pytest.raises(SystemExit) as usage:  # one or the other
        cli.main(["evaluate", "--reference", str(files["reference"]), "--analysis", str(files["analysis"]), *FLAGS,
                  "--output", str(tmp_path / "r.csv"), "--mlflow-run", "x", "--mlflow-experiment", "y"])
    assert usage.value.code == 2
    with pytest.raises(ValueError, match="not both"):
        batch.evaluate(files["reference"], files["analysis"], mlflow_run="x", mlflow_experiment="y")
