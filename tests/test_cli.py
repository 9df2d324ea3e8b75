from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from otel_mlmon import cli
from otel_mlmon.demo.run import run

ROOT = Path(__file__).resolve().parents[1]


def _table(text: str) -> dict[int, list[str]]:
    """The demo's window lines, by window (a line per print)."""
    lines: dict[int, list[str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[0].isdigit() and parts[1] == "500":
            lines.setdefault(int(parts[0]), []).append(line)
    return lines


def test_demo_runs_the_whole_product_and_writes_a_report(tmp_path) -> None:
    import re

    from sklearn.metrics import accuracy_score

    from otel_mlmon.demo.data import DRIFT_FROM, SHIFTS, WINDOW_ROWS, demo_inputs

    out = io.StringIO()
    report = tmp_path / "demo.html"
    assert run(out, str(report)) == 0
    text = out.getvalue()
    # A legend, and the shifted features named with how they shift.
    for column in ("rows, labels", "predicted", "churned", "accuracy", "drifted"):
        assert re.search(rf"^  {column} +\S", text, re.M), column
    assert f"Drift injected from row {DRIFT_FROM} (window 3 on) into 2 of the 4 features (tenure and support_calls" \
        in text
    for feature, how in SHIFTS.items():
        assert f"  {feature}  " in text and how in text
    # One line per window, predictions and labels together: the shares and the processor's accuracy.
    table = _table(text)
    assert sorted(table) == [0, 1, 2, 3, 4, 5] and all(len(lines) == 1 for lines in table.values())
    model, _, serving = demo_inputs()
    predicted = model.predict(serving[["tenure", "monthly_charges", "support_calls", "plan"]])
    accuracy = {}
    for window, (line,) in table.items():
        part = slice(window * WINDOW_ROWS, (window + 1) * WINDOW_ROWS)
        fields = line.split()
        assert fields[2] == "500"  # every label joined
        assert fields[3] == f"{predicted[part].mean():.0%}" and fields[4] == f"{serving['churned'][part].mean():.0%}"
        accuracy[window] = float(fields[5])
        assert accuracy[window] == pytest.approx(accuracy_score(serving["churned"][part], predicted[part]), abs=5e-4)
        drifted = line.split(maxsplit=7 if fields[6] == "!" else 6)[-1]
        if window < 3:  # before the drift: silent
            assert drifted == "-" and fields[6] != "!"
        else:  # after it: the shifted features (not the others) and the outputs they move; accuracy falls
            assert drifted == "monthly_charges, plan, prediction, score" and fields[6] == "!"
    assert max(accuracy[w] for w in (3, 4, 5)) < min(accuracy[w] for w in (0, 1, 2)) - 0.1
    separator = text.index("drift starts (row 1500): monthly_charges and plan shifted")
    assert text.index(table[2][0]) < separator < text.index(table[3][0])
    assert "^ accuracy fell from" in text and "the model relies on monthly_charges" in text
    # One alert count: the report's (count_alerts), beside the alerts firing now, each listed.
    counts = re.search(r"^(\d+) alerts in the analysis windows, (\d+) firing now$", text, re.M)
    assert counts is not None, text
    shown = re.search(r"id='alert-count'><b>(\d+)</b>", report.read_text())
    assert shown is not None and shown.group(1) == counts.group(1) and f"({counts.group(1)} alerts" in text
    listed = re.findall(r"^  (performance|performance_change|drift|data_quality|estimated_performance) ", text, re.M)
    assert len(listed) == int(counts.group(2)) > 0 and "performance" in listed and "drift" in listed
    assert "joined 3000 labels" in text
    assert report.exists() and report.read_text().count('<svg class="plot"') > 10


def test_demo_drift_costs_accuracy_through_the_feature_the_model_relies_on() -> None:
    """The demo's claim, checked on its data with scikit-learn: accuracy falls after DRIFT_FROM, and undoing the
    monthly_charges shift alone gives it back (the plan's shift is a real change the model takes in its stride)."""
    from sklearn.metrics import accuracy_score

    from otel_mlmon.demo.data import CHARGES_SHIFT, DRIFT_FROM, FEATURES, demo_inputs

    model, _, serving = demo_inputs()
    before, after = serving.iloc[:DRIFT_FROM], serving.iloc[DRIFT_FROM:]
    undone = after.assign(monthly_charges=after["monthly_charges"] - CHARGES_SHIFT)
    base = accuracy_score(before["churned"], model.predict(before[FEATURES]))
    assert accuracy_score(after["churned"], model.predict(after[FEATURES])) < base - 0.1
    assert accuracy_score(undone["churned"], model.predict(undone[FEATURES])) > base - 0.03


def test_demo_stack_says_what_is_missing_and_how_to_get_it(tmp_path, monkeypatch) -> None:
    from otel_mlmon.demo.run import run_stack

    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus, alertmanager or otelcol-mlmon here
    monkeypatch.setenv("MLMON_CACHE_DIR", str(tmp_path / "cache"))  # and no cached Collector build
    monkeypatch.delenv("MLMON_OTELCOL", raising=False)
    out = io.StringIO()
    assert run_stack(out, hold_s=0) == 1
    text = out.getvalue()
    assert "Missing here" in text and "collector/build.sh" in text
    assert "apt-get install prometheus prometheus-alertmanager" in text


@pytest.mark.integration
def test_demo_stack_from_an_installed_wheel_says_it_needs_a_source_checkout(tmp_path) -> None:
    """The wheel has the package, not collector/ or examples/: one line, exit 2 (a usage error), before anything."""
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "wheel"),
                            str(ROOT)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("otel_mlmon-*.whl")
    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
                                str(target), str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]
    assert (target / "otel_mlmon" / "demo" / "stack.py").is_file() and not (target / "collector").exists()
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-m", "otel_mlmon.cli", "demo", "--stack"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path, env=env)
    assert (done.returncode, done.stdout) == (2, ""), done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        "mlmon: error: mlmon demo --stack needs a source checkout of otel-mlmon (the Collector's build, its configs "
        "and the model service are not in the installed package): run it from a clone of the repository; "
        "`mlmon demo` runs from this install"]
    where = subprocess.run([sys.executable, "-c", "import otel_mlmon.demo.stack as s; print(s.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert where.stdout.strip().startswith(str(target))  # the wheel's copy ran, not this checkout's


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


def test_demo_kafka_flags_go_with_stack(capsys) -> None:
    for argv in (["demo", "--kafka"], ["demo", "--stack", "--replicas", "2"], ["demo", "--replicas", "2"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
        assert "--stack" in capsys.readouterr().err
