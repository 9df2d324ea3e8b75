"""Sequential change detection on each monitored model's label stream: alerts as soon as the labels show a change in
realized performance, not when a window closes.

The detection is the engine's (``engine.sequential.SequentialMonitor``: ADWIN by default, or Page–Hinkley); this
module feeds it and reports what it finds. The store calls ``Sequential.joined`` inside the transaction that joins
labels (``Store.on_join``: labels joining stored predictions, and orphan labels joining a prediction that arrived),
in join order, with the model's stored monitor state; the new state and the changes found commit with the join or
not at all, so a restart continues exactly where the monitor stopped (no label fed twice, none lost). A model is
fed once it has a reference profile (classification: per-row correctness, regression: |error| over the reference
MAE when the profile has one); labels that joined before are not.

The processor's tick reports the changes (``change_result``): each becomes a result row of ``kind``
``performance_change`` (``column`` the target, ``metric`` the detector, ``value`` the detector's statistic,
``upper_threshold`` what it exceeded, ``alert`` true when performance got worse, false when it recovered) in the
window of the prediction whose label revealed it, plus ``change_metric`` (accuracy or mae), ``before`` and
``after`` (that metric before and since the estimated change point), ``change_start_label`` and ``change_label``
(the change point and the detection, counted in labels the monitor took) and ``event_time`` (the prediction's).
It moves the model's ``performance_change`` alert like any window result (fires when worse, resolves when better).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.engine.results import iso_utc_ns
from otel_mlmon.engine.sequential import TASKS, SequentialMonitor
from otel_mlmon.processor.config import SEQUENTIAL_DETECTORS as CHOICES
from otel_mlmon.processor.store import MAX_NS, PERFORMANCE_CHANGE, LabelJoin, Store
from otel_mlmon.processor.windows import ROWS, TIME, Monitored
from otel_mlmon.sketch import category_key

_logger = logging.getLogger("otel_mlmon.processor")

OFF = "off"  # one of CHOICES: the engine's detectors and off


def reference_scale(profile: ReferenceProfile) -> float:
    """What divides a regression model's absolute errors: the reference MAE, or 1 when the profile has none."""
    mae = profile.reference_performance.get("mae")
    return float(mae) if mae is not None and math.isfinite(mae) and mae > 0 else 1.0


class Sequential:
    """Feeds each monitored model's joined labels to its ``SequentialMonitor`` (the store's ``on_join``).

    Args:
        detector: ``adwin`` (river's defaults: delta 0.002), ``page_hinkley``, or ``off``.
        monitored: the processor's monitored models (read when labels join).
    """

    def __init__(self, detector: str, monitored: Mapping[tuple[str, str], Monitored]) -> None:
        if detector not in CHOICES:
            raise ValueError(f"unknown sequential detector {detector!r}; choose from {', '.join(CHOICES)}")
        self.detector = detector
        self.monitored = monitored
        self.failures = 0  # calls whose labels the monitor could not take (logged once per model)
        self._logged: set[tuple[str, str]] = set()

    def joined(self, key: tuple[str, str], joins: list[LabelJoin], state: str | None
               ) -> tuple[str | None, list[dict[str, Any]]]:
        """Feed labels that joined, in join order, to the model's monitor restored from ``state``; (its new
        state, the changes found). Never raises: a failure leaves the stored state as it was (logged, counted)."""
        watched = self.monitored.get(key)
        if self.detector == OFF or watched is None or watched.profile.task not in TASKS:
            return None, []
        profile = watched.profile
        try:
            monitor = self._monitor(key, profile, state)
            regression = profile.task == "regression"
            fed = [j for j in joins if (j.value if regression else j.label) is not None]  # rows with an output
            if regression:
                changes = monitor.update_labels([j.truth for j in fed], [j.value for j in fed])
            else:  # update_labels' rule, with the stored label already its category key (as most labels are)
                keys = (j.truth if type(j.truth) is str else category_key(j.truth) for j in fed)
                changes = monitor.update(math.nan if key is None else key == j.label for key, j in zip(keys, fed))
            found = [{**change.as_dict(), "id": fed[change.offset].id, "time_ns": fed[change.offset].time_ns}
                     for change in changes]
            return json.dumps(monitor.to_dict()), found
        except Exception:  # the join goes on: labels are never refused for the detection's sake
            self.failures += 1
            if key not in self._logged:
                self._logged.add(key)
                _logger.exception("sequential detection of %s %r failed; its labels are joined but not fed", *key)
            return None, []

    def _monitor(self, key: tuple[str, str], profile: ReferenceProfile, state: str | None) -> SequentialMonitor:
        """The stored monitor, or a fresh one when there is none, it cannot be read, or its detector, task or
        scale is not the one configured now (another setting, another profile)."""
        scale = reference_scale(profile)
        if state is not None:
            try:
                monitor = SequentialMonitor.from_dict(json.loads(state))
            except ValueError as exc:
                _logger.warning("sequential detection of %s %r starts afresh: %s", *key, exc)
            else:
                if (monitor.detector, monitor.task, monitor.scale) == (self.detector, profile.task, scale):
                    return monitor
        return SequentialMonitor(self.detector, profile.task, scale)


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def change_result(store: Store, watched: Monitored, change: dict[str, Any]) -> dict[str, Any]:
    """The result row of a change the monitor found (a window result row with the change's own fields)."""
    profile = watched.profile
    window, start, end = window_of(store, watched, int(change["time_ns"]), str(change["id"]))
    return {"model": profile.model, "model_version": profile.version, "period": "analysis", "window": window,
            "window_start": start, "window_end": end, "rows": None, "labeled_rows": None,
            "column": profile.target_column or "target", "kind": PERFORMANCE_CHANGE, "metric": change["detector"],
            "value": _finite(change["statistic"]), "lower_threshold": None,
            "upper_threshold": _finite(change["threshold"]), "alert": bool(change["worse"]), "p_value": None,
            "change_metric": change["metric"], "before": _finite(change["before"]),
            "after": _finite(change["after"]), "change_start_label": int(change["start_index"]),
            "change_label": int(change["index"]), "event_time": iso_utc_ns(int(change["time_ns"]))}


def window_of(store: Store, watched: Monitored, time_ns: int, pid: str) -> tuple[int, str | None, str | None]:
    """(number, start, end) of the analysis window a prediction is in now: row windows by its rank in (event time,
    id) order (bounds once the window was evaluated, else None), time windows by the non-empty windows before it
    (evaluated ones, then the ones with rows or sketch points after the newest evaluated)."""
    model, version = watched.profile.model, watched.profile.version
    if watched.scheme == ROWS:
        assert watched.window_rows
        base, n, evaluated = store.row_position(model, version, (time_ns, pid))
        if evaluated is not None and n < evaluated[2]:
            return base, iso_utc_ns(evaluated[0]), iso_utc_ns(evaluated[1])
        return base + n // watched.window_rows, None, None
    width = watched.window_ns
    assert width
    bucket = time_ns // width
    bounds = iso_utc_ns(bucket * width), iso_utc_ns((bucket + 1) * width)
    index = store.count_windows(model, version, TIME, bucket)
    newest = store.windows(model, version, TIME, last_before=MAX_NS)
    after = max(newest) + 1 if newest else 0
    if bucket > after:  # windows with data after the newest evaluated one, not evaluated yet, come before it
        begin, end = after * width, bucket * width
        buckets = set(store.time_bucket_keys(model, version, width, begin, end))
        buckets.update(t // width for t in store.sketch_starts(model, version, begin, end))
        index += len(buckets)
    return index, *bounds
