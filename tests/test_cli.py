from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from otel_mlmon import cli
from otel_mlmon._demo import run


def test_demo_runs_the_whole_product_and_writes_a_report(tmp_path) -> None:
    out = io.StringIO()
    report = tmp_path / "demo.html"
    assert run(out, str(report)) == 0
    text = out.getvalue()
    final = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit() and parts[1] == "500":
            final[int(parts[0])] = line
    assert sorted(final) == [0, 1, 2, 3, 4, 5]
    for window in (0, 1, 2):  # before the drift: labeled, scored, silent
        assert final[window].split()[2] == "500" and final[window].rstrip().endswith("-")
    for window in (3, 4, 5):  # after it: the shifted inputs and the outputs they move
        assert "tenure" in final[window] and "plan" in final[window] and "score" in final[window]
    assert "joined 3000 labels" in text and "alerts firing: 0" not in text
    assert report.exists() and report.read_text().count('<svg class="plot"') > 10


def test_demo_stack_says_what_is_missing_and_how_to_get_it(tmp_path, monkeypatch) -> None:
    from otel_mlmon._demo import stack

    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus, alertmanager or otelcol-mlmon here
    monkeypatch.setenv("MLMON_CACHE_DIR", str(tmp_path / "cache"))  # and no cached Collector build
    monkeypatch.delenv("MLMON_OTELCOL", raising=False)
    out = io.StringIO()
    assert stack(out, hold_s=0) == 1
    text = out.getvalue()
    assert "Missing here" in text and "collector/build.sh" in text
    assert "apt-get install prometheus prometheus-alertmanager" in text


def test_demo_prepare_writes_the_compose_stacks_inputs(tmp_path) -> None:
    from otel_mlmon.engine.profile import ReferenceProfile

    assert cli.main(["demo", "--prepare", str(tmp_path)]) == 0
    profile = ReferenceProfile.load(str(tmp_path / "reference.json"))
    assert profile.model == "churn" and profile.classes == ["0", "1"]
    serving = (tmp_path / "serving.csv").read_text().splitlines()
    assert serving[0].split(",") == ["tenure", "monthly_charges", "support_calls", "plan", "churned", "id"]
    assert len(serving) == 3001 and (tmp_path / "model.pkl").stat().st_size > 0


def test_cli_without_command_is_a_usage_error(capsys) -> None:
    assert cli.main([]) == 2
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0


def test_replay_to_a_model_service_that_is_down_is_a_clear_error(tmp_path, capsys) -> None:
    from tests.conftest import free_port

    data = tmp_path / "rows.csv"
    data.write_text("id,x,y\na,1.0,0\nb,2.0,1\n")
    from otel_mlmon.instrumentation._telemetry import _live

    dead = f"http://127.0.0.1:{free_port()}"
    live = set(_live)
    code = cli.main(["replay", "--analysis", str(data), "--model", "m", "--id-column", "id", "--target-column", "y",
                     "--service", dead, "--endpoint", dead])
    assert code == 1
    assert f"the model service at {dead} is not reachable" in capsys.readouterr().err
    assert set(_live) == live  # nothing left behind to flush into the dead endpoint at exit
    assert cli.main(["replay", "--analysis", str(data), "--model", "m", "--id-column", "id", "--service", dead,
                     "--model-file", "x.pkl", "--endpoint", dead]) == 2  # the service holds the model


# --- mlmon evaluate in CI: --fail-on-alert, usage errors, the id-column warning -------------------------------
BATCH_FLAGS = ["--target-column", "target", "--prediction-column", "prediction", "--score-column", "score",
               "--timestamp-column", "ts", "--chunk-size", "500"]


@pytest.fixture(scope="module")
def batch_files(tmp_path_factory):
    """A reference, a stationary analysis file (no alert) and a shifted one (alerts), with a labels file."""
    from tests.batch.conftest import make_frame

    tmp = tmp_path_factory.mktemp("cli")
    paths = {name: tmp / f"{name}.parquet" for name in ("reference", "stationary", "shifted")}
    make_frame(1000, 0).to_parquet(paths["reference"])
    make_frame(1000, 1, start="2026-02-01").to_parquet(paths["stationary"])
    shifted = make_frame(1000, 5, shift=1.0, start="2026-02-01")
    shifted.to_parquet(paths["shifted"])
    paths["labels"] = tmp / "labels.csv"
    shifted[["id", "target"]].to_csv(paths["labels"], index=False)
    return paths


def _evaluate(batch_files, analysis: str, out, *extra: str) -> int:
    return cli.main(["evaluate", "--reference", str(batch_files["reference"]), "--analysis",
                     str(batch_files[analysis]), "--id-column", "id", *BATCH_FLAGS, "--output", str(out), *extra])


def test_fail_on_alert_exits_3_when_an_analysis_window_alerts(batch_files, tmp_path, capsys) -> None:
    assert _evaluate(batch_files, "stationary", tmp_path / "quiet.csv", "--fail-on-alert") == 0
    assert "0 alert(s) in the analysis period" in capsys.readouterr().err
    assert _evaluate(batch_files, "shifted", tmp_path / "loud.csv") == 0  # without the flag: alerts are results
    assert _evaluate(batch_files, "shifted", tmp_path / "gated.csv", "--fail-on-alert") == 3
    err = capsys.readouterr().err
    assert "alert(s) in analysis window(s) 0, 1 (" in err and "drift age years" in err and "exit status 3" in err
    assert (tmp_path / "gated.csv").read_bytes() == (tmp_path / "loud.csv").read_bytes()  # still written


def test_fail_on_alert_is_the_processes_exit_status(batch_files, tmp_path) -> None:
    """What a CI step sees: the process's status (python -m otel_mlmon.cli, as the `mlmon` script)."""
    done = subprocess.run([sys.executable, "-m", "otel_mlmon.cli", "evaluate", "--reference",
                           str(batch_files["reference"]), "--analysis", str(batch_files["shifted"]), "--id-column",
                           "id", *BATCH_FLAGS, "--output", str(tmp_path / "r.csv"), "--fail-on-alert"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 3, done.stderr
    assert "--fail-on-alert" in done.stderr and (tmp_path / "r.csv").exists()


def test_labels_without_an_id_column_is_a_usage_error(batch_files, tmp_path, capsys) -> None:
    code = cli.main(["evaluate", "--reference", str(batch_files["reference"]), "--analysis",
                     str(batch_files["shifted"]), "--labels", str(batch_files["labels"]), *BATCH_FLAGS,
                     "--output", str(tmp_path / "o.csv")])
    assert code == 2 and "--labels needs --id-column" in capsys.readouterr().err
    code = cli.main(["replay", "--analysis", str(batch_files["shifted"]), "--labels", str(batch_files["labels"]),
                     "--model", "m", "--target-column", "target", "--endpoint", "http://127.0.0.1:9"])
    assert code == 2 and "--labels needs --id-column" in capsys.readouterr().err


def test_reference_build_warns_about_a_column_that_looks_like_an_id(batch_files, tmp_path, capsys) -> None:
    out = tmp_path / "profile.json"
    assert cli.main(["reference", "build", "--data", str(batch_files["reference"]), "--model", "churn",
                     *BATCH_FLAGS, "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "mlmon: warning: " in err and "column 'id' has a different value on every row (1,000 rows read)" in err
    assert "--id-column 'id'" in err and err.count("mlmon: warning:") == 1  # not ts (a time), not the floats
    assert cli.main(["reference", "build", "--data", str(batch_files["reference"]), "--model", "churn",
                     "--id-column", "id", *BATCH_FLAGS, "--output", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_the_ci_example_uses_flags_the_command_accepts() -> None:
    """examples/ci/github-actions.yml: valid YAML, and its `mlmon evaluate` line parses with --fail-on-alert."""
    import shlex

    import yaml

    workflow = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples/ci/github-actions.yml").read_text())
    scripts = [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]
    [script] = [s for s in scripts if "mlmon evaluate" in s]
    command = script.replace("\\\n", " ").split("mlmon evaluate", 1)[1].splitlines()[0]
    args = cli._parser().parse_args(["evaluate", *shlex.split(command)])
    assert args.fail_on_alert and args.window == "1h" and args.reference.endswith(".json")
    assert "exit \"$status\"" in script and '"$status" -eq 3' in script
