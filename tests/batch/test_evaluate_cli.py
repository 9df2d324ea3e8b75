"""`mlmon evaluate` and `mlmon reference build` as a user runs them: files in, results out, exit codes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk

from otel_mlmon import cli
from otel_mlmon.engine.results import COLUMNS

FLAGS = ["--id-column", "id", "--target-column", "target", "--prediction-column", "prediction",
         "--score-column", "score", "--timestamp-column", "ts"]


def _alert(frame: pd.DataFrame) -> pd.Series:
    """The alert column as booleans (empty cells, no verdict, as False)."""
    return frame["alert"].astype(str).str.lower() == "true"


def _evaluate(files, tmp_path: Path, *extra: str, output: str = "results.csv") -> tuple[int, Path]:
    out = tmp_path / output
    code = cli.main(["evaluate", "--reference", str(files["reference"]), "--analysis", str(files["analysis"]),
                     "--labels", str(files["labels"]), *FLAGS, "--chunk-size", "1000", "--output", str(out),
                     "--model", "churn", "--model-version", "3", *extra])
    return code, out


def test_results_follow_the_schema_and_find_the_drift(files, tmp_path) -> None:
    code, out = _evaluate(files, tmp_path)
    assert code == 0
    results = pd.read_csv(out, keep_default_na=False)
    assert tuple(results.columns) == COLUMNS
    assert set(results["period"]) == {"reference", "analysis"}
    assert set(results["model"]) == {"churn"} and set(results["model_version"].astype(str)) == {"3"}
    analysis = results[results.period == "analysis"]
    assert sorted(set(analysis["window"])) == [0, 1, 2, 3]  # 3200 rows: three full windows and one of 200
    assert set(analysis[analysis.window == 3]["rows"]) == {200}
    drift = analysis[analysis.kind == "drift"]
    alerted = set(drift[_alert(drift)]["column"])
    assert "age years" in alerted and "score" in alerted  # the shift, and the output it moves
    quiet = drift[drift.window == 0]
    assert (quiet["alert"].astype(str).str.lower() == "false").all()  # the first 1000 analysis rows are stationary
    performance = analysis[(analysis.kind == "performance") & (analysis.window == 0)]
    assert len(performance) == 7 and not _alert(performance).any()
    assert not _alert(drift[drift.column.isin(["income", "visits", "plan"])]).any()


def test_realized_performance_equals_sklearn_on_the_joined_rows(files, tmp_path) -> None:
    code, out = _evaluate(files, tmp_path)
    assert code == 0
    results = pd.read_csv(out, keep_default_na=False)
    analysis = files["analysis_frame"]
    labels = pd.read_csv(files["labels"])
    for window in range(4):
        rows = analysis.iloc[window * 1000:(window + 1) * 1000]
        joined = rows.merge(labels, on="id", suffixes=("_drop", ""))
        performance = results[(results.period == "analysis") & (results.window == window)
                              & (results.kind == "performance")].set_index("metric")
        assert set(performance["labeled_rows"]) == {len(joined)}
        assert set(performance["column"]) == {"target"}
        y, p, s = joined["target"], joined["prediction"], joined["score"]
        assert float(performance.loc["accuracy", "value"]) == pytest.approx(sk.accuracy_score(y, p), abs=1e-12)
        assert float(performance.loc["roc_auc", "value"]) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
        assert float(performance.loc["log_loss", "value"]) == pytest.approx(sk.log_loss(y, s), abs=1e-12)
        assert float(performance.loc["f1", "value"]) == pytest.approx(sk.f1_score(y, p), abs=1e-12)


def test_reference_data_needs_no_id_column(files, tmp_path) -> None:
    """Ids join the analysis rows to late labels; training data that carries its target has none to join."""
    reference = pd.read_parquet(files["reference"]).drop(columns="id")
    reference.to_parquet(tmp_path / "no-ids.parquet")
    code, out = _evaluate(files, tmp_path)
    assert code == 0
    files = {**files, "reference": tmp_path / "no-ids.parquet"}
    code, without = _evaluate(files, tmp_path, output="without-ids.csv")
    assert code == 0
    pd.testing.assert_frame_equal(pd.read_csv(out, keep_default_na=False),
                                  pd.read_csv(without, keep_default_na=False))


def test_json_and_parquet_hold_the_same_numbers_at_full_precision(files, tmp_path) -> None:
    _, csv_path = _evaluate(files, tmp_path)
    _, json_path = _evaluate(files, tmp_path, output="results.json")
    _, parquet_path = _evaluate(files, tmp_path, output="results.parquet")
    from_csv = pd.read_csv(csv_path)
    from_json = pd.DataFrame(json.loads(json_path.read_text())["results"])
    from_parquet = pd.read_parquet(parquet_path)
    assert list(from_json.columns) == list(COLUMNS) == list(from_parquet.columns)
    np.testing.assert_array_equal(from_csv["value"].to_numpy(), from_parquet["value"].to_numpy())
    np.testing.assert_array_equal(from_json["value"].astype(float).to_numpy(), from_parquet["value"].to_numpy())
    text = csv_path.read_text()
    assert any(len(v.split("e")[0].replace("-", "").replace(".", "")) >= 15 for v in text.split(","))


def test_profile_route_gives_the_same_analysis_results(files, tmp_path) -> None:
    profile = tmp_path / "profile.json"
    assert cli.main(["reference", "build", "--data", str(files["reference"]), "--model", "churn", "--version", "3",
                     *FLAGS, "--chunk-size", "1000", "--output", str(profile)]) == 0
    data = json.loads(profile.read_text())
    assert data["schema_version"] == 1 and data["window"] == {"chunk_size": 1000} and data["task"] == "classification"
    assert data["columns"]["plan"]["kind"] == "categorical" and data["columns"]["score"]["role"] == "score"
    reference = pd.read_parquet(files["reference"])
    assert data["reference_performance"]["accuracy"] == pytest.approx(
        sk.accuracy_score(reference["target"], reference["prediction"]), abs=1e-12)
    out = tmp_path / "from_profile.csv"
    assert cli.main(["evaluate", "--reference", str(profile), "--analysis", str(files["analysis"]), "--labels",
                     str(files["labels"]), "--output", str(out)]) == 0
    _, direct = _evaluate(files, tmp_path)
    a = pd.read_csv(out, keep_default_na=False).drop(columns=["model", "model_version"])
    b = pd.read_csv(direct, keep_default_na=False).drop(columns=["model", "model_version"])
    pd.testing.assert_frame_equal(a[a.period == "analysis"].reset_index(drop=True),
                                  b[b.period == "analysis"].reset_index(drop=True))
    pd.testing.assert_frame_equal(a[a.period == "reference"].reset_index(drop=True),
                                  b[b.period == "reference"].reset_index(drop=True), check_dtype=False)


def test_csv_gz_time_windows_and_chunks(files, tmp_path) -> None:
    out = tmp_path / "hours.csv"
    assert cli.main(["evaluate", "--reference", str(files["reference"]), "--analysis", str(files["analysis_csv"]),
                     *FLAGS, "--window", "1d", "--output", str(out)]) == 0
    results = pd.read_csv(out, keep_default_na=False)
    analysis = results[results.period == "analysis"]
    starts = sorted(set(analysis["window_start"]))
    assert starts[0] == "2026-02-01T00:00:00Z" and all(s.endswith("T00:00:00Z") for s in starts)
    assert sorted(set(analysis["window"])) == list(range(len(starts)))
    out = tmp_path / "chunks.csv"
    assert cli.main(["evaluate", "--reference", str(files["reference"]), "--analysis", str(files["analysis"]),
                     *FLAGS, "--chunks", "3", "--output", str(out)]) == 0
    results = pd.read_csv(out)
    for period, total in (("reference", 3000), ("analysis", 3200)):
        sizes = results[results.period == period].groupby("window")["rows"].first()
        assert len(sizes) == 3 and sizes.sum() == total and sizes.max() - sizes.min() <= 1


def test_schema_changes_are_data_quality_alerts(files, tmp_path) -> None:
    frame = pd.read_parquet(files["analysis"]).drop(columns="visits")
    frame["new column"] = 1.0
    changed = tmp_path / "changed.parquet"
    frame.to_parquet(changed)
    out = tmp_path / "out.csv"
    assert cli.main(["evaluate", "--reference", str(files["reference"]), "--analysis", str(changed), *FLAGS,
                     "--chunk-size", "1000", "--output", str(out)]) == 0
    results = pd.read_csv(out, keep_default_na=False)
    analysis = results[results.period == "analysis"]
    missing = analysis[analysis.metric == "column_missing"]
    added = analysis[analysis.metric == "column_added"]
    assert set(missing["column"]) == {"visits"} and _alert(missing).all()
    assert set(added["column"]) == {"new column"} and _alert(added).all()


def test_features_with_spaces_categorical_and_methods(files, tmp_path) -> None:
    out = tmp_path / "out.csv"
    assert cli.main(["evaluate", "--reference", str(files["reference"]), "--analysis", str(files["analysis"]),
                     *FLAGS, "--chunk-size", "1000", "--features", "age years,visits", "--categorical", "visits",
                     "--methods", "psi,hellinger,chi2", "--output", str(out)]) == 0
    results = pd.read_csv(out)
    drift = results[results.kind == "drift"]
    assert set(drift["column"]) == {"age years", "visits", "prediction", "score"}
    assert set(drift[drift.column == "visits"]["metric"]) == {"psi", "hellinger", "chi2"}
    assert set(drift[drift.column == "age years"]["metric"]) == {"psi", "hellinger"}


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--target-column", "nope"], 1, "no column 'nope'"),
    (["--window", "1h"], 2, "--window needs --timestamp-column"),
    (["--output-override", "x.txt"], 2, "must end in .csv, .json or .parquet"),
    (["--reference-override", "/nonexistent.parquet"], 1, "no such file"),
    (["--methods", "energy"], 2, "unknown drift method"),
    (["--score-columns", "a"], 2, "--score-columns takes label=column"),
    (["--thresholds", "psi=lots"], 2, "--thresholds takes method=number"),
])
def test_errors_name_what_to_fix_with_their_exit_codes(files, tmp_path, capsys, args, code, message) -> None:
    output = str(tmp_path / "out.csv")
    reference = str(files["reference"])
    if args[0] == "--output-override":
        output, args = args[1], []
    if args and args[0] == "--reference-override":
        reference, args = args[1], []
    argv = ["evaluate", "--reference", reference, "--analysis", str(files["analysis"]), "--prediction-column",
            "prediction", "--output", output, *args]
    if "--window" not in args:
        argv += ["--chunk-size", "1000"]
    assert cli.main(argv) == code
    assert message in capsys.readouterr().err


def test_corrupt_and_foreign_profiles_are_refused(files, tmp_path, capsys) -> None:
    for content, message in (("{not json", "not readable JSON"),
                             ('{"format": "otel-mlmon/reference-profile", "schema_version": 99}', "schema version 99"),
                             ('{"columns": {}}', "not an otel-mlmon reference profile")):
        profile = tmp_path / "p.json"
        profile.write_text(content)
        code = cli.main(["evaluate", "--reference", str(profile), "--analysis", str(files["analysis"]),
                         "--output", str(tmp_path / "o.csv")])
        assert code == 1 and message in capsys.readouterr().err


@pytest.mark.parametrize("case", ["nested 100k deep", "columns as a list", "chunk_size 10**30"])
def test_malformed_profiles_are_a_one_line_data_error(files, tmp_path, capsys, case) -> None:
    profile = tmp_path / "p.json"
    assert cli.main(["reference", "build", "--data", str(files["reference"]), "--model", "churn", *FLAGS,
                     "--chunk-size", "1000", "--output", str(profile)]) == 0
    capsys.readouterr()
    data = json.loads(profile.read_text())
    if case == "nested 100k deep":
        profile.write_text("[" * 100_000 + "]" * 100_000)
    else:
        data.update({"columns": list(data["columns"])} if case == "columns as a list" else
                    {"window": {"chunk_size": 10**30}})
        profile.write_text(json.dumps(data))
    code = cli.main(["evaluate", "--reference", str(profile), "--analysis", str(files["analysis"]),
                     "--output", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith(f"mlmon: error: reference profile '{profile}'")
    assert {"nested 100k deep": "nested too deeply", "columns as a list": "columns must be an object",
            "chunk_size 10**30": "chunk_size must be a whole number of rows from 1 to 10,000,000"}[case] in err
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--chunk-size", "0"], "--chunk-size must be a whole number of rows from 1 to 10,000,000, got 0"),
    (["--chunk-size", "10000001"], "--chunk-size must be a whole number of rows from 1 to 10,000,000"),
    (["--chunks", "1000001"], "--chunks must be a whole number of windows from 1 to 1,000,000"),
    (["--window", "500ms", "--timestamp-column", "ts"], "--window must be from 1s to 366d, got '500ms'"),
    (["--window", "400d", "--timestamp-column", "ts"], "--window must be from 1s to 366d"),
])
def test_window_bounds_on_the_command_line_are_usage_errors(files, tmp_path, capsys, flags, message) -> None:
    code = cli.main(["evaluate", "--reference", str(files["reference"]), "--analysis", str(files["analysis"]),
                     "--prediction-column", "prediction", "--output", str(tmp_path / "o.csv"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_progress_goes_to_a_terminal_only(capsys, monkeypatch) -> None:
    progress = cli.Progress("reading")
    progress.enabled, progress.started = True, 0.0  # a terminal, and a run that is already long
    progress(1000)
    progress.done()
    assert "reading: 1,000 rows" in capsys.readouterr().err
    quiet = cli.Progress("reading")  # stderr is not a terminal under pytest
    quiet(1000)
    quiet.done()
    assert capsys.readouterr().err == ""


def test_console_script_runs_and_prints_a_summary(files, tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "otel_mlmon.cli", "evaluate", "--reference", str(files["reference"]),
                           "--analysis", str(files["analysis"]), *FLAGS, "--chunk-size", "1000", "--output",
                           str(tmp_path / "r.csv")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "result rows" in done.stderr and "alert(s)" in done.stderr and done.stdout == ""
    assert not math.isnan(pd.read_csv(tmp_path / "r.csv")["rows"].sum())


def test_regression_and_multiclass_models(tmp_path) -> None:
    rng = np.random.default_rng(4)

    def frame(n: int, shift: float) -> pd.DataFrame:
        x = rng.normal(shift, 1, n)
        value = 2 * x + rng.normal(0, 0.5, n)
        scores = rng.dirichlet(np.ones(3), n)
        return pd.DataFrame({"x": x, "truth": value, "estimate": 2 * x, "kind": np.array(list("abc"))[
            scores.argmax(1)], "p_a": scores[:, 0], "p_b": scores[:, 1], "p_c": scores[:, 2],
            "label": rng.choice(list("abc"), n)})

    reference, analysis = frame(2000, 0.0), frame(1000, 0.0)
    reference.to_csv(tmp_path / "ref.csv", index=False)
    analysis.to_csv(tmp_path / "ana.csv", index=False)
    out = tmp_path / "regression.csv"
    assert cli.main(["evaluate", "--reference", str(tmp_path / "ref.csv"), "--analysis", str(tmp_path / "ana.csv"),
                     "--features", "x", "--target-column", "truth", "--prediction-column", "estimate",
                     "--task", "regression", "--chunk-size", "500", "--output", str(out)]) == 0
    results = pd.read_csv(out)
    window = results[(results.period == "analysis") & (results.window == 1) & (results.kind == "performance")]
    values = window.set_index("metric")["value"]
    rows = analysis.iloc[500:1000]
    assert values["mae"] == pytest.approx(sk.mean_absolute_error(rows.truth, rows.estimate), abs=1e-12)
    assert values["r2"] == pytest.approx(sk.r2_score(rows.truth, rows.estimate), abs=1e-12)
    assert set(values.index) == {"mae", "mse", "rmse", "mape", "r2"}

    out = tmp_path / "multiclass.csv"
    assert cli.main(["evaluate", "--reference", str(tmp_path / "ref.csv"), "--analysis", str(tmp_path / "ana.csv"),
                     "--features", "x", "--target-column", "label", "--prediction-column", "kind",
                     "--score-columns", "a=p_a,b=p_b,c=p_c", "--chunk-size", "500", "--thresholds", "chi2=0.5",
                     "--output", str(out)]) == 0
    results = pd.read_csv(out)
    window = results[(results.period == "analysis") & (results.window == 0) & (results.kind == "performance")]
    values = window.set_index("metric")["value"]
    rows = analysis.iloc[:500]
    scores = rows[["p_a", "p_b", "p_c"]].to_numpy()
    assert values["roc_auc"] == pytest.approx(sk.roc_auc_score(rows.label, scores, multi_class="ovr",
                                                               labels=["a", "b", "c"]), abs=1e-12)
    assert values["f1"] == pytest.approx(sk.f1_score(rows.label, rows.kind, average="macro"), abs=1e-12)
    chi2 = results[(results.metric == "chi2")]
    assert set(chi2["upper_threshold"]) == {0.5}
