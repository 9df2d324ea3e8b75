"""A zero-code application (no feature capture, no ``reference=``) streaming to the processor: feature drift and
data quality per time window come from its feature sketches alone, with `mlmon evaluate --window`'s verdicts on
the same rows; its ids come from an input column, so late labels join and realized accuracy equals sklearn's."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score

from otel_mlmon import cli
from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.processor.server import serve
from otel_mlmon.processor.service import Processor
from otel_mlmon.processor.store import Store
from tests.conftest import eventually, free_port

pytestmark = pytest.mark.integration
SECOND = 1_000_000_000
WINDOW = "2s"
FEATURES = ["age", "income", "plan"]

APP = textwrap.dedent('''
    """A model service loop that knows nothing of otel-mlmon: calls of 20 rows for a few seconds, age drifting in
    the second half; it writes what it served (ids, features, answers, the truth to come) for the test."""
    import sys, time
    import numpy as np, pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    def rows(n, shift, rng):
        frame = pd.DataFrame({"age": rng.normal(40 + 12 * shift, 10, n), "income": rng.lognormal(10, 0.5, n),
                              "plan": rng.choice(["basic", "gold", "platinum"], n, p=[0.6, 0.3, 0.1])})
        frame.loc[rng.random(n) < 0.05, "income"] = np.nan
        return frame

    def truth(frame, rng):
        return (rng.random(len(frame)) < 1 / (1 + np.exp(-(frame["age"].to_numpy() - 42) / 6))).astype(int)

    rng = np.random.default_rng(7)
    train = rows(3000, 0.0, rng)
    numeric = make_pipeline(SimpleImputer(), StandardScaler())
    select = ColumnTransformer([("n", numeric, ["age", "income"]),
                                ("c", OneHotEncoder(handle_unknown="ignore"), ["plan"])], remainder="drop")
    model = make_pipeline(select, LogisticRegression(max_iter=500)).fit(train, truth(train, rng))
    model.otel_mlmon_name, model.otel_mlmon_version = "sketchy", "1"
    served, n, start, seconds = [], 0, time.time(), float(sys.argv[2])
    while time.time() - start < seconds:
        frame = rows(20, 1.0 if time.time() - start > seconds / 2 else 0.0, rng)
        frame.insert(0, "order_id", [f"o{n + i:07d}" for i in range(20)])
        n += 20
        frame["prediction"] = model.predict(frame)  # the id column goes in too: the pipeline ignores it
        frame["target"] = truth(frame, rng)
        served.append(frame)
        time.sleep(0.004)
    pd.concat(served).to_parquet(sys.argv[1])
''')


@pytest.fixture
def processor_url(tmp_path: Path):
    processor = Processor(Store(str(tmp_path / "processor.db")), allowed_lateness_s=1.5, idle_timeout_s=2.0,
                          bootstrap_windows=0)
    port = free_port()
    loop, stop = asyncio.new_event_loop(), asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(processor, "127.0.0.1", port, 0.1, stop),),
                              daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    eventually(lambda: urllib.request.urlopen(f"{url}/healthz", timeout=1).read(), 10, "/healthz", interval_s=0.05)
    yield processor, url
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


def test_sketch_only_zero_code_app_gets_feature_drift_quality_and_accuracy(processor_url, tmp_path: Path) -> None:
    processor, url = processor_url
    # The reference: the app's own distribution, with times so that the profile windows by 2 s.
    rng = np.random.default_rng(1)
    reference = pd.DataFrame({"age": rng.normal(40, 10, 6000), "income": rng.lognormal(10, 0.5, 6000),
                              "plan": rng.choice(["basic", "gold", "platinum"], 6000, p=[0.6, 0.3, 0.1])})
    reference.loc[rng.random(6000) < 0.05, "income"] = np.nan
    reference["prediction"] = (reference["age"] > 42).astype(int)
    reference["target"] = (rng.random(6000) < 1 / (1 + np.exp(-(reference["age"] - 42) / 6))).astype(int)
    reference["ts"] = pd.to_datetime(1_700_000_000 * SECOND + np.arange(6000) * 5_000_000, utc=True)
    reference.to_parquet(tmp_path / "reference.parquet")
    flags = ["--timestamp-column", "ts", "--target-column", "target", "--prediction-column", "prediction",
             "--features", ",".join(FEATURES), "--categorical", "plan", "--task", "classification"]
    profile_path = tmp_path / "profile.json"
    assert cli.main(["reference", "build", "--data", str(tmp_path / "reference.parquet"), "--model", "sketchy",
                     "--version", "1", *flags, "--window", WINDOW, "--output", str(profile_path)]) == 0
    processor.register(ReferenceProfile.load(str(profile_path)))

    app = tmp_path / "app.py"
    app.write_text(APP)
    served_path = tmp_path / "served.parquet"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env = {**clean, "OTEL_PYTHON_MLMON_ID_COLUMN": "order_id", "OTEL_SERVICE_NAME": "sketchy",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": url,
           "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "otlp",
           "OTEL_PYTHON_MLMON_SKETCH_EXPORT_INTERVAL": "1000", "OTEL_METRIC_EXPORT_INTERVAL": "1000",
           "PYTHONPATH": str(Path(__file__).parents[2])}
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    run = subprocess.run([str(instrument), sys.executable, str(app), str(served_path), "6"], env=env,
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    served = pd.read_parquet(served_path)
    assert len(served) > 2000

    # The truth arrives later, through the public API, shuffled.
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    import otel_mlmon

    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(f"{url}/v1/logs")))
    truth = served[["order_id", "target"]].sample(frac=1.0, random_state=3)
    for begin in range(0, len(truth), 500):
        part = truth.iloc[begin: begin + 500]
        otel_mlmon.record_labels("sketchy", ids=part["order_id"].tolist(), labels=part["target"].tolist(),
                                 version="1", logger_provider=logger_provider)
    logger_provider.shutdown()

    def settled() -> bool:
        counters = processor.counters()
        results = processor.store.results(model="sketchy", period="analysis", kind="performance")
        return counters.get("labels_joined", 0) == len(served) and \
            sum(r["labeled_rows"] for r in results if r["metric"] == "accuracy") == len(served)

    eventually(settled, 60, "every label joined and evaluated", interval_s=0.2)
    streamed = pd.DataFrame(processor.store.results(model="sketchy", period="analysis"))

    # The same rows through the batch path: each row at the event time the processor stored for its id.
    times = {row.id: row.time_ns for row in processor.store.rows("sketchy", "1")}
    assert set(times) == set(served["order_id"])  # every row, under the id the caller sent
    analysis = served.drop(columns="target").assign(ts=pd.to_datetime(served["order_id"].map(times), utc=True))
    analysis.to_parquet(tmp_path / "analysis.parquet")
    served[["order_id", "target"]].to_csv(tmp_path / "labels.csv", index=False)
    expected = tmp_path / "batch.csv"
    assert cli.main(["evaluate", "--reference", str(profile_path), "--analysis", str(tmp_path / "analysis.parquet"),
                     "--labels", str(tmp_path / "labels.csv"), "--id-column", "order_id", *flags, "--window",
                     WINDOW, "--output", str(expected)]) == 0
    batch = pd.read_csv(expected, keep_default_na=False)
    batch = batch[batch.period == "analysis"]

    # No feature is reported missing because it was not captured; the app's sketches are judged.
    assert "column_missing" not in set(streamed["metric"])
    key = ["window", "column", "kind", "metric"]
    merged = batch.merge(streamed, on=key, suffixes=("_batch", "_stream"))
    features = merged[merged["column"].isin(FEATURES)]
    assert set(features["column"]) == set(FEATURES) and features["kind"].isin(["drift", "data_quality"]).all()
    assert len(features) == len(batch[batch["column"].isin(FEATURES)])
    assert (features["rows_batch"] == features["rows_stream"]).all()
    tolerance = np.where(features["metric"].isin(["kolmogorov_smirnov", "missing_rate", "out_of_range_rate",
                                                  "unseen_category_rate", "l_infinity"]), 0.01, 0.02)
    difference = (features["value_batch"].astype(float) - features["value_stream"].astype(float)).abs()
    # Re-bucketing an app's own sketches onto the profile's has a bounded error per bucket (KS within 0.005, see
    # NumericSketch.rebucketed); binned distances amplify it in a window of few rows (the app's first, partial
    # window once gave JS 0.2530 vs 0.2189 in CI). Values are held to the tolerances from 300 rows; verdicts in
    # every window (below).
    sized = features["rows_batch"].astype(int) >= 300
    assert sized.any()
    wrong = sized & (difference > tolerance)
    assert not wrong.any(), features.loc[wrong, [*key, "rows_batch", "value_batch", "value_stream"]]
    verdicts = (features["alert_batch"].astype(str).str.lower()  # no verdict: "" in the CSV, None in the API
                == features["alert_stream"].fillna("").astype(str).str.lower())
    assert verdicts.all(), features.loc[~verdicts, [*key, "value_batch", "value_stream"]]
    drifted = set(features[features["alert_stream"].astype(str) == "True"]["column"])
    assert "age" in drifted and "plan" not in drifted

    # Realized accuracy per window equals sklearn's on that window's rows.
    starts = analysis["ts"].dt.floor(WINDOW)
    accuracy = streamed[(streamed["kind"] == "performance") & (streamed["metric"] == "accuracy")]
    assert len(accuracy) == starts.nunique()
    for _, row in accuracy.iterrows():
        rows = served[(starts == pd.Timestamp(row["window_start"])).to_numpy()]
        assert row["labeled_rows"] == len(rows)
        assert row["value"] == pytest.approx(accuracy_score(rows["target"], rows["prediction"]), abs=1e-12)
