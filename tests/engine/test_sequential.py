"""Sequential change detection: equal to river's ADWIN and Page–Hinkley, state that survives JSON, honest
change reports (before/after equal the plain means of the stream's segments), bad values skipped."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from otel_mlmon.engine.sequential import ADWIN, Change, PageHinkley, SequentialMonitor


def _stream(seed: int, kind: str, n: int = 12_000) -> list[float]:
    rng = np.random.default_rng(seed)
    position = np.arange(n)
    if kind == "bernoulli":  # accuracy 0.9, then 0.75, then 0.95
        p = np.where(position < n // 3, 0.9, np.where(position < 2 * n // 3, 0.75, 0.95))
        return (rng.random(n) < p).astype(float).tolist()
    return (rng.normal(0.0, 1.0, n) + 0.4 * (position > n // 2)).tolist()  # a mean shift of 0.4 sd


def _ours(detector: ADWIN | PageHinkley, stream: list[float]) -> list[int]:
    return [i for i, x in enumerate(stream) if detector.update(x)]


def _river(detector, stream: list[float]) -> list[int]:
    found = []
    for i, x in enumerate(stream):
        detector.update(x)
        if detector.drift_detected:
            found.append(i)
    return found


ADWIN_PARAMETERS = [{}, {"delta": 0.05, "clock": 1}, {"delta": 0.0001, "clock": 7, "max_buckets": 3,
                                                        "min_window_length": 20, "grace_period": 100}]


@pytest.mark.parametrize("parameters", ADWIN_PARAMETERS)
@pytest.mark.parametrize("kind", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("seed", range(3))
def test_adwin_detects_where_river_does(seed: int, kind: str, parameters: dict) -> None:
    drift = pytest.importorskip("river.drift")
    stream = _stream(seed, kind)
    ours, theirs = ADWIN(**parameters), drift.ADWIN(**parameters)
    expected = _river(theirs, stream)
    assert expected  # the streams change: the comparison is not between two empty lists
    assert _ours(ours, stream) == expected
    # and the window itself is the same at the end (width, sum, variance)
    assert ours.width == theirs.width
    assert ours._total == pytest.approx(theirs.total, rel=1e-12, abs=1e-9)
    assert ours._variance == pytest.approx(theirs.variance, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("parameters", ADWIN_PARAMETERS)
@pytest.mark.parametrize("kind", ["bernoulli", "gaussian"])
def test_adwin_update_many_equals_one_value_at_a_time(kind: str, parameters: dict) -> None:
    """The batched path (what the processor feeds a label batch through) gives the same detections, change
    reports and state, to the last bit, as ``update`` one value at a time, in batches of any size, across
    detections and across a restore from JSON."""
    stream = _stream(4, kind)
    one = ADWIN(**parameters)
    expected = []
    for i, x in enumerate(stream):
        if one.update(x):
            expected.append((i, one.detection))
    assert expected
    many = ADWIN(**parameters)
    got = []
    start = 0
    cut_after_detection = expected[0][0] + 1
    for size in [1, 31, 32, 33, 1000, max(0, cut_after_detection - 1097), 4096, 0, len(stream)]:
        got += [(start + position, found) for position, found in many.update_many(stream[start: start + size])]
        start += size
        many = ADWIN.from_dict(json.loads(json.dumps(many.to_dict())))
        if start == cut_after_detection:
            assert many.detection is not None  # the stored detection: the next value starts afresh
    assert start >= len(stream)
    assert [i for i, _ in got] == [i for i, _ in expected]
    assert [d for _, d in got[1:]] == [d for _, d in expected[1:]]  # (the first crossed no restore)
    assert got[0][1] == expected[0][1]
    assert many.to_dict() == one.to_dict()


@pytest.mark.parametrize("parameters", [{}, {"threshold": 20.0, "delta": 0.01, "mode": "down"},
                                        {"threshold": 10.0, "alpha": 0.999, "mode": "up", "min_instances": 100}])
@pytest.mark.parametrize("kind", ["bernoulli", "gaussian"])
def test_page_hinkley_detects_where_river_does(kind: str, parameters: dict) -> None:
    drift = pytest.importorskip("river.drift")
    stream = _stream(11, kind)
    expected = _river(drift.PageHinkley(**parameters), stream)
    assert expected
    assert _ours(PageHinkley(**parameters), stream) == expected


def test_adwin_memory_is_logarithmic() -> None:
    adwin = ADWIN()
    rng = np.random.default_rng(0)
    for x in (rng.random(100_000) < 0.9).tolist():
        assert not adwin.update(x)
    assert adwin.width == 100_000
    # at rest at most max_buckets buckets of each size 2**i <= width
    assert adwin.buckets <= adwin.max_buckets * (math.floor(math.log2(adwin.width)) + 1)
    assert adwin.buckets < 100


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
def test_accuracy_drop_is_reported_with_plain_segment_means(detector: str) -> None:
    rng = np.random.default_rng(3)
    correct = np.r_[rng.random(4000) < 0.94, rng.random(3000) < 0.5]
    labels = np.where(rng.random(7000) < 0.5, "yes", "no")
    predicted = np.where(correct, labels, np.where(labels == "yes", "no", "yes"))
    monitor = SequentialMonitor(detector)
    changes = monitor.update_labels(labels[:2500].tolist(), predicted[:2500].tolist())
    changes += monitor.update_labels(labels[2500:].tolist(), predicted[2500:].tolist())
    assert monitor.count == 7000
    assert len(changes) >= 1
    first = changes[0]
    assert isinstance(first, Change) and first.detector == detector and first.metric == "accuracy"
    assert 4000 <= first.index < 4000 + 200  # soon after the change
    assert first.offset == first.index - 2500  # position within the second call
    # ADWIN's strongest cut finds the change point closely; Page-Hinkley's extreme of a noisy sum roughly
    assert abs(first.start_index - 4000) < (100 if detector == "adwin" else 500)
    assert first.worse and first.statistic > first.threshold
    # before/after are the accuracies of the stream's segments on each side of the estimated change point
    assert first.before == pytest.approx(float(np.mean(correct[: first.start_index])), abs=1e-12)
    assert first.after == pytest.approx(float(np.mean(correct[first.start_index: first.index + 1])), abs=1e-12)
    assert json.loads(json.dumps(first.as_dict()))["index"] == first.index


def test_regression_errors_in_the_targets_unit() -> None:
    rng = np.random.default_rng(5)
    y_true = rng.normal(1000.0, 200.0, 6000)
    y_pred = y_true + rng.normal(0.0, 20.0, 6000) * np.r_[np.ones(3000), np.full(3000, 2.5)]
    monitor = SequentialMonitor("adwin", task="regression", scale=16.0)  # about the reference MAE
    changes = monitor.update_labels(y_true.tolist(), y_pred.tolist())
    assert changes and changes[0].metric == "mae" and changes[0].worse
    first = changes[0]
    errors = np.abs(y_true - y_pred)
    assert first.before == pytest.approx(float(np.mean(errors[: first.start_index])), rel=1e-9)
    assert first.after == pytest.approx(float(np.mean(errors[first.start_index: first.index + 1])), rel=1e-9)
    assert first.after > first.before * 1.8


def test_stationary_labels_raise_no_change() -> None:
    rng = np.random.default_rng(9)
    monitor = SequentialMonitor("adwin")
    assert monitor.update((rng.random(60_000) < 0.8).tolist()) == []


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
def test_state_survives_json_and_continues_exactly(detector: str) -> None:
    stream = _stream(2, "bernoulli", 9000)
    whole = SequentialMonitor(detector)
    expected = [c.as_dict() for c in whole.update(stream)]
    assert len(expected) >= 2
    # stop at several points, one right after a detection, and restart from the stored state each time
    cuts = sorted({1, 777, 4000, expected[0]["index"] + 1, 8999})
    monitor = SequentialMonitor(detector)
    got: list[dict] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        for change in monitor.update(stream[start:cut]):
            got.append({**change.as_dict(), "offset": change.offset + start})
        monitor = SequentialMonitor.from_dict(json.loads(json.dumps(monitor.to_dict())))
        start = cut
    assert got == [{**c, "offset": c["index"]} for c in expected]
    assert monitor.to_dict() == whole.to_dict()


def test_values_that_are_not_numbers_are_skipped_and_counted() -> None:
    monitor = SequentialMonitor("adwin", task="regression", scale=2.0)
    assert monitor.update([1.0, math.nan, "x", None, math.inf, 3.0]) == []
    assert (monitor.count, monitor.skipped) == (2, 4)
    assert monitor.update_labels(["1", "oops"], ["2", "3"]) == []
    assert (monitor.count, monitor.skipped) == (3, 5)


def test_bad_settings_and_damaged_states_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="unknown sequential detector 'cusum'"):
        SequentialMonitor("cusum")
    with pytest.raises(ValueError, match="delta must be in"):
        SequentialMonitor("adwin", delta=2.0)
    with pytest.raises(ValueError, match="bad parameter for the adwin detector"):
        SequentialMonitor("adwin", threshold=3.0)
    with pytest.raises(ValueError, match="scale must be in"):
        SequentialMonitor("adwin", task="regression", scale=0.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        PageHinkley(mode="sideways")
    with pytest.raises(ValueError, match="not a sequential monitor state"):
        SequentialMonitor.from_dict({"detector": "adwin"})
    state = SequentialMonitor("adwin").to_dict()
    with pytest.raises(ValueError, match="schema version 99"):
        SequentialMonitor.from_dict({**state, "schema_version": 99})
    with pytest.raises(ValueError, match="damaged sequential monitor state"):
        SequentialMonitor.from_dict({k: v for k, v in state.items() if k != "count"})
    monitor = SequentialMonitor("adwin")
    monitor.update([1.0] * 100)
    state = monitor.to_dict()
    with pytest.raises(ValueError, match="'width' does not match its buckets"):
        SequentialMonitor.from_dict({**state, "state": {**state["state"], "width": 7}})


def test_labels_are_compared_as_the_engine_keys_them() -> None:
    monitor = SequentialMonitor("adwin")
    assert monitor.update_labels([1.0, "1", True, None, "cat", 0], [1, 1, "1", 0, "cat", 1.0]) == []
    assert (monitor.count, monitor.skipped) == (5, 1)  # the missing label is skipped, not counted wrong
    assert monitor._detector.estimation == pytest.approx(4 / 5)
