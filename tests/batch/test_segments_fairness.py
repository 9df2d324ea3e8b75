"""`mlmon evaluate --segment-by` and `--sensitive-column` on seeded files: per-segment realized metrics equal
scikit-learn on each segment's rows, a shift in one segment is flagged there only, the whole windows are those of a
run without segments, a seeded bias is flagged (and its absence is not), the Python API equals the command line,
and bad combinations are usage errors (exit 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk

from otel_mlmon import batch, cli
from otel_mlmon.engine.results import COLUMNS

FLAGS = ["--id-column", "id", "--target-column", "target", "--prediction-column", "prediction",
         "--score-column", "score", "--chunk-size", "1000"]
KEYWORDS = {"id_column": "id", "target_column": "target", "prediction_column": "prediction",
            "score_column": "score", "chunk_size": 1000}
DEVICES = ("desktop", "mobile", "tablet")


def _devices(seed: int, rows: int, shifted: str | None = None) -> pd.DataFrame:
    """A binary model's rows on three devices; ``shifted``: the device whose feature x moves by 1.5 sd (its score
    and prediction move with it); one row in ten has no label."""
    rng = np.random.default_rng(seed)
    device = rng.choice(np.array(DEVICES), rows, p=[0.5, 0.3, 0.2])
    x = rng.normal(0.0, 1.0, rows) + np.where(device == shifted, 1.5, 0.0)
    z = rng.normal(0.0, 1.0, rows)
    score = 1 / (1 + np.exp(-(1.5 * x + z + np.where(device == "mobile", -0.5, 0.0))))
    target = (rng.random(rows) < score).astype(float)
    target[rng.random(rows) < 0.1] = np.nan
    return pd.DataFrame({"id": [f"{seed}-{i}" for i in range(rows)], "x": x, "z": z, "device": device,
                         "score": score, "prediction": (score > 0.5).astype(int), "target": target})


def _credit(seed: int, rows: int, biased: bool) -> pd.DataFrame:
    """Loans: repayment depends on income alone; the biased model holds group 'b' back at equal income. Half the
    rows have a label (whether the loan was repaid)."""
    rng = np.random.default_rng(seed)
    group = rng.choice(np.array(["a", "b"]), rows, p=[0.6, 0.4])
    income = rng.normal(50.0, 15.0, rows)
    repaid = (income + rng.normal(0.0, 8.0, rows) > 50.0).astype(float)
    penalty = np.where(group == "b", 12.0, 0.0) if biased else 0.0
    approved = (income - penalty + rng.normal(0.0, 8.0, rows) > 50.0).astype(int)
    repaid[rng.random(rows) < 0.5] = np.nan
    return pd.DataFrame({"id": [f"{seed}-{i}" for i in range(rows)], "income": income, "group": group,
                         "prediction": approved, "target": repaid})


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("segments")
    out: dict[str, Any] = {"tmp": tmp, "analysis_frame": pd.concat(
        [_devices(1, 1000), _devices(2, 2000, shifted="tablet")], ignore_index=True)}
    for name, frame in (("reference", _devices(0, 4000)), ("analysis", out["analysis_frame"])):
        out[name] = tmp / f"{name}.parquet"
        frame.to_parquet(out[name])
    for biased in (True, False):
        name = "biased" if biased else "fair"
        out[f"{name}_frame"] = _credit(2, 3000, biased)
        for period, frame in (("reference", _credit(1, 3000, biased)), ("analysis", out[f"{name}_frame"])):
            out[f"{name}_{period}"] = tmp / f"{name}_{period}.parquet"
            frame.to_parquet(out[f"{name}_{period}"])
    return out


def _run(files: dict[str, Any], name: str, *extra: str, reference: str | Path | None = None) -> pd.DataFrame:
    out = files["tmp"] / f"{name}.csv"
    code = cli.main(["evaluate", "--reference", str(reference or files["reference"]), "--analysis",
                     str(files["analysis"]), *FLAGS, "--output", str(out), *extra])
    assert code == 0
    return pd.read_csv(out, keep_default_na=False, dtype={"segment": str})


def _alerts(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame.period == "analysis") & (frame.alert.astype(str) == "true")]


def test_per_segment_realized_performance_equals_sklearn_on_the_segments_rows(files) -> None:
    results = _run(files, "segmented", "--segment-by", "device")
    assert tuple(results.columns) == (*COLUMNS, "segment")
    performance = results[(results.period == "analysis") & (results.kind == "performance")]
    analysis = files["analysis_frame"]
    checked = 0
    for window in range(3):
        rows = analysis.iloc[window * 1000:(window + 1) * 1000]
        for segment in ("", *DEVICES):
            part = rows if segment == "" else rows[rows.device == segment]
            labelled = part[part.target.notna()]
            y, p, s = labelled.target.astype(int), labelled.prediction, labelled.score
            found = performance[(performance.window == window) & (performance.segment == segment)]
            value = dict(zip(found.metric, found.value.astype(float)))
            assert set(found["rows"]) == {len(part)} and set(found["labeled_rows"]) == {len(labelled)}
            assert value["accuracy"] == pytest.approx(sk.accuracy_score(y, p), abs=1e-12)
            assert value["precision"] == pytest.approx(sk.precision_score(y, p), abs=1e-12)
            assert value["recall"] == pytest.approx(sk.recall_score(y, p), abs=1e-12)
            assert value["f1"] == pytest.approx(sk.f1_score(y, p), abs=1e-12)
            assert value["specificity"] == pytest.approx(sk.recall_score(y, p, pos_label=0), abs=1e-12)
            assert value["roc_auc"] == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
            assert value["log_loss"] == pytest.approx(sk.log_loss(y, s), abs=1e-9)
            checked += 1
    assert checked == 12
    # a shift of x in the tablet segment (windows 1 and 2) is flagged there, and in no other segment
    drift = _alerts(results)
    drift = drift[drift.kind == "drift"]
    for window in (1, 2):
        assert "x" in set(drift[(drift.window == window) & (drift.segment == "tablet")].column)
    assert not len(drift[drift.segment.isin(["desktop", "mobile"])])
    assert not len(drift[drift.window == 0])
    assert "z" not in set(drift.column)


def test_the_whole_windows_are_those_of_a_run_without_segments(files) -> None:
    _run(files, "plain")
    _run(files, "segmented_again", "--segment-by", "device")
    plain = (files["tmp"] / "plain.csv").read_text().splitlines()
    segmented = (files["tmp"] / "segmented_again.csv").read_text().splitlines()
    assert plain[0] == ",".join(COLUMNS) and segmented[0] == plain[0] + ",segment"
    whole = [line[:-1] for line in segmented[1:] if line.endswith(",")]  # an empty segment: the whole window
    assert whole == plain[1:]
    assert len(segmented) > 3 * len(plain)


def test_a_saved_segmented_profile_gives_the_same_analysis_rows(files) -> None:
    profile = files["tmp"] / "profile.json"
    code = cli.main(["reference", "build", "--data", str(files["reference"]), "--model", "model", *FLAGS,
                     "--segment-by", "device", "--max-segments", "3", "--output", str(profile)])
    assert code == 0
    from_data = _run(files, "from_data", "--segment-by", "device", "--max-segments", "3")
    from_profile = _run(files, "from_profile", reference=profile)  # the profile brings its segment column
    analysis = [frame[frame.period == "analysis"].reset_index(drop=True) for frame in (from_data, from_profile)]
    pd.testing.assert_frame_equal(analysis[0], analysis[1])
    assert set(from_profile.segment) == {"", *DEVICES}


def _fairness(files: dict[str, Any], name: str, *extra: str) -> pd.DataFrame:
    out = files["tmp"] / f"{name}.csv"
    code = cli.main(["evaluate", "--reference", str(files[f"{name}_reference"]), "--analysis",
                     str(files[f"{name}_analysis"]), "--id-column", "id", "--target-column", "target",
                     "--prediction-column", "prediction", "--task", "classification", "--chunk-size", "1000",
                     "--sensitive-column", "group",
                     "--output", str(out), *extra])
    assert code == 0
    return pd.read_csv(out, keep_default_na=False)


@pytest.mark.parametrize("biased", [True, False])
def test_a_seeded_bias_is_flagged_and_no_bias_is_not(files, biased: bool) -> None:
    name = "biased" if biased else "fair"
    results = _fairness(files, name)
    assert "group" not in set(results[results.kind == "drift"].column)  # the sensitive column is not a feature
    fairness = results[(results.kind == "fairness") & (results.period == "analysis")]
    gaps = fairness[fairness.column == "group"]
    assert set(gaps.metric) == {"demographic_parity_difference", "disparate_impact_ratio",
                                "equal_opportunity_difference"}
    assert len(gaps) == 9  # three windows
    frame = files[f"{name}_frame"]
    for window in range(3):
        rows = frame.iloc[window * 1000:(window + 1) * 1000]
        selection = rows.groupby("group").prediction.mean()
        positives = rows[rows.target == 1]
        opportunity = positives.groupby("group").prediction.mean()
        value = dict(zip(gaps[gaps.window == window].metric, gaps[gaps.window == window].value.astype(float)))
        assert value["demographic_parity_difference"] == pytest.approx(selection.max() - selection.min(), abs=1e-12)
        assert value["disparate_impact_ratio"] == pytest.approx(selection.min() / selection.max(), abs=1e-12)
        assert value["equal_opportunity_difference"] == pytest.approx(opportunity.max() - opportunity.min(),
                                                                      abs=1e-12)
    verdicts = gaps.alert.astype(str)
    assert (verdicts == ("true" if biased else "false")).all()
    assert len(_alerts(fairness)) == (9 if biased else 0)  # the gaps only, not the per-group rates
    assert set(fairness[fairness.column != "group"].column) == {"group=a", "group=b"}


def test_the_python_api_equals_the_command_line(files) -> None:
    _run(files, "both", "--segment-by", "device", "--sensitive-column", "device", "--positive-class", "1")
    results = batch.evaluate(files["reference"], files["analysis"], segment_by="device", sensitive_column="device",
                             positive_class="1", output=files["tmp"] / "api.csv", **KEYWORDS)
    assert (files["tmp"] / "api.csv").read_bytes() == (files["tmp"] / "both.csv").read_bytes()
    frame = results.frame
    assert frame.columns[-1] == "segment" and len(frame) == len(results.rows)
    assert frame.segment.isna().sum() == len(results.whole_rows())
    assert set(frame[frame.kind == "fairness"].column) >= {"device", "device=tablet"}
    assert results.segment_by == "device"
    # the report shows a segment's rows as their own column, and the fairness rows as another kind
    page = Path(results.to_html(files["tmp"] / "report.html")).read_text()
    assert "x [segment tablet]" in page and "demographic_parity_difference" in page and "device=tablet" in page


@pytest.mark.parametrize("flags, message", [
    (["--positive-class", "1"], "--positive-class is the favourable prediction for fairness"),
    (["--max-segments", "4"], "--max-segments needs --segment-by"),
    (["--max-segments", "1", "--segment-by", "device"], "must be a whole number of at least 2"),
    (["--sensitive-column", "device", "--task", "regression"], "is for classifiers"),
    (["--sensitive-column", "device", "--positive-class", "yes"], "'yes' is not a class of the model"),
    (["--segment-by", "device", "--reference-profile"], "the reference profile has no segments"),
])
def test_bad_combinations_are_usage_errors(files, capsys, tmp_path, flags: list[str], message: str) -> None:
    reference = str(files["reference"])
    if "--reference-profile" in flags:
        flags = [f for f in flags if f != "--reference-profile"]
        reference = str(files["tmp"] / "plain-profile.json")
        assert cli.main(["reference", "build", "--data", str(files["reference"]), "--model", "m", *FLAGS,
                         "--output", reference]) == 0
    capsys.readouterr()
    try:
        code = cli.main(["evaluate", "--reference", reference, "--analysis", str(files["analysis"]), *FLAGS,
                         "--output", str(tmp_path / "never.csv"), *flags])
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never.csv").exists()
