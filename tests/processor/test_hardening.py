"""The processor as an operator meets it: a full disk answers 503 + Retry-After and /readyz says so until writes
succeed again (no restart); one model's flood or bad reference never stops the others; SIGTERM stops promptly and
unevaluated windows resume after the restart."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otel_mlmon import semconv
from otel_mlmon.engine.columns import profile_from_columns
from otel_mlmon.engine.windows import WindowSpec
from otel_mlmon.processor.decode import Decoded, LabelBatch, PredictionBatch
from otel_mlmon.processor.server import build_app
from otel_mlmon.processor.service import Processor
from otel_mlmon.processor.store import Store

SECOND = 1_000_000_000
NOW = 1_796_000_000 * SECOND


def _logs_request(model: str, ids: list[str], time_ns: int = NOW) -> bytes:
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.event_name = semconv.EVENT_PREDICTIONS
    record.time_unix_nano = time_ns
    for key, value in ((semconv.ML_MODEL_NAME, model), (semconv.ML_MODEL_VERSION, "1")):
        attribute = record.attributes.add()
        attribute.key, attribute.value.string_value = key, value
    attribute = record.attributes.add()
    attribute.key = semconv.ML_PREDICTION_ID
    attribute.value.array_value.values.extend([])
    for pid in ids:
        attribute.value.array_value.values.add().string_value = pid
    attribute = record.attributes.add()
    attribute.key = semconv.ML_PREDICTION_VALUE
    for n in range(len(ids)):
        attribute.value.array_value.values.add().double_value = float(n)
    return request.SerializeToString()


def _run(processor: Processor, script) -> None:
    async def main() -> None:
        async with TestClient(TestServer(build_app(processor), skip_url_asserts=True)) as client:
            await script(client)

    asyncio.run(main())


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 2 MiB tmpfs (root only: CI and the developers' machines run as root)."""
    folder = Path(tempfile.mkdtemp(prefix="mlmon-disk-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    if not mounted:
        shutil.rmtree(folder)
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_full_disk_answers_503_and_recovers_without_a_restart(small_disk: Path) -> None:
    processor = Processor(Store(str(small_disk / "p.db")), clock=lambda: NOW)
    filler = small_disk / "filler"

    async def script(client: TestClient) -> None:
        headers = {"Content-Type": "application/x-protobuf"}
        answer = await client.post("/v1/logs", data=_logs_request("m", ["a", "b"]), headers=headers)
        assert answer.status == 200
        with open(filler, "wb") as handle:  # fill the disk to the last byte
            try:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            except OSError:
                pass
        big = _logs_request("m", [f"x{i:05d}-{'p' * 40}" for i in range(20000)])
        answer = await client.post("/v1/logs", data=big, headers=headers)
        assert answer.status == 503 and answer.headers["Retry-After"]
        assert (await client.get("/readyz")).status == 503
        health = await client.get("/healthz")
        assert health.status == 200 and (await health.json())["status"] == "store unavailable"
        filler.unlink()
        answer = await client.post("/v1/logs", data=_logs_request("m", ["c"]), headers=headers)
        assert answer.status == 200
        assert (await client.get("/readyz")).status == 200

    _run(processor, script)
    assert sorted(r.id for r in processor.store.rows("m", "1")) == ["a", "b", "c"]  # the refused request: nothing
    assert os.path.exists(small_disk / "p.db")


def _profile(model: str, chunk_size: int = 100):
    rng = np.random.default_rng(0)
    profile, _ = profile_from_columns({"x": rng.normal(0, 1, 1000)}, WindowSpec(chunk_size=chunk_size), model=model,
                                      version="1")
    return profile


def _rows(processor: Processor, model: str, n: int, start: int = 0) -> None:
    rng = np.random.default_rng(start)
    batch = PredictionBatch(model, "1", NOW - 3600 * SECOND + start, [f"{model}-{start + i}" for i in range(n)],
                            values=rng.normal(0, 1, n).tolist(), features={"x": rng.normal(0, 1, n).tolist()})
    processor.accept_logs(Decoded(predictions=[batch], accepted=1), NOW - 3600 * SECOND)


def test_a_model_whose_evaluation_fails_never_stops_the_others(tmp_path: Path, monkeypatch) -> None:
    processor = Processor(Store(str(tmp_path / "p.db")), clock=lambda: NOW)
    for model in ("a", "broken", "c"):
        processor.register(_profile(model))
        _rows(processor, model, 300)
    from otel_mlmon.processor import windows

    real = windows.due_row_windows

    def failing(store, model, *args, **kwargs):
        if model == "broken":
            raise OverflowError("a window spec the engine cannot take")
        return real(store, model, *args, **kwargs)

    monkeypatch.setattr("otel_mlmon.processor.service.due_row_windows", failing)
    assert processor.tick() == 6  # three windows each of a and c
    assert processor.failures_by_model() == {"broken@1": 1}
    evaluated = {r["model"] for r in processor.store.results(period="analysis")}
    assert evaluated == {"a", "c"}


def test_a_tick_stops_between_windows_and_the_rest_resumes_after_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "p.db")
    processor = Processor(Store(path), clock=lambda: NOW)
    processor.register(_profile("m"))
    _rows(processor, "m", 1000)
    calls = []
    real = processor.evaluate

    def evaluate(*args, **kwargs) -> None:
        calls.append(1)
        real(*args, **kwargs)
        if len(calls) == 3:
            processor.stopping.set()  # SIGTERM arrives while the tick works

    processor.evaluate = evaluate  # type: ignore[method-assign]
    assert processor.tick() == 3
    processor.store.close()
    processor.alerts.close()
    restarted = Processor(Store(path), clock=lambda: NOW)
    assert restarted.tick() == 7  # the windows left over, none twice
    windows = sorted({r["window"] for r in restarted.store.results(model="m", period="analysis")})
    assert windows == list(range(10))


def test_a_bad_reference_gets_a_400_and_the_other_models_keep_being_evaluated(tmp_path: Path) -> None:
    """A reference with chunk_size 10**30 used to be accepted and then made every tick raise; columns as a list and
    JSON nested 100k deep gave 500."""
    processor = Processor(Store(str(tmp_path / "p.db")), clock=lambda: NOW)
    processor.register(_profile("good"))
    good = _profile("bad").to_dict()
    huge = {**good, "window": {"chunk_size": 10**30}}
    listed = {**good, "columns": list(good["columns"].values())}
    nested = ("[" * 100_000 + "]" * 100_000).encode()

    async def script(client: TestClient) -> None:
        for body in (json.dumps(huge).encode(), json.dumps(listed).encode(), nested, b"\xff\xfe"):
            answer = await client.post("/v1/references", data=body, headers={"Content-Type": "application/json"})
            assert answer.status == 400
            message = (await answer.json())["error"]
            assert "\n" not in message and "posted reference profile" in message
        assert (await client.get("/healthz")).status == 200

    _run(processor, script)
    assert set(processor.monitored) == {("good", "1")}
    _rows(processor, "good", 300)
    assert processor.tick() == 3 and not processor.failures


def test_state_is_pruned_once_no_window_can_change_and_windows_count_on(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "p.db"), label_ttl_s=60, max_lateness_s=60, retention_s=0)
    now = [NOW]
    processor = Processor(store, clock=lambda: now[0], allowed_lateness_s=1, idle_timeout_s=5, sweep_s=1)
    processor.register(_profile("m"))
    _rows(processor, "m", 200)  # an hour ago: windows 0 and 1
    _rows(processor, "m", 200, start=1800 * SECOND)  # half an hour later (backfilled at once): windows 2 and 3
    assert processor.tick() == 4  # evaluated first, then pruned: nothing goes before it was evaluated
    assert len(store.rows("m", "1")) == 200 and store.counters()["pruned_predictions"] == 200
    assert set(store.windows("m", "1", "rows")) == {2, 3}  # the bookkeeping of 0 and 1 goes too
    assert {r["window"] for r in store.results(model="m", period="analysis")} == {0, 1, 2, 3}  # results stay
    _rows(processor, "m", 100, start=1800 * SECOND + 1000)
    now[0] += 10 * SECOND
    assert processor.tick() == 1  # rank counting goes on from the windows kept: 4, not 0 again
    assert {r["window"] for r in store.results(model="m", period="analysis")} == {0, 1, 2, 3, 4}
    assert {r["rows"] for r in store.results(model="m", period="analysis", window=4)} == {100}


def test_pruning_deletes_in_chunks_and_lets_writes_in_between(tmp_path: Path) -> None:
    """``Store.prune`` with a limit deletes the oldest ~limit rows a transaction (the rows of one event time go
    together), keeps the pending count right, and drops sketches and window bookkeeping with the last chunk; the
    processor's sweep goes on until all of it is gone, and a request is stored between two of its chunks."""
    store = Store(str(tmp_path / "p.db"), label_ttl_s=60, max_lateness_s=60, retention_s=0)
    base = NOW - 3600 * SECOND
    store.add_predictions([PredictionBatch("m", "1", base, [f"r{i}" for i in range(1000)], values=[0.0] * 1000,
                                           times=[base + i for i in range(1000)])], NOW)
    store.add_labels([LabelBatch("m", "1", base, [f"r{i}" for i in range(0, 1000, 2)], [1.0] * 500)], NOW)
    store.add_predictions([PredictionBatch("m", "1", base + 5000, [f"s{i}" for i in range(300)],
                                           values=[0.0] * 300)], NOW)  # 300 rows of one event time
    assert store.counters()["pending_predictions"] == 800
    chunks = []
    while True:
        deleted, finished = store.prune("m", "1", base + 6000, limit=128)
        chunks.append(deleted)
        if finished:
            break
    assert sum(chunks) == 1300 and 300 in chunks  # the rows of the shared time went whole
    assert max(n for n in chunks if n != 300) <= 128 and len(chunks) > 8
    assert store.counters()["pruned_predictions"] == 1300
    assert store.counters()["pending_predictions"] == 0 and store.rows("m", "1") == []
    reopened = Store(str(tmp_path / "p.db"))
    assert reopened.counters()["pending_predictions"] == 0  # as counted from the rows themselves


def test_the_processors_sweep_prunes_chunk_by_chunk(tmp_path: Path, monkeypatch) -> None:
    from otel_mlmon.processor import service

    monkeypatch.setattr(service, "PRUNE_CHUNK", 50)
    store = Store(str(tmp_path / "p.db"), label_ttl_s=60, max_lateness_s=60, retention_s=0)
    now = [NOW]
    processor = Processor(store, clock=lambda: now[0], allowed_lateness_s=1, idle_timeout_s=5, sweep_s=1)
    processor.register(_profile("m"))
    calls = []
    prune = store.prune

    def counted(*args, **kwargs):
        calls.append(kwargs.get("limit"))
        if len(calls) == 2:  # a request between two chunks is stored
            _rows(processor, "m", 10, start=3000 * SECOND)
        return prune(*args, **kwargs)

    monkeypatch.setattr(store, "prune", counted)
    for n in range(8):  # 8 event times of 50 rows, an hour ago: windows 0-3
        _rows(processor, "m", 50, start=n * SECOND)
    _rows(processor, "m", 100, start=1800 * SECOND)  # half an hour later: window 4
    assert processor.tick() == 5
    assert store.counters()["pruned_predictions"] == 400 and len(calls) == 8 and set(calls) == {50}
    assert len(store.rows("m", "1")) == 110


def test_late_labels_revise_a_closed_window_at_most_once_per_revision_interval(tmp_path: Path) -> None:
    """A time window evaluated when it closed is not evaluated anew at each tick that late labels arrive in: the
    revision waits for ``revision_interval_s`` after its last evaluation, then takes every label that came
    meanwhile; the model stays active until then."""
    store = Store(str(tmp_path / "p.db"))
    now = [NOW]
    processor = Processor(store, clock=lambda: now[0], allowed_lateness_s=1, idle_timeout_s=86400,
                          revision_interval_s=300)
    profile = _profile("t")
    profile.window = WindowSpec(window="1min")
    processor.register(profile)
    _rows(processor, "t", 50)  # window w
    _rows(processor, "t", 50, start=180 * SECOND)  # three windows later: w closes
    assert processor.tick() == 1

    def labeled() -> int:  # labelled rows of the window as last evaluated (its recorded state: rows, labeled, points)
        (_, _, state), = store.windows("t", "1", "time").values()
        return json.loads(state)[1]

    def label(ids: list[str]) -> None:
        processor.accept_logs(Decoded(labels=[LabelBatch("t", "1", NOW, ids, [0.0] * len(ids))], accepted=1), now[0])

    for part in range(3):  # late labels at three ticks within the interval: no evaluation
        label([f"t-{i}" for i in range(10 * part, 10 * part + 10)])
        now[0] += 60 * SECOND
        assert processor.tick() == 0 and labeled() == 0 and ("t", "1") in processor._active
    now[0] += 150 * SECOND  # 5 min after the window's evaluation (the interval; the window is 1 min)
    assert processor.tick() == 1 and labeled() == 30  # one revision, with all 30 late labels
    assert processor.counters()["windows_evaluated"] == 2
    label([f"t-{i}" for i in range(30, 40)])
    assert processor.tick() == 0  # waits again, from the revision
    now[0] += 300 * SECOND
    assert processor.tick() == 1 and labeled() == 40


def test_late_labels_revise_an_hour_window_after_the_interval_not_after_an_hour(tmp_path: Path) -> None:
    """The bound is the revision interval, or ten times the CPU the model's last evaluation took: not the window's
    width (an hour window's late labels waited up to an hour for it). A window whose evaluation is slow waits
    longer (revisions then take at most about a tenth of a core)."""
    store = Store(str(tmp_path / "p.db"))
    now = [NOW]
    processor = Processor(store, clock=lambda: now[0], allowed_lateness_s=1, idle_timeout_s=86400,
                          revision_interval_s=30)
    profile = _profile("h")
    profile.window = WindowSpec(window="1h")
    processor.register(profile)
    _rows(processor, "h", 50)
    _rows(processor, "h", 50, start=3800 * SECOND)  # an hour and 200 s later: the first window closes
    assert processor.tick() == 1
    processor.accept_logs(Decoded(labels=[LabelBatch("h", "1", NOW, ["h-0", "h-1"], [0.0, 0.0])], accepted=1), now[0])
    now[0] += 10 * SECOND
    assert processor.tick() == 0  # within the interval
    now[0] += 25 * SECOND
    assert processor.tick() == 1  # 35 s after the evaluation, not an hour
    (_, _, state), = store.windows("h", "1", "time").values()
    assert json.loads(state)[1] == 2
    processor._evaluation_ns[("h", "1")] = 60 * SECOND  # as if the evaluation had taken a minute of CPU
    processor.accept_logs(Decoded(labels=[LabelBatch("h", "1", NOW, ["h-2"], [0.0])], accepted=1), now[0])
    now[0] += 300 * SECOND
    assert processor.tick() == 0  # waits ten minutes
    now[0] += 301 * SECOND
    assert processor.tick() == 1


def test_late_labels_revise_a_closed_row_window_at_most_once_per_revision_interval(tmp_path: Path) -> None:
    """The same bound for row windows: late labels wait for the revision interval after the window's evaluation,
    the model stays active meanwhile, and one revision then takes them all."""
    store = Store(str(tmp_path / "p.db"))
    now = [NOW]
    processor = Processor(store, clock=lambda: now[0], allowed_lateness_s=1, idle_timeout_s=86400,
                          revision_interval_s=300)
    processor.register(_profile("r"))  # windows of 100 rows
    _rows(processor, "r", 100)  # window 0
    _rows(processor, "r", 50, start=180 * SECOND)  # the open window 1: window 0 closes
    assert processor.tick() == 1

    def labeled() -> int:  # labelled rows of window 0 as last evaluated (its state: rows, labeled, first, last)
        return json.loads(store.windows("r", "1", "rows")[0][2])[1]

    def label(ids: list[str]) -> None:
        processor.accept_logs(Decoded(labels=[LabelBatch("r", "1", NOW, ids, [0.0] * len(ids))], accepted=1), now[0])

    for part in range(3):
        label([f"r-{i}" for i in range(10 * part, 10 * part + 10)])
        now[0] += 60 * SECOND
        assert processor.tick() == 0 and labeled() == 0 and ("r", "1") in processor._active
    now[0] += 150 * SECOND
    assert processor.tick() == 1 and labeled() == 30
    label([f"r-{i}" for i in range(30, 40)])
    assert processor.tick() == 0
    now[0] += 300 * SECOND
    assert processor.tick() == 1 and labeled() == 40
    assert processor.counters()["windows_evaluated"] == 3


def test_rows_of_a_record_too_far_in_the_future_are_dropped_alone_and_counted(tmp_path: Path) -> None:
    processor = Processor(Store(str(tmp_path / "p.db")), clock=lambda: NOW)
    times = [NOW - SECOND, NOW + 3600 * SECOND, NOW]  # one row of three from a clock an hour ahead
    batch = PredictionBatch("m", "1", NOW - SECOND, ["a", "b", "c"], values=[1.0, 2.0, 3.0], times=times)
    decoded = Decoded(predictions=[batch], accepted=1)
    processor.accept_logs(decoded, NOW)
    assert decoded.accepted == 1 and decoded.rejected_count == 0 and sum(decoded.rejected_rows.values()) == 1
    assert [(r.id, r.time_ns) for r in processor.store.rows("m", "1")] == [("a", NOW - SECOND), ("c", NOW)]
    future = Decoded(predictions=[PredictionBatch("m", "1", NOW + 3600 * SECOND, ["d"], values=[4.0])], accepted=1)
    processor.accept_logs(future, NOW)
    assert future.accepted == 0 and future.rejected_count == 1  # the whole record: partial success


def test_time_windows_keep_their_numbers_after_pruning(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "p.db"), label_ttl_s=60, max_lateness_s=60, retention_s=0)
    now = [NOW]
    processor = Processor(store, clock=lambda: now[0], allowed_lateness_s=1, idle_timeout_s=5, sweep_s=1)
    profile = _profile("t")
    profile.window = WindowSpec(window="10min")
    processor.register(profile)
    for n, minutes in enumerate((0, 10, 20, 40)):  # windows 0, 1, 2 and 3 (the 30-min one is empty)
        _rows(processor, "t", 50, start=minutes * 60 * SECOND + n)
    assert processor.tick() == 4 and store.counters()["pruned_predictions"] == 150  # 0-2 pruned: past the bound
    _rows(processor, "t", 50, start=50 * 60 * SECOND + 9)
    now[0] += 10 * SECOND
    assert processor.tick() == 1
    numbers = {(r["window"], r["window_start"]) for r in store.results(model="t", period="analysis")}
    assert len(numbers) == 5 and {w for w, _ in numbers} == {0, 1, 2, 3, 4}  # 4 is new, not a number taken again
