"""``mlmon replay``: the events carry the file's own answers, times and ids; delivery is counted, not assumed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from otel_mlmon import cli, semconv
from tests.otlp_receiver import OtlpReceiver, attributes

pytestmark = pytest.mark.integration


def _rows(receiver: OtlpReceiver) -> list[dict[str, Any]]:
    """Every replayed row as it arrived: its id, label, score(s), features and event time (``ml.prediction.time``
    when the event has it, else the record's timestamp)."""
    out = []
    for event in receiver.logs(semconv.EVENT_PREDICTIONS):
        found = attributes(event)
        ids = found[semconv.ML_PREDICTION_ID]
        times = found.get(semconv.ML_PREDICTION_TIME) or [event.time_unix_nano] * len(ids)
        for i, pid in enumerate(ids):
            row = {key: values[i] for key, values in found.items() if isinstance(values, list)}
            row["time_ns"] = times[i]
            row["id"] = pid
            out.append(row)
    return out


def _binary(n: int, seed: int) -> pd.DataFrame:
    """A binary classifier's outputs whose decision threshold is 0.3, not 0.5; timestamps unsorted, with ties."""
    rng = np.random.default_rng(seed)
    score = rng.random(n)
    return pd.DataFrame({
        "id": [f"row-{i}" for i in rng.permutation(n)],
        "ts": pd.to_datetime(1_700_000_000_000_000 + rng.integers(0, 40, n) * 1_500_000 + 7, unit="us"),
        "x": rng.normal(size=n), "plan": rng.choice(["a", "b"], n),
        "score": score, "pred": (score >= 0.3).astype(int), "y": rng.integers(0, 2, n)})


def test_replay_sends_the_files_own_labels_scores_times_and_ids(tmp_path: Path) -> None:
    frame = _binary(400, 1)
    assert ((frame.score >= 0.5).astype(int) != frame.pred).sum() > 50  # the threshold matters
    assert not frame.ts.is_monotonic_increasing and frame.ts.duplicated().any()
    frame.to_parquet(tmp_path / "data.parquet")
    with OtlpReceiver() as receiver:
        code = cli.main(["replay", "--analysis", str(tmp_path / "data.parquet"), "--model", "credit",
                         "--id-column", "id", "--timestamp-column", "ts", "--target-column", "y",
                         "--prediction-column", "pred", "--score-column", "score", "--endpoint", receiver.endpoint])
        rows = _rows(receiver)
        labels = [attributes(e) for e in receiver.logs(semconv.EVENT_LABELS)]
        sketches = receiver.metrics(semconv.ML_FEATURE_VALUE)
    assert code == 0
    by_id = {r["id"]: r for r in rows}
    assert len(rows) == len(by_id) == 400
    expected = frame.set_index("id")
    wrong = [pid for pid, row in by_id.items() if str(row[semconv.ML_PREDICTION_LABEL]) != str(expected.pred[pid])]
    assert wrong == []  # the file's label, not score >= 0.5
    for pid, row in by_id.items():
        assert row[semconv.ML_PREDICTION_LABEL] == expected.pred[pid]  # and of the file's type (int)
        assert row[semconv.ML_PREDICTION_SCORE] == expected.score[pid]
        assert row[semconv.ML_FEATURE_PREFIX + "x"] == expected.x[pid]
        assert row[semconv.ML_FEATURE_PREFIX + "plan"] == expected.plan[pid]
        assert row["time_ns"] == expected.ts[pid].value  # the file's time, to the nanosecond it holds
    sent = [(r["time_ns"], r["id"]) for r in rows]
    assert sent == sorted(sent)  # an unsorted file goes out in (time, id) order
    joined = {pid: y for event in labels for pid, y in zip(event[semconv.ML_PREDICTION_ID],
                                                             event[semconv.ML_LABEL_VALUE])}
    assert joined == {pid: int(y) for pid, y in expected.y.items()}
    assert sketches == []  # features are captured in the events; no sketch points (they carry the send time)


def test_replay_without_times_or_ids_keeps_the_files_order(tmp_path: Path) -> None:
    frame = _binary(250, 2).drop(columns=["ts", "id"])
    frame.to_csv(tmp_path / "data.csv", index=False)
    with OtlpReceiver() as receiver:
        assert cli.main(["replay", "--analysis", str(tmp_path / "data.csv"), "--model", "m", "--target-column", "y",
                         "--prediction-column", "pred", "--score-column", "score", "--endpoint",
                         receiver.endpoint]) == 0
        rows = _rows(receiver)
    ordered = sorted(rows, key=lambda r: (r["time_ns"], r["id"]))
    assert [r["id"] for r in ordered] == [f"{i:03d}" for i in range(250)]  # row numbers, one width
    assert [r[semconv.ML_PREDICTION_SCORE] for r in ordered] == frame.score.tolist()
    assert [r[semconv.ML_PREDICTION_LABEL] for r in ordered] == frame.pred.tolist()


def test_replay_without_times_keeps_the_file_order_of_unsorted_ids(tmp_path: Path) -> None:
    frame = _binary(300, 3).drop(columns=["ts"])
    frame.to_parquet(tmp_path / "data.parquet")
    with OtlpReceiver() as receiver:
        assert cli.main(["replay", "--analysis", str(tmp_path / "data.parquet"), "--model", "m", "--id-column", "id",
                         "--prediction-column", "pred", "--score-column", "score", "--endpoint",
                         receiver.endpoint]) == 0
        rows = _rows(receiver)
    ordered = sorted(rows, key=lambda r: (r["time_ns"], r["id"]))  # the processor's row order
    assert [r["id"] for r in ordered] == frame.id.tolist()


def test_replay_of_a_multiclass_file_sends_its_labels_and_every_score(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    scores = rng.dirichlet([1, 1, 1], 200)
    frame = pd.DataFrame({"id": [f"m{i}" for i in range(200)], "x": rng.normal(size=200),
                          "p_a": scores[:, 0], "p_b": scores[:, 1], "p_c": scores[:, 2],
                          "pred": rng.choice(["a", "b", "c"], 200)})  # not the argmax: the file's own decision
    frame.to_parquet(tmp_path / "data.parquet")
    with OtlpReceiver() as receiver:
        assert cli.main(["replay", "--analysis", str(tmp_path / "data.parquet"), "--model", "m", "--id-column", "id",
                         "--prediction-column", "pred", "--score-columns", "a=p_a,b=p_b,c=p_c", "--endpoint",
                         receiver.endpoint]) == 0
        rows = {r["id"]: r for r in _rows(receiver)}
    expected = frame.set_index("id")
    assert len(rows) == 200
    for pid, row in rows.items():
        assert row[semconv.ML_PREDICTION_LABEL] == expected.pred[pid]
        assert [row[semconv.ML_PREDICTION_SCORE_PREFIX + c] for c in "abc"] == \
            [expected.p_a[pid], expected.p_b[pid], expected.p_c[pid]]


def _grouped(n: int, seed: int) -> pd.DataFrame:
    frame = _binary(n, seed)
    rng = np.random.default_rng(seed + 100)
    region = rng.choice(["eu", "us", "apac", "latam"], n).astype(object)
    region[rng.random(n) < 0.1] = None
    return frame.assign(region=region, sex=rng.choice(["f", "m"], n))


def _bounded(values: list[Any], kept: int) -> list[str]:
    """The instrumentation's bound, written out: the first ``kept`` distinct values stay, later ones __other__."""
    seen: list[str] = []
    out = []
    for value in values:
        if pd.isna(value):
            out.append("__missing__")
            continue
        if value not in seen and len(seen) < kept:
            seen.append(value)
        out.append(value if value in seen else "__other__")
    return out


def test_replay_sends_segments_and_fairness_groups_and_segment_sketches(tmp_path: Path) -> None:
    frame = _grouped(300, 6)
    frame.to_parquet(tmp_path / "data.parquet")
    with OtlpReceiver() as receiver:
        assert cli.main(["replay", "--analysis", str(tmp_path / "data.parquet"), "--model", "credit",
                         "--id-column", "id", "--timestamp-column", "ts", "--prediction-column", "pred",
                         "--score-column", "score", "--segment-by", "region", "--max-segments", "3",
                         "--sensitive-column", "sex", "--feature-sketches", "--endpoint", receiver.endpoint]) == 0
        rows = _rows(receiver)
        sketches = receiver.metrics(semconv.ML_FEATURE_VALUE)
    sent = frame.assign(t=frame.ts.map(lambda t: t.value)).sort_values(["t", "id"], kind="stable")
    expected = dict(zip(sent.id, _bounded(sent.region.tolist(), 2)))
    assert [r["id"] for r in rows] == sent.id.tolist()
    assert {r["id"]: r[semconv.ML_SEGMENT] for r in rows} == expected
    assert {r["id"]: r[semconv.ML_FAIRNESS_GROUP] for r in rows} == dict(zip(frame.id, frame.sex))
    assert all(semconv.ML_FEATURE_PREFIX + "sex" not in r for r in rows)  # not a feature
    assert all(semconv.ML_FEATURE_PREFIX + "region" in r for r in rows)  # a feature, as in mlmon evaluate
    counts: dict[str, int] = {}
    for metric in sketches:
        for point in metric.histogram.data_points:
            found = attributes(point)
            assert found[semconv.ML_FEATURE_NAME] != "sex" and semconv.ML_FAIRNESS_GROUP not in found
            if found[semconv.ML_FEATURE_NAME] == "x":
                counts[found[semconv.ML_SEGMENT]] = counts.get(found[semconv.ML_SEGMENT], 0) + point.count
    assert counts == dict(pd.Series(list(expected.values())).value_counts())


def test_replay_with_a_model_file_gives_segments_the_model_never_sees(tmp_path: Path) -> None:
    import pickle

    from sklearn.linear_model import LogisticRegression

    frame = _grouped(120, 7).drop(columns=["ts"])
    model = LogisticRegression().fit(frame[["x"]], frame.y)  # refuses a frame with other columns
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    frame.to_parquet(tmp_path / "data.parquet")
    with OtlpReceiver() as receiver:
        assert cli.main(["replay", "--analysis", str(tmp_path / "data.parquet"), "--model", "m", "--id-column", "id",
                         "--features", "x", "--model-file", str(tmp_path / "model.pkl"), "--segment-by", "region",
                         "--sensitive-column", "sex", "--endpoint", receiver.endpoint]) == 0
        rows = {r["id"]: r for r in _rows(receiver)}
    assert {pid: r[semconv.ML_SEGMENT] for pid, r in rows.items()} == dict(zip(frame.id, frame.region.fillna(
        "__missing__")))
    assert {pid: r[semconv.ML_FAIRNESS_GROUP] for pid, r in rows.items()} == dict(zip(frame.id, frame.sex))
    scores = model.predict_proba(frame[["x"]])[:, 1]
    assert [rows[pid][semconv.ML_PREDICTION_SCORE] for pid in frame.id] == pytest.approx(scores.tolist())


def test_replay_segment_flags_that_do_not_go_together_are_usage_errors(tmp_path: Path, capsys) -> None:
    _grouped(20, 8).to_parquet(tmp_path / "data.parquet")
    base = ["replay", "--analysis", str(tmp_path / "data.parquet"), "--model", "m", "--prediction-column", "pred",
            "--endpoint", "http://127.0.0.1:9"]
    assert cli.main([*base, "--max-segments", "3"]) == 2
    assert "--max-segments bounds the segments of --segment-by" in capsys.readouterr().err
    assert cli.main([*base, "--segment-by", "nope"]) != 0
    assert "'nope'" in capsys.readouterr().err


# --- delivery: what the endpoint acknowledged -----------------------------------------------------------------

def _replay_args(path: Path, endpoint: str, *extra: str) -> list[str]:
    return ["replay", "--analysis", str(path), "--model", "credit", "--id-column", "id", "--target-column", "y",
            "--prediction-column", "pred", "--score-column", "score", "--endpoint", endpoint, *extra]


def test_a_refused_replay_exits_1_with_the_rows_not_delivered(tmp_path: Path, capsys) -> None:
    _binary(120, 5).to_parquet(tmp_path / "data.parquet")
    with OtlpReceiver(status=400) as receiver:
        assert cli.main(_replay_args(tmp_path / "data.parquet", receiver.endpoint)) == 1
    err = capsys.readouterr().err
    assert "120 of 120 predictions and 120 of 120 labels were not delivered" in err and "400" in err
    assert "replayed" not in err


def test_replay_retries_a_throttling_endpoint_then_counts_every_row(tmp_path: Path, capsys) -> None:
    import threading

    _binary(200, 6).to_parquet(tmp_path / "data.parquet")
    with OtlpReceiver(status=503) as receiver:
        recover = threading.Timer(2.0, lambda: setattr(receiver, "status", 200))
        recover.start()
        try:
            assert cli.main(_replay_args(tmp_path / "data.parquet", receiver.endpoint, "--retry-for", "30")) == 0
        finally:
            recover.cancel()
        rows = _rows(receiver)
    assert sorted(r["id"] for r in rows) == sorted(f"row-{i}" for i in range(200))
    assert "replayed 200 predictions and 200 labels" in capsys.readouterr().err


def test_replay_to_an_endpoint_that_stays_down_gives_up_after_retry_for(tmp_path: Path, capsys) -> None:
    from tests.conftest import free_port

    _binary(80, 7).to_parquet(tmp_path / "data.parquet")
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens
    assert cli.main(_replay_args(tmp_path / "data.parquet", endpoint, "--retry-for", "1")) == 1
    err = capsys.readouterr().err
    assert "80 of 80 predictions and 80 of 80 labels were not delivered" in err and "not reachable" in err


def test_replay_says_what_an_endpoint_should_look_like(tmp_path: Path, capsys) -> None:
    """An endpoint without a scheme ("unknown url type: 127.0.0.1"), or a gRPC one in the SDK's http:// form
    ("Misformatted domain name"): a one-line error naming the form, or the http:// form taken for gRPC."""
    from otel_mlmon.replay import ReplayOptions

    _binary(20, 7).to_parquet(tmp_path / "data.parquet")
    assert cli.main(_replay_args(tmp_path / "data.parquet", "127.0.0.1:4318")) == 2
    assert "--endpoint must be the OTLP/HTTP base URL, as http://127.0.0.1:4318" in capsys.readouterr().err
    assert ReplayOptions("http://127.0.0.1:4317/", protocol="grpc").endpoint == "127.0.0.1:4317"
    for bad in ("https://127.0.0.1:4317", "127.0.0.1", "127.0.0.1:43x7"):
        with pytest.raises(ValueError, match="must be host:port"):
            ReplayOptions(bad, protocol="grpc")


class _Processor:
    """``mlmon processor serve`` as a subprocess on loopback, with its store in a temporary folder."""

    def __init__(self, tmp_path: Path) -> None:
        import os
        import sys

        from tests.conftest import free_port

        self.port, self.grpc_port = free_port(), free_port()
        self.args = [sys.executable, "-m", "otel_mlmon.cli", "processor", "serve", "--store",
                     str(tmp_path / "state.db"), "--http-endpoint", f"127.0.0.1:{self.port}", "--grpc-endpoint",
                     f"127.0.0.1:{self.grpc_port}"]
        self.env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
        self.env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        self.process: Any = None
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import subprocess

        from tests.conftest import eventually

        self.process = subprocess.Popen(self.args, env=self.env, stderr=subprocess.DEVNULL)
        eventually(lambda: self.health()["status"] == "ok", 60, "the processor answers", interval_s=0.1)

    def health(self) -> dict[str, Any]:
        import json
        import urllib.request

        return json.loads(urllib.request.urlopen(f"{self.endpoint}/healthz", timeout=5).read())

    def wait_for_predictions(self) -> None:
        from tests.conftest import eventually

        eventually(lambda: self.health().get("predictions", 0) > 0, 90, "the first predictions", interval_s=0.05)

    def kill(self) -> None:
        import signal

        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def _replay_in_background(path: Path, endpoint: str, *extra: str) -> Any:
    """``mlmon replay`` running in a thread (its stderr goes to capsys); call the result for its exit code."""
    import threading

    done: dict[str, int] = {}
    thread = threading.Thread(target=lambda: done.setdefault("code", cli.main(_replay_args(path, endpoint, *extra))),
                              daemon=True)
    thread.start()

    def wait(timeout_s: float = 120) -> int:
        thread.join(timeout_s)
        return done["code"]

    return wait


def _not_delivered(err: str) -> tuple[int, int]:
    import re

    found = re.search(r"(\d+) of \d+ predictions and (\d+) of \d+ labels were not delivered", err)
    assert found, err
    return int(found.group(1)), int(found.group(2))


def test_replay_across_a_processor_killed_and_restarted_counts_what_was_stored(tmp_path: Path, capsys) -> None:
    import time

    _binary(3000, 8).to_parquet(tmp_path / "data.parquet")
    processor = _Processor(tmp_path)
    processor.start()
    try:
        replaying = _replay_in_background(tmp_path / "data.parquet", processor.endpoint, "--rate", "1000",
                                          "--batch-rows", "50", "--retry-for", "60")
        processor.wait_for_predictions()  # mid-stream
        processor.kill()
        time.sleep(0.5)
        processor.start()
        code = replaying()
        health = processor.health()
    finally:
        processor.stop()
    err = capsys.readouterr().err
    if code == 0:
        assert "replayed 3000 predictions and 3000 labels" in err
        assert health["predictions"] == 3000 and health["labels_joined"] == 3000
    else:
        assert code == 1, err
        rows, labels = _not_delivered(err)
        assert health["predictions"] == 3000 - rows and health["labels_joined"] == 3000 - labels


def test_replay_to_a_processor_that_dies_exits_1_with_exactly_the_rows_not_stored(tmp_path: Path, capsys) -> None:
    _binary(3000, 9).to_parquet(tmp_path / "data.parquet")
    processor = _Processor(tmp_path)
    processor.start()
    try:
        replaying = _replay_in_background(tmp_path / "data.parquet", processor.endpoint, "--rate", "1000",
                                          "--batch-rows", "50", "--retry-for", "1")
        processor.wait_for_predictions()  # some rows were acknowledged, the rest will find no one
        processor.kill()
        code = replaying()
        processor.start()  # to read what the store holds
        health = processor.health()
    finally:
        processor.stop()
    err = capsys.readouterr().err
    assert code == 1, err
    rows, labels = _not_delivered(err)
    assert 0 < rows < 3000 and labels == 3000
    assert health["predictions"] == 3000 - rows


def test_replay_of_a_wide_file_over_grpc_stores_every_row(tmp_path: Path, capsys) -> None:
    """150 features: more attributes than the SDK's default limit of 128, events over the 4 MiB gRPC cap if
    batched whole."""
    rng = np.random.default_rng(10)
    frame = _binary(2000, 10)
    wide = pd.DataFrame(rng.normal(size=(2000, 150)), columns=[f"f{j:03d}" for j in range(150)])
    pd.concat([frame.drop(columns=["x", "plan"]), wide], axis=1).to_parquet(tmp_path / "wide.parquet")
    processor = _Processor(tmp_path)
    processor.start()
    try:
        code = cli.main(_replay_args(tmp_path / "wide.parquet", f"127.0.0.1:{processor.grpc_port}", "--protocol",
                                     "grpc", "--batch-rows", "500"))
        health = processor.health()
    finally:
        processor.stop()
    err = capsys.readouterr().err
    assert code == 0, err  # never "replayed 2000" with nothing stored
    assert "replayed 2000 predictions and 2000 labels" in err
    assert health["predictions"] == 2000 and health["labels_joined"] == 2000


def test_records_the_endpoint_rejects_are_counted_as_not_delivered(tmp_path: Path, capsys) -> None:
    frame = _binary(200, 11)
    now_s = 1_700_000_000
    future_s = 4_102_444_800  # 2100: the processor refuses event times that far ahead (partial success)
    frame["ts"] = pd.to_datetime([(now_s if i < 100 else future_s) + i // 10 for i in range(200)], unit="s")
    frame.to_parquet(tmp_path / "data.parquet")
    processor = _Processor(tmp_path)
    processor.start()
    try:
        code = cli.main(_replay_args(tmp_path / "data.parquet", processor.endpoint, "--timestamp-column", "ts"))
        health = processor.health()
    finally:
        processor.stop()
    err = capsys.readouterr().err
    assert code == 1
    assert "100 of 200 predictions and 0 of 200 labels were not delivered" in err  # events of 10 rows each: exact
    assert health["predictions"] == 100


def test_replay_waits_as_long_as_retry_after_says(tmp_path: Path) -> None:
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    attempts: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            first = self.path == "/v1/logs" and not attempts
            if self.path == "/v1/logs":
                attempts.append(time.monotonic())
            self.send_response(503 if first else 200)
            if first:
                self.send_header("Retry-After", "2")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    _binary(50, 12).to_parquet(tmp_path / "data.parquet")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        assert cli.main(_replay_args(tmp_path / "data.parquet", endpoint, "--label-fraction", "0.5")) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert len(attempts) >= 2 and attempts[1] - attempts[0] >= 1.9  # not the 0.1 s backoff: the server's 2 s


def test_the_exporter_sends_a_large_batch_in_requests_under_its_cap() -> None:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    from otel_mlmon._replay_export import AcknowledgingLogExporter

    with OtlpReceiver() as receiver:
        exporter = AcknowledgingLogExporter(receiver.endpoint, max_request_bytes=4000)
        records = []

        class Collect(SimpleLogRecordProcessor):
            def on_emit(self, log_record: Any) -> None:
                records.append(log_record)

        provider = LoggerProvider()
        provider.add_log_record_processor(Collect(exporter))
        logger = provider.get_logger("test")
        for n in range(20):
            logger.emit(event_name=semconv.EVENT_PREDICTIONS, attributes={
                semconv.ML_MODEL_NAME: "m", semconv.ML_PREDICTION_ID: [f"{n}-{i}" for i in range(n + 1)],
                semconv.ML_PREDICTION_VALUE: [float(i) for i in range(n + 1)]})
        assert exporter.export(records).name == "SUCCESS"
        requests = len(receiver.requests["/v1/logs"])
        assert max(len(r.SerializeToString()) for r in receiver.requests["/v1/logs"]) <= 4000
        provider.shutdown()
    assert requests > 1
    assert exporter.delivery.acknowledged[semconv.EVENT_PREDICTIONS] == sum(range(1, 21)) == len(_rows(receiver))
