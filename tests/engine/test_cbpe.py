"""Estimated performance without labels (CBPE): calibration, estimates, sampling errors, thresholds, profiles.

References are independent: scikit-learn's IsotonicRegression and metrics, expected confusion matrices summed by
hand with numpy, and Monte Carlo draws of the labels from the calibrated probabilities.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from otel_mlmon.engine.calibration import Calibration, IsotonicMap
from otel_mlmon.engine.columns import build_profile, window_from_columns
from otel_mlmon.engine.estimate import ScoredRows, estimate
from otel_mlmon.engine.evaluate import LabeledRows, WindowData, evaluate_window, reference_results
from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.engine.windows import WindowSpec

sklearn = pytest.importorskip("sklearn")
from sklearn import metrics as sk  # noqa: E402
from sklearn.isotonic import IsotonicRegression  # noqa: E402

CHUNK = 2000
WEIGHTS = np.array([1.5, -1.0])
CENTERS = np.array([[2.0, 2.0], [-2.0, 2.0], [0.0, -2.5]])  # multiclass: one Gaussian blob per class


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _binary(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    """A fixed logistic model (overconfident scores: calibration matters); the inputs move towards its decision
    boundary by ``shift`` (covariate shift: P(y | x) stays, accuracy falls)."""
    x = rng.normal(0.0, 1.0, (n, 2)) * (1.0 - 0.8 * shift)
    truth = rng.random(n) < _sigmoid(x @ WEIGHTS)
    score = _sigmoid(2.0 * (x @ WEIGHTS))
    return {"x1": x[:, 0], "x2": x[:, 1], "prediction": np.where(score >= 0.5, "yes", "no").astype(object),
            "score": score, "target": np.where(truth, "yes", "no").astype(object)}


def _multiclass(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    """Three Gaussian classes and the model's softmax scores (a tempered Bayes classifier); the inputs are pulled
    towards the point where the classes meet by ``shift``."""
    truth = rng.integers(0, 3, n)
    x = CENTERS[truth] + rng.normal(0.0, 1.6, (n, 2))
    x = x * (1.0 - 0.7 * shift)
    logits = -0.5 * ((x[:, None, :] - CENTERS[None]) ** 2).sum(axis=2) / 1.6**2
    # labels follow the inputs as in the reference (covariate shift): redraw them from the Bayes posterior
    posterior = np.exp(logits - logits.max(axis=1, keepdims=True))
    posterior /= posterior.sum(axis=1, keepdims=True)
    truth = (rng.random(n)[:, None] > np.cumsum(posterior, axis=1)).sum(axis=1)
    scores = np.exp(1.4 * (logits - logits.max(axis=1, keepdims=True)))
    scores /= scores.sum(axis=1, keepdims=True)
    names = np.array(["a", "b", "c"], dtype=object)
    return {"x1": x[:, 0], "x2": x[:, 1], "prediction": names[scores.argmax(axis=1)],
            "score_a": scores[:, 0], "score_b": scores[:, 1], "score_c": scores[:, 2], "target": names[truth]}


BINARY = {"prediction_column": "prediction", "score_columns": {"yes": "score"}, "target_column": "target",
          "categorical": ["prediction"]}
MULTICLASS = {"prediction_column": "prediction", "target_column": "target", "categorical": ["prediction"],
              "score_columns": {"a": "score_a", "b": "score_b", "c": "score_c"}}


def _scores(profile: ReferenceProfile, table: dict[str, np.ndarray]) -> np.ndarray:
    if len(profile.classes) == 2:
        positive = table[profile.score_columns[profile.classes[1]]]
        return np.column_stack([1.0 - positive, positive])
    return np.column_stack([table[profile.score_columns[c]] for c in profile.classes])


def _window(profile: ReferenceProfile, table: dict[str, np.ndarray], index: int, labels: bool = False) -> WindowData:
    """An analysis window as the processor builds it: sketches, every row's prediction and scores, and (when the
    labels have arrived) the joined rows."""
    features = {k: v for k, v in table.items() if k != "target"}
    window = window_from_columns(profile, features, index)
    scores = _scores(profile, table)
    window.scored = ScoredRows([str(v) for v in table["prediction"]], scores.tolist())
    if labels:
        window.labeled = LabeledRows([str(v) for v in table["target"]], [str(v) for v in table["prediction"]],
                                     scores.tolist())
    return window


def _estimated(results: list, metric: str) -> tuple[float, float | None, bool | None]:
    found = {r.metric: r for r in results if r.kind == "estimated_performance"}
    row = found[metric]
    return row.value, row.lower_threshold, row.alert


def _sampling_error(results: list, metric: str) -> float:
    name = f"{metric}_sampling_error"
    return next(r.value for r in results if r.kind == "estimated_performance" and r.metric == name)


def _realized(profile: ReferenceProfile, table: dict[str, np.ndarray]) -> dict[str, float]:
    """scikit-learn's metrics of the window's true labels."""
    y, p = table["target"].astype(str), table["prediction"].astype(str)
    scores = _scores(profile, table)
    if len(profile.classes) == 2:
        positive = profile.classes[1]
        kw = {"pos_label": positive, "average": "binary", "zero_division": 0}
        negative = profile.classes[0]
        return {"accuracy": sk.accuracy_score(y, p), "precision": sk.precision_score(y, p, **kw),
                "recall": sk.recall_score(y, p, **kw), "f1": sk.f1_score(y, p, **kw),
                "specificity": sk.recall_score(y, p, pos_label=negative, zero_division=0),
                "roc_auc": sk.roc_auc_score(y == positive, scores[:, 1])}
    kw = {"average": "macro", "labels": profile.classes, "zero_division": 0}
    matrix = sk.multilabel_confusion_matrix(y, p, labels=profile.classes)
    specificity = np.mean([m[0, 0] / (m[0, 0] + m[0, 1]) for m in matrix])
    return {"accuracy": sk.accuracy_score(y, p), "precision": sk.precision_score(y, p, **kw),
            "recall": sk.recall_score(y, p, **kw), "f1": sk.f1_score(y, p, **kw), "specificity": specificity,
            "roc_auc": sk.roc_auc_score(y, scores, multi_class="ovr", average="macro", labels=profile.classes)}


def _reference(make, rng: np.random.Generator, options: dict, rows: int = 20_000):
    table = make(rng, rows)
    profile, _ = build_profile(table, WindowSpec(chunk_size=CHUNK), model="m", task="classification", **options)
    return profile


# --- isotonic regression ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["ties", "continuous", "increasing", "constant", "decreasing", "one"])
def test_isotonic_map_equals_sklearn(case: str) -> None:
    rng = np.random.default_rng(7)
    n = {"one": 1}.get(case, 3000)
    x = rng.normal(size=n)
    if case == "ties":
        x = np.round(x, 1)
    probability = {"increasing": _sigmoid(3 * x), "constant": np.full(n, 0.3), "decreasing": _sigmoid(-2 * x)}.get(
        case, _sigmoid(2 * x))
    y = (rng.random(n) < probability).astype(float)
    ours = IsotonicMap.fit(x, y)
    theirs = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(x, y)
    query = np.concatenate([x, rng.normal(0, 3, 2000), [x.min() - 10, x.max() + 10]])
    np.testing.assert_allclose(ours(query), theirs.predict(query), rtol=0, atol=1e-12)


# --- estimates against direct computations -------------------------------------------------------------------


def test_binary_estimates_equal_the_expected_confusion_matrix_by_hand() -> None:
    rng = np.random.default_rng(11)
    reference = _binary(rng, 5000)
    calibration = Calibration.fit(["no", "yes"], list(reference["target"]),
                                  np.column_stack([1 - reference["score"], reference["score"]]))
    window = _binary(rng, 3000, shift=0.5)
    found = estimate(calibration, list(window["prediction"]), np.column_stack([1 - window["score"], window["score"]]))
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(reference["score"],
                                                                        reference["target"] == "yes")
    p = iso.predict(window["score"])  # P(y = yes) of each row
    positive = window["prediction"] == "yes"
    tp, fp = p[positive].sum(), (1 - p[positive]).sum()
    fn, tn = p[~positive].sum(), (1 - p[~positive]).sum()
    expected = {"accuracy": (tp + tn) / p.size, "precision": tp / (tp + fp), "recall": tp / (tp + fn),
                "f1": 2 * tp / (2 * tp + fp + fn), "specificity": tn / (tn + fp)}
    # ROC-AUC: the area under the expected ROC curve, rows ranked by raw score (NannyML), ties grouped.
    order = np.argsort(-window["score"], kind="stable")
    s, w = window["score"][order], p[order]
    last = np.r_[np.diff(s) != 0, True]  # one curve point per distinct score
    tps, fps = np.cumsum(w)[last], np.cumsum(1 - w)[last]
    expected["roc_auc"] = sk.auc(np.r_[0, fps] / fps[-1], np.r_[0, tps] / tps[-1])
    for metric, value in expected.items():
        assert found[metric].value == pytest.approx(value, rel=1e-12), metric
    assert found["accuracy"].rows == 3000


def test_multiclass_estimates_equal_the_expected_confusion_matrix_by_hand() -> None:
    rng = np.random.default_rng(12)
    reference, window = _multiclass(rng, 6000), _multiclass(rng, 3000, shift=0.4)
    classes = ["a", "b", "c"]

    def scores(table: dict[str, np.ndarray]) -> np.ndarray:
        return np.column_stack([table[f"score_{c}"] for c in classes])

    calibration = Calibration.fit(classes, list(reference["target"]), scores(reference))
    found = estimate(calibration, list(window["prediction"]), scores(window))
    calibrated = np.column_stack([
        IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(
            reference[f"score_{c}"], reference["target"] == c).predict(window[f"score_{c}"]) for c in classes])
    calibrated /= calibrated.sum(axis=1, keepdims=True)
    matrix = np.array([[calibrated[window["prediction"] == p, t].sum() for p in classes] for t in range(3)])
    tp = np.diag(matrix)
    actual, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    tn = matrix.sum() - actual - predicted + tp
    expected = {"accuracy": tp.sum() / matrix.sum(), "precision": np.mean(tp / predicted),
                "recall": np.mean(tp / actual), "f1": np.mean(2 * tp / (actual + predicted)),
                "specificity": np.mean(tn / (matrix.sum() - actual))}
    aucs = []
    for k, c in enumerate(classes):  # weighted Mann-Whitney, O(n²): pairs of rows, ties count 1/2
        s, p = window[f"score_{c}"], calibrated[:, k]
        above = (s[:, None] > s[None, :]) + 0.5 * (s[:, None] == s[None, :])
        aucs.append(float(p @ above @ (1 - p)) / (p.sum() * (1 - p).sum()))
    expected["roc_auc"] = float(np.mean(aucs))
    for metric, value in expected.items():
        assert found[metric].value == pytest.approx(value, rel=1e-10), metric


def _drawn_metrics(classes: list[str], predicted: np.ndarray, truth: np.ndarray, scores: np.ndarray) -> dict:
    """Realized metrics of many label draws at once (draws x rows of class indices), with numpy: confusion
    counts per draw, ROC-AUC by the Mann-Whitney rank sum (scores have no ties here)."""
    size = len(classes)
    labels = [1] if size == 2 else list(range(size))
    out: dict[str, list[np.ndarray]] = {m: [] for m in ("precision", "recall", "f1", "specificity", "roc_auc")}
    for k in labels:
        is_true, is_pred = truth == k, (predicted == k)[None, :]
        tp = (is_true & is_pred).sum(axis=1)
        fp = (~is_true & is_pred).sum(axis=1)
        fn = (is_true & ~is_pred).sum(axis=1)
        tn = truth.shape[1] - tp - fp - fn
        out["precision"].append(tp / (tp + fp))
        out["recall"].append(tp / (tp + fn))
        out["f1"].append(2 * tp / (2 * tp + fp + fn))
        out["specificity"].append(tn / (tn + fp))
        ranks = np.argsort(np.argsort(scores[:, k])) + 1.0
        positives = is_true.sum(axis=1)
        out["roc_auc"].append((is_true @ ranks - positives * (positives + 1) / 2) / (positives * (truth.shape[1]
                                                                                              - positives)))
    result = {m: np.mean(v, axis=0) for m, v in out.items()}
    result["accuracy"] = (truth == predicted[None, :]).mean(axis=1)
    return result


@pytest.mark.parametrize("make, classes", [(_binary, ["no", "yes"]), (_multiclass, ["a", "b", "c"])])
def test_sampling_error_equals_the_spread_of_realized_metrics_when_labels_follow_the_calibration(make,
                                                                                                  classes) -> None:
    """Draw the window's labels from its calibrated probabilities many times: the realized metrics scatter
    around the estimate by its sampling error."""
    rng = np.random.default_rng(13)
    options = BINARY if len(classes) == 2 else MULTICLASS
    profile = _reference(make, rng, options, rows=8000)
    assert profile.calibration is not None
    window = make(rng, 1500, shift=0.5)
    scores = _scores(profile, window)
    found = estimate(profile.calibration, list(window["prediction"]), scores)
    probabilities = profile.calibration.probabilities(scores)
    uniform = rng.random((1000, len(scores)))
    truth = (uniform[:, :, None] > np.cumsum(probabilities, axis=1)[None]).sum(axis=2)
    predicted = np.array([profile.classes.index(str(v)) for v in window["prediction"]])
    drawn = _drawn_metrics(profile.classes, predicted, truth, scores)
    first = {"target": np.asarray(profile.classes, dtype=object)[truth[0]]}
    for metric, value in _realized(profile, {**window, **first}).items():  # the numpy metrics are sklearn's
        assert drawn[metric][0] == pytest.approx(value, rel=1e-12), metric
    for metric, found_metric in found.items():
        values = drawn[metric]
        assert np.mean(values) == pytest.approx(found_metric.value, abs=found_metric.sampling_error / 3), metric
        assert np.std(values) == pytest.approx(found_metric.sampling_error, rel=0.12), metric


def test_thresholds_spread_matches_the_scatter_of_stationary_estimates() -> None:
    """The profile's per-row spread predicts how much the estimate of a stationary window of n rows varies."""
    rng = np.random.default_rng(14)
    profile = _reference(_binary, rng, BINARY)
    assert profile.calibration is not None
    estimates = {metric: [] for metric in profile.calibration.spread}
    for _ in range(150):
        window = _binary(rng, 500)
        for metric, found in estimate(profile.calibration, list(window["prediction"]),
                                      _scores(profile, window)).items():
            estimates[metric].append(found.value)
    for metric, values in estimates.items():
        assert np.std(values) == pytest.approx(profile.calibration.spread[metric] / math.sqrt(500), rel=0.2), metric


# --- verdicts on seeded data ----------------------------------------------------------------------------------


@pytest.mark.parametrize("make, options", [(_binary, BINARY), (_multiclass, MULTICLASS)])
def test_under_covariate_shift_the_estimate_tracks_realized_performance_within_its_band(make, options) -> None:
    rng = np.random.default_rng(21)
    profile = _reference(make, rng, options)
    shifts = [0.0, 0.0, 0.3, 0.6, 0.8, 1.0]
    accuracy = []
    for index, shift in enumerate(shifts):
        table = make(rng, CHUNK, shift=shift)
        results = evaluate_window(profile, _window(profile, table, index))
        realized = _realized(profile, table)
        for metric, value in realized.items():
            estimated, _, _ = _estimated(results, metric)
            assert abs(estimated - value) <= 3 * _sampling_error(results, metric), (index, metric, estimated, value)
        value, lower, alert = _estimated(results, "accuracy")
        accuracy.append(realized["accuracy"])
        assert lower is not None and alert == (value < lower)
        assert alert == (shift > 0), (index, value, lower, realized["accuracy"])
    assert accuracy[-1] < accuracy[0] - 0.08  # realized accuracy really fell


@pytest.mark.parametrize("make, options", [(_binary, BINARY), (_multiclass, MULTICLASS)])
@pytest.mark.parametrize("windows", [10, 1])
def test_stationary_data_gives_no_estimated_performance_alert(make, options, windows) -> None:
    rng = np.random.default_rng(22 + windows)
    profile = _reference(make, rng, options, rows=CHUNK * windows)
    verdicts = []
    for index in range(12):
        results = evaluate_window(profile, _window(profile, make(rng, 1000), index))
        estimated = [r for r in results if r.kind == "estimated_performance" and not r.metric.endswith("_error")]
        assert {r.metric for r in estimated} == {"accuracy", "precision", "recall", "f1", "specificity", "roc_auc"}
        assert all(0 <= r.lower_threshold <= r.value <= 1 and r.upper_threshold is None for r in estimated)
        verdicts += [r.alert for r in estimated]
    assert verdicts and not any(verdicts)


def test_the_estimates_do_not_depend_on_the_order_of_the_rows() -> None:
    rng = np.random.default_rng(26)
    profile = _reference(_multiclass, rng, MULTICLASS, rows=4000)
    assert profile.calibration is not None
    table = _multiclass(rng, 3000, shift=0.5)
    scores, predicted = _scores(profile, table), list(table["prediction"])
    order = rng.permutation(len(predicted))
    first = estimate(profile.calibration, predicted, scores)
    again = estimate(profile.calibration, [predicted[i] for i in order], scores[order])
    assert {m: (e.value, e.sampling_error) for m, e in first.items()} == \
        {m: (e.value, e.sampling_error) for m, e in again.items()}  # to the last bit


def test_a_small_window_gets_an_estimate_but_no_verdict() -> None:
    rng = np.random.default_rng(23)
    profile = _reference(_binary, rng, BINARY, rows=5000)
    results = evaluate_window(profile, _window(profile, _binary(rng, 20, shift=1.0), 0))
    value, lower, alert = _estimated(results, "accuracy")
    assert math.isfinite(value) and lower is not None and alert is None


def test_no_estimate_without_scores_or_for_regression() -> None:
    rng = np.random.default_rng(24)
    table = _binary(rng, 3000)
    unscored = {k: v for k, v in table.items() if k != "score"}
    profile, _ = build_profile(unscored, WindowSpec(chunk_size=CHUNK), model="m", prediction_column="prediction",
                               target_column="target", categorical=["prediction"])
    assert profile.calibration is None
    assert not [r for r in evaluate_window(profile, window_from_columns(profile, unscored))
                if r.kind == "estimated_performance"]
    regression = {"x": table["x1"], "prediction": table["score"], "target": table["x2"]}
    profile, _ = build_profile(regression, WindowSpec(chunk_size=CHUNK), model="m", task="regression",
                               prediction_column="prediction", target_column="target")
    assert profile.calibration is None


def test_the_reference_period_reports_its_estimates_from_the_profile() -> None:
    rng = np.random.default_rng(25)
    table = _binary(rng, 3 * CHUNK)
    profile, windows = build_profile(table, WindowSpec(chunk_size=CHUNK), model="m", task="classification",
                                     **BINARY)
    from_profile = [r for r in reference_results(profile) if r.kind == "estimated_performance"]
    from_windows = [r for w in windows for r in evaluate_window(profile, w) if r.kind == "estimated_performance"]
    assert len(from_profile) == 3 * 12
    assert [(r.window, r.metric, r.value, r.lower_threshold, r.alert) for r in from_profile] == \
        [(r.window, r.metric, r.value, r.lower_threshold, r.alert) for r in from_windows]


# --- the profile ----------------------------------------------------------------------------------------------


def test_the_calibration_survives_the_profile_file_and_old_profiles_still_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(31)
    profile = _reference(_multiclass, rng, MULTICLASS, rows=4000)
    path = tmp_path / "profile.json"
    profile.save(path)
    loaded = ReferenceProfile.load(path)
    assert loaded.calibration is not None and profile.calibration is not None
    assert loaded.calibration.reference == profile.calibration.reference
    table = _multiclass(rng, 1000, shift=0.5)
    assert evaluate_window(loaded, _window(loaded, table, 0)) == evaluate_window(profile, _window(profile, table, 0))
    document = json.loads(path.read_text())
    del document["calibration"]  # a profile built before CBPE
    old = ReferenceProfile.from_dict(document)
    assert old.calibration is None
    assert not [r for r in evaluate_window(old, _window(old, table, 0)) if r.kind == "estimated_performance"]


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(method="platt"), "calibration.method must be 'isotonic'"),
    (lambda c: c.update(classes=["a", "b"]), "calibration.classes must be the profile's classes"),
    (lambda c: c["maps"].pop("b"), "calibration.maps must have one map for each of the classes"),
    (lambda c: c["maps"]["a"].update(y=list(reversed(c["maps"]["a"]["y"]))), "y be non-decreasing"),
    (lambda c: c["maps"]["a"].update(x=c["maps"]["a"]["x"][:-1]), "the same length"),
    (lambda c: c["maps"]["a"]["x"].__setitem__(0, "zero"), "calibration.maps['a'].x[0] must be"),
    (lambda c: c["spread"].update(f1=None), "calibration.spread['f1']"),
    (lambda c: c.update(rows=0), "calibration.rows must be"),
])
def test_a_corrupt_calibration_is_refused_with_the_field_named(tmp_path: Path, change, message) -> None:
    rng = np.random.default_rng(32)
    document = _reference(_multiclass, rng, MULTICLASS, rows=2000).to_dict()
    document = json.loads(json.dumps(document))
    change(document["calibration"])
    with pytest.raises(ValueError, match="reference profile is invalid") as error:
        ReferenceProfile.from_dict(document)
    assert message in str(error.value) and "\n" not in str(error.value)


# --- batch and stream ----------------------------------------------------------------------------------------


def test_mlmon_evaluate_gives_the_estimates_of_the_engines_windowed_call(tmp_path: Path) -> None:
    """`mlmon evaluate` over files and the windowed call the processor makes (a loaded profile, a window with its
    scored rows and no labels) give the same estimated rows: values and thresholds to 1e-9, the same verdicts."""
    pd = pytest.importorskip("pandas")
    from otel_mlmon import cli

    rng = np.random.default_rng(41)
    reference = _binary(rng, 4 * CHUNK)
    analysis = [_binary(rng, CHUNK, shift=s) for s in (0.0, 0.5, 1.0)]
    pd.DataFrame(reference).to_csv(tmp_path / "reference.csv", index=False)
    frame = pd.concat([pd.DataFrame(t) for t in analysis], ignore_index=True)
    frame.drop(columns="target").to_csv(tmp_path / "analysis.csv", index=False)  # no labels have arrived
    flags = ["--target-column", "target", "--prediction-column", "prediction", "--score-column", "score",
             "--task", "classification"]
    assert cli.main(["reference", "build", "--data", str(tmp_path / "reference.csv"), "--model", "m", *flags,
                     "--chunk-size", str(CHUNK), "--output", str(tmp_path / "profile.json")]) == 0
    assert cli.main(["evaluate", "--reference", str(tmp_path / "profile.json"), "--analysis",
                     str(tmp_path / "analysis.csv"), *flags, "--output", str(tmp_path / "results.csv")]) == 0
    results = pd.read_csv(tmp_path / "results.csv", keep_default_na=False)
    batch = results[(results.kind == "estimated_performance") & (results.period == "analysis")]
    profile = ReferenceProfile.load(tmp_path / "profile.json")
    streamed = [r for index, table in enumerate(analysis)
                for r in evaluate_window(profile, _window(profile, table, index)) if r.kind == "estimated_performance"]
    assert len(batch) == len(streamed) == 3 * 12
    stream = pd.DataFrame([r.as_json() for r in streamed])
    merged = batch.merge(stream, on=["window", "metric"], suffixes=("_batch", "_stream"))
    assert len(merged) == len(batch)
    for column in ("value", "lower_threshold"):
        np.testing.assert_allclose(pd.to_numeric(merged[f"{column}_batch"]).astype(float),
                                   merged[f"{column}_stream"].astype(float), rtol=1e-9, atol=1e-12)
    assert (merged["alert_batch"].astype(str).str.lower()
            == merged["alert_stream"].fillna("").astype(str).str.lower()).all()
    accuracy = merged[merged.metric == "accuracy"].sort_values("window")
    assert accuracy["alert_stream"].tolist() == [False, True, True]
    assert set(results[results.period == "reference"].query("kind == 'estimated_performance'")["window"]) == \
        {0, 1, 2, 3}
