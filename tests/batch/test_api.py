"""The Python API (otel_mlmon.batch): the same results as `mlmon evaluate`, DataFrames as data, a notebook summary,
and the processor client over a real processor."""

from __future__ import annotations

import asyncio
import threading
import warnings
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from otel_mlmon import batch, cli
from otel_mlmon.batch import LooksLikeIdWarning, Results
from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.engine.results import COLUMNS
from tests.batch.conftest import make_frame

FLAGS = ["--id-column", "id", "--target-column", "target", "--prediction-column", "prediction",
         "--score-column", "score", "--timestamp-column", "ts"]
KEYWORDS = {"id_column": "id", "target_column": "target", "prediction_column": "prediction",
            "score_column": "score", "timestamp_column": "ts"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A reference, an analysis period whose second half is shifted (age), 70 % of its labels; files and frames."""
    tmp = tmp_path_factory.mktemp("api")
    reference = make_frame(2000, 0)
    analysis = pd.concat([make_frame(1000, 1, start="2026-02-01"),
                          make_frame(1000, 2, shift=1.0, start="2026-02-02")], ignore_index=True)
    labels = analysis[["id", "target"]].sample(frac=0.7, random_state=0).reset_index(drop=True)
    analysis = analysis.drop(columns="target")
    out: dict[str, Any] = {"reference_frame": reference, "analysis_frame": analysis, "labels_frame": labels,
                           "tmp": tmp}
    for name, frame in (("reference", reference), ("analysis", analysis)):
        out[name] = tmp / f"{name}.parquet"
        frame.to_parquet(out[name])
    out["labels"] = tmp / "labels.csv"
    labels.to_csv(out["labels"], index=False)
    # What the command line writes, once for the module.
    for suffix in ("csv", "parquet"):
        code = cli.main(["evaluate", "--reference", str(out["reference"]), "--analysis", str(out["analysis"]),
                         "--labels", str(out["labels"]), *FLAGS, "--chunk-size", "500", "--model", "churn",
                         "--model-version", "3", "--output", str(tmp / f"cli.{suffix}")])
        assert code == 0
    return out


def _evaluate(data: dict[str, Any], **extra: Any) -> Results:
    return batch.evaluate(data["reference"], data["analysis"], labels=data["labels"], chunk_size=500, model="churn",
                          model_version="3", **KEYWORDS, **extra)


def test_the_python_api_equals_the_command_lines_output(data) -> None:
    results = _evaluate(data, output=data["tmp"] / "api.csv")
    frame = results.frame
    assert tuple(frame.columns) == COLUMNS
    pd.testing.assert_frame_equal(frame, pd.read_parquet(data["tmp"] / "cli.parquet"))  # types and values
    assert (data["tmp"] / "api.csv").read_bytes() == (data["tmp"] / "cli.csv").read_bytes()  # the same file
    assert {"reference", "analysis"} == set(frame["period"])
    alerts = results.alerts()
    assert len(alerts) and set(alerts["period"]) == {"analysis"} and alerts["alert"].eq(True).all()
    expected = frame[(frame.period == "analysis") & frame["alert"].eq(True)].reset_index(drop=True)
    pd.testing.assert_frame_equal(alerts, expected)
    assert "age years" in set(alerts["column"]) and set(alerts["window"]) <= {2, 3}  # the shifted half
    assert results.alerting and results.profile is not None and results.profile.model == "churn"


def test_dataframes_give_the_results_of_the_files(data) -> None:
    from_files = _evaluate(data).frame
    from_frames = batch.evaluate(data["reference_frame"], data["analysis_frame"], labels=data["labels_frame"],
                                 chunk_size=500, model="churn", model_version="3", **KEYWORDS).frame
    pd.testing.assert_frame_equal(from_frames, from_files)


def test_options_as_lists_and_mappings_equal_the_command_lines_text(data) -> None:
    as_text = batch.evaluate(data["reference"], data["analysis"], chunk_size=500, features="age years,plan",
                             categorical="plan", methods="psi,chi2", thresholds="psi=0.3", **KEYWORDS).frame
    as_values = batch.evaluate(data["reference"], data["analysis"], chunk_size=500, features=["age years", "plan"],
                               categorical=["plan"], methods=["psi", "chi2"], thresholds={"psi": 0.3},
                               **KEYWORDS).frame
    pd.testing.assert_frame_equal(as_text, as_values)
    drift = as_text[as_text.kind == "drift"]
    assert set(drift[drift.column == "age years"]["metric"]) == {"psi"}
    assert set(drift[drift.metric == "psi"]["upper_threshold"]) == {0.3}


def test_build_reference_is_reference_build_and_feeds_evaluate(data, tmp_path) -> None:
    built = batch.build_reference(data["reference"], model="churn", version="3", chunk_size=500,
                                  output=tmp_path / "api.json", **KEYWORDS)
    assert cli.main(["reference", "build", "--data", str(data["reference"]), "--model", "churn", "--version", "3",
                     *FLAGS, "--chunk-size", "500", "--output", str(tmp_path / "cli.json")]) == 0
    assert (tmp_path / "api.json").read_text() == (tmp_path / "cli.json").read_text()
    assert built.profile is not None and len(built.profile.reference_windows) == 4
    # Its rows are the reference period evaluate reports; evaluate takes the Results, the profile or its file.
    direct = _evaluate(data).frame
    reference_rows = built.frame
    assert set(reference_rows["period"]) == {"reference"} and not built.alerting
    pd.testing.assert_frame_equal(reference_rows, direct[direct.period == "reference"].reset_index(drop=True))
    for reference in (built, built.profile, tmp_path / "api.json"):
        frame = batch.evaluate(reference, data["analysis"], labels=data["labels"], **KEYWORDS).frame
        pd.testing.assert_frame_equal(frame, direct)


@pytest.mark.filterwarnings("ignore::otel_mlmon.batch.LooksLikeIdWarning")
def test_usage_and_data_errors_say_what_to_fix(data) -> None:
    with pytest.raises(ValueError, match="--labels needs --id-column"):
        batch.evaluate(data["reference"], data["analysis"], labels=data["labels"], target_column="target",
                       prediction_column="prediction", chunk_size=500)
    with pytest.raises(ValueError, match="give one of --chunk-size, --window or --chunks"):
        batch.evaluate(data["reference"], data["analysis"], chunk_size=500, window="1h", timestamp_column="ts")
    with pytest.raises(ValueError, match=r"must end in \.csv, \.json or \.parquet"):
        batch.evaluate(data["reference"], data["analysis"], output="out.txt")
    with pytest.raises(TypeError, match=r"file path .* or a pandas DataFrame"):
        batch.evaluate(data["reference"], [1, 2, 3])
    with pytest.raises(batch.DataError, match="reference DataFrame: no column 'nope'"):
        batch.evaluate(data["reference_frame"], data["analysis_frame"], prediction_column="nope", chunk_size=500)
    with pytest.raises(batch.DataError, match="analysis DataFrame: no column 'nope'"):
        batch.evaluate(data["reference"], data["analysis_frame"].drop(columns="id"), id_column="nope",
                       chunk_size=500)


def test_a_column_that_looks_like_an_id_is_warned_about(data) -> None:
    with pytest.warns(LooksLikeIdWarning, match=r"column 'id' has a different value on every row \(2,000 rows"):
        batch.build_reference(data["reference"], model="churn", chunk_size=500, target_column="target",
                              prediction_column="prediction")
    with warnings.catch_warnings():
        warnings.simplefilter("error", LooksLikeIdWarning)  # named as the id, or not a default feature: quiet
        batch.build_reference(data["reference"], model="churn", chunk_size=500, **KEYWORDS)
        batch.build_reference(data["reference"], model="churn", chunk_size=500, features=["id", "plan"])


class _Html(HTMLParser):
    """Checks that tags nest and collects the table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.cells: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.open and self.open[-1] == "td":
            self.cells.append(data)


def _parse(text: str) -> _Html:
    parser = _Html()
    parser.feed(text)
    parser.close()
    assert parser.open == []
    return parser


def test_the_notebook_summary_renders_what_alerted(data) -> None:
    results = _evaluate(data)
    page = results._repr_html_()
    parsed = _parse(page)
    alerted = results.alert_rows()
    text = "".join(parsed.text)
    assert f"{len(alerted)} alert(s)" in text and "4 analysis windows (2,000 rows" in text
    assert "age years" in parsed.cells and "churn v3" in text
    assert len(page) < 8000  # a summary, not the report
    assert "No alerts." in "".join(_parse(Results([])._repr_html_()).text)
    hostile = [r.__class__(**{**r.as_dict(), "column": "<script>x</script>"}) for r in alerted[:1]]
    assert "<script>" not in Results(hostile)._repr_html_()
    assert repr(results).startswith("<Results churn v3:") and len(results) == len(results.frame)


def test_the_report_gets_the_windows_distributions_and_confusion_counts(data, tmp_path) -> None:
    """evaluate keeps what the report draws beyond the rows (ReportData); --report and to_html write the same."""
    results = _evaluate(data, report=tmp_path / "evaluate.html")
    path = results.to_html(tmp_path / "report.html")
    text = Path(path).read_text()
    assert text == (tmp_path / "evaluate.html").read_text()
    assert results.to_html() == text  # without a path: the page itself, as pandas' to_html
    assert text.lstrip().lower().startswith("<!doctype html>") and "churn" in text
    assert "age years: reference vs window" in text  # the drifted feature's histogram, alerting windows
    assert "Confusion matrix per window" in text and "need the windows' joined labels" not in text
    frame = results.frame
    accuracy = frame[(frame.period == "analysis") & (frame.kind == "performance") &
                     (frame.metric == "accuracy")].set_index("window")["value"]
    for window, value in accuracy.items():
        assert f"<b>window {window}</b>" in text and f"accuracy {value:.3f}" in text


# --- the processor client ---------------------------------------------------------------------------------
TOKEN = "s3cret-token-for-the-api-test"


@pytest.fixture
def processor(tmp_path) -> Any:
    """A processor with a token, serving its HTTP API on loopback; stopped after the test."""
    from otel_mlmon.processor.security import Security
    from otel_mlmon.processor.server import serve
    from otel_mlmon.processor.service import Processor
    from otel_mlmon.processor.store import Store
    from tests.conftest import eventually, free_port

    running = Processor(Store(str(tmp_path / "p.db")))
    port = free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, daemon=True,
                              args=(serve(running, "127.0.0.1", port, 0.1, stop, security=Security(TOKEN, None)),))
    thread.start()
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    eventually(lambda: urllib.request.urlopen(url + "/healthz", timeout=2).status == 200, 10, "/healthz", 0.05)
    yield running, url
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    running.store.close()


def test_results_from_a_processor_equal_the_batch_results(data, processor, tmp_path) -> None:
    running, url = processor
    built = batch.build_reference(data["reference"], model="churn", version="3", chunk_size=500, **KEYWORDS)
    assert built.profile is not None
    running.register(ReferenceProfile.from_dict(built.profile.to_dict()))  # its reference windows' results
    served = Results.from_processor(url, model="churn", version="3", token=TOKEN)
    assert served.profile is None and len(served) == len(built)
    expected = _evaluate(data).frame
    order = ["window", "column", "kind", "metric"]  # the processor's order
    pd.testing.assert_frame_equal(served.frame.sort_values(order, ignore_index=True),
                                  expected[expected.period == "reference"].sort_values(order, ignore_index=True))
    drift = Results.from_processor(url + "/", model="churn", kind="drift", period="reference", window=1,
                                   token=TOKEN).frame
    assert set(drift["kind"]) == {"drift"} and set(drift["window"]) == {1} and len(drift) > 4
    assert len(Results.from_processor(url, model="another", token=TOKEN)) == 0
    with pytest.raises(ConnectionError, match="401 Unauthorized; give the processor's token"):
        Results.from_processor(url, model="churn")
    with pytest.raises(ConnectionError, match="401"):
        Results.from_processor(url, model="churn", token="wrong")
    from tests.conftest import free_port

    with pytest.raises(ConnectionError, match="not reachable"):
        Results.from_processor(f"http://127.0.0.1:{free_port()}", token=TOKEN, timeout=5)


def test_numeric_class_labels_are_ordered_as_numbers_like_sklearns_classes() -> None:
    """Labels 2 and 10: scikit-learn's positive class is 10 (``classes_`` [2, 10], ``predict_proba[:, 1]``). As
    text, "2" sorted last and ROC AUC, log-loss, precision and recall were the other class's (AUC 0.16 for 0.84)."""
    from sklearn import metrics as sk
    from sklearn.linear_model import LogisticRegression

    from otel_mlmon.engine.columns import sorted_classes

    assert sorted_classes(["10", "2", "1.5"]) == ["1.5", "2", "10"] and sorted_classes(["yes", "no"]) == ["no", "yes"]
    rng = np.random.default_rng(0)
    features = rng.normal(size=(4000, 2))
    target = np.where(features[:, 0] + rng.normal(0, 1, 4000) > 0, 10, 2)
    model = LogisticRegression().fit(features[:2000], target[:2000])

    def frame(rows: slice) -> pd.DataFrame:
        return pd.DataFrame({"x0": features[rows, 0], "y": target[rows], "pred": model.predict(features[rows]),
                             "score": model.predict_proba(features[rows])[:, 1]})

    analysis = frame(slice(2000, 4000))
    results = batch.evaluate(reference=frame(slice(0, 2000)), analysis=analysis, target_column="y",
                             prediction_column="pred", score_column="score", chunk_size=2000)
    rows = results.frame
    got = rows[(rows.period == "analysis") & (rows.kind == "performance")].set_index("metric")["value"]
    assert got["roc_auc"] == pytest.approx(sk.roc_auc_score(analysis.y, analysis.score), abs=1e-12)
    assert got["precision"] == pytest.approx(sk.precision_score(analysis.y, analysis.pred, pos_label=10), abs=1e-12)
    assert got["recall"] == pytest.approx(sk.recall_score(analysis.y, analysis.pred, pos_label=10), abs=1e-12)
