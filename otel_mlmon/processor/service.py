"""The processor: OTLP in, the store, streaming windows evaluated by the engine, window results out.

A model is monitored when a reference profile for its (name, version) is registered (at start or by
``POST /v1/references``). Its stream is windowed as the profile says: by rows in arrival order (``chunk_size``,
or the reference's rows per window for a ``chunks`` profile), or by event time (``window``; a window closes when
the newest event time, or the clock, is ``GRACE_S`` past its end). A window is evaluated as soon as it is
complete, and again whenever labels for its rows arrive (until the label TTL), so its performance results are
revised. Features come from the events when the application captures them (exact, like the batch path), else
from the feature sketches sent as metrics in the window's time span, when they use the profile's bucketing
(instrument with ``reference=``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from otel_mlmon.engine.drift import NUMERIC
from otel_mlmon.engine.evaluate import LabeledRows, Policy, WindowData, evaluate_window, reference_results
from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.engine.results import iso_utc_ns
from otel_mlmon.processor.alerts import AlertBook
from otel_mlmon.processor.decode import Decoded
from otel_mlmon.processor.export import AlertmanagerSink, OtlpExport, WebhookSink
from otel_mlmon.processor.store import Joined, Store
from otel_mlmon.sketch import CategoricalSketch, NumericSketch, category_key

_logger = logging.getLogger("otel_mlmon.processor")

GRACE_S = 2.0  # a time window closes this long after its end (event time of the newest row, or the clock)


@dataclass
class Monitored:
    """A monitored model and how its stream is windowed: by rows (``window_rows``) or by event time."""

    profile: ReferenceProfile
    window_rows: int | None
    window_ns: int | None

    def bucketing(self) -> tuple[str, int]:
        return ("seq", self.window_rows) if self.window_rows else ("time_ns", int(self.window_ns or 0))


def windowing(profile: ReferenceProfile) -> Monitored:
    spec = profile.window
    if spec.chunk_size is not None:
        return Monitored(profile, spec.chunk_size, None)
    if spec.chunks is not None:  # a count of windows means nothing for a stream: the reference's rows per window
        return Monitored(profile, max(1, math.ceil(profile.rows / spec.chunks)), None)
    return Monitored(profile, None, int((spec.seconds or 0) * 1e9))


class Processor:
    """The receiver's sink, the windows and the results of every monitored model."""

    def __init__(self, store: Store, policy: Policy | None = None, clock: Callable[[], int] = time.time_ns,
                 otlp: OtlpExport | None = None, alertmanager: AlertmanagerSink | None = None,
                 bootstrap_windows: int = 10, bootstrap_window_rows: int = 1000,
                 require_reference: bool = False, webhook: WebhookSink | None = None) -> None:
        self.store = store
        self.bootstrap_windows = bootstrap_windows
        self.bootstrap_window_rows = bootstrap_window_rows
        self.policy = policy or Policy()
        self.clock = clock
        self.monitored: dict[tuple[str, str], Monitored] = {}
        self.alerts = AlertBook(store.path)
        self.otlp = otlp
        self.alertmanager = alertmanager
        self.webhook = webhook
        self.receiver_counters: dict[str, int] = {}  # the HTTP receiver's, once app() made it
        self.failures: dict[str, int] = {}
        # windows whose evaluation raised, with the profile and (rows, labeled rows) they failed on: retried when
        # either changes, not at every tick (a deterministic failure would log a traceback a second forever)
        self._failed: dict[tuple[str, str, int], tuple[ReferenceProfile, Any]] = {}
        self.require_reference = require_reference
        if otlp is not None:
            otlp.watch(self.counters, store.path)
            otlp.firing_state(self.alerts.firing())  # alerts that fired before a restart still fire
        for data in store.profiles():  # references registered before a restart
            self.register(ReferenceProfile.from_dict(data, "stored reference profile"), persist=False)

    def counters(self) -> dict[str, int]:
        """Everything counted: the store's, the receiver's, and failed alert deliveries."""
        found = {**self.store.counters(), **self.receiver_counters}
        found["export_failures"] = sum(sink.failures for sink in (self.alertmanager, self.webhook) if sink is not None)
        found["evaluation_failures"] = self.failures.get("evaluation", 0)
        return found

    # --- the sink ------------------------------------------------------------------------------------------
    def accept_logs(self, decoded: Decoded, received_ns: int) -> None:
        if self.require_reference:  # predictions of models nobody registered a profile for: partial success
            known = [b for b in decoded.predictions if (b.model, b.version) in self.monitored]
            unknown = len(decoded.predictions) - len(known)
            if unknown:
                decoded.rejected["prediction event of a model without a reference profile"] += unknown
                decoded.accepted -= unknown
                decoded.predictions = known
        if decoded.predictions:
            self.store.add_predictions(decoded.predictions, received_ns)
        if decoded.labels:
            self.store.add_labels(decoded.labels, received_ns)

    def accept_metrics(self, decoded: Decoded, received_ns: int) -> None:
        if decoded.sketches:
            self.store.add_sketches(decoded.sketches)

    # --- references ----------------------------------------------------------------------------------------
    def register(self, profile: ReferenceProfile, persist: bool = True) -> None:
        key = (profile.model, profile.version)
        self.monitored[key] = windowing(profile)
        if persist:
            self.store.put_profile(profile.model, profile.version, profile.to_dict())
        rows = [r.as_json() for r in reference_results(profile, self.policy)]
        self.store.put_results(profile.model, profile.version, None, rows, self.clock())

    def bootstrap(self) -> list[tuple[str, str]]:
        """Models that stream without a reference get one from their first ``bootstrap_windows`` windows of
        ``bootstrap_window_rows`` rows (0 windows: never); those windows are then the reference period's."""
        if self.bootstrap_windows <= 0:
            return []
        made = []
        needed = self.bootstrap_windows * self.bootstrap_window_rows
        for model, version in self.store.models():
            if (model, version) in self.monitored or self.store.next_seq(model, version) < needed:
                continue
            rows = self.store.rows(model, version, 0, needed)
            profile = bootstrap_profile(model, version, rows, self.bootstrap_window_rows, self.policy)
            if profile is not None:
                self.register(profile)
                made.append((model, version))
        return made

    # --- windows -------------------------------------------------------------------------------------------
    def tick(self) -> int:
        """Expire TTLs, evaluate complete windows and re-evaluate windows with new labels; windows evaluated."""
        now = self.clock()
        self.store.expire(now)
        self.bootstrap()
        done = 0
        for (model, version), monitored in list(self.monitored.items()):  # POST /v1/references may add one
            by, width = monitored.bucketing()
            buckets = self.store.buckets(model, version, by, width)
            evaluated = self.store.evaluated(model, version)
            if by == "seq":
                complete = [b for b, (rows, _) in sorted(buckets.items()) if rows == width]
            else:  # a time window closes when the stream's event time, or the clock, is past its end
                horizon = max(self.store.latest_time(model, version) or 0, now) - int(GRACE_S * 1e9)
                complete = [b for b in sorted(buckets) if (b + 1) * width <= horizon]
            order = {bucket: index for index, bucket in enumerate(sorted(buckets))}  # time windows count from 0
            for bucket in complete:
                index = bucket if by == "seq" else order[bucket]
                last = evaluated.get(index)
                if last is None or buckets[bucket][1] > last:  # new, or labels arrived since
                    key = (model, version, index)
                    failed = self._failed.get(key)
                    if failed is not None and failed[0] is monitored.profile and failed[1] == buckets[bucket]:
                        continue  # it failed on this very data: wait for new rows, labels or reference
                    try:
                        self.evaluate(monitored, bucket, index, now)
                        self._failed.pop(key, None)
                        done += 1
                    except Exception:  # the service never dies on data: log, count, go on
                        _logger.exception("evaluating window %s of %s %r failed; retried when its data or "
                                          "reference changes", index, model, version)
                        self.failures["evaluation"] = self.failures.get("evaluation", 0) + 1
                        self._failed[key] = (monitored.profile, buckets[bucket])
        if self.alertmanager is not None:  # firing alerts are resent so that Alertmanager keeps them
            self.alertmanager.send([], self.alerts.firing(), now)
        return done

    def evaluate(self, monitored: Monitored, bucket: int, index: int, now: int) -> None:
        profile = monitored.profile
        by, width = monitored.bucketing()
        rows = self.store.rows(profile.model, profile.version, bucket * width, (bucket + 1) * width, by)
        data = self.window_data(profile, index, rows)
        if by == "time_ns":
            data.start, data.end = iso_utc_ns(bucket * width), iso_utc_ns((bucket + 1) * width)
        results = [r.as_json() for r in evaluate_window(profile, data, self.policy)]
        self.store.put_results(profile.model, profile.version, index, results, now)
        transitions = self.alerts.update(results, now)
        if self.otlp is not None:
            latencies = [(r.labeled_ns - r.time_ns) / 1e9 for r in rows if r.labeled_ns is not None]
            self.otlp.results(results, sum(latencies) / len(latencies) if latencies else None)
            self.otlp.transitions(transitions)
        if self.alertmanager is not None and transitions:
            self.alertmanager.send(transitions, self.alerts.firing(), now)
        if self.webhook is not None and transitions:
            self.webhook.send(transitions, now)

    def window_data(self, profile: ReferenceProfile, window: int, rows: list[Joined]) -> WindowData:
        columns: dict[str, list[Any]] = {}
        labeled = LabeledRows()
        score_keys = {column: ("" if len(profile.score_columns) == 1 and len(profile.classes) == 2 else label)
                      for label, column in profile.score_columns.items()}
        for row in rows:
            outputs = row.outputs
            for column in profile.columns.values():
                if column.role == "prediction":
                    value = outputs.get("value") if profile.task == "regression" else outputs.get("label")
                elif column.role == "score":
                    value = outputs.get("scores", {}).get(score_keys.get(column.name, ""))
                elif column.role == "feature":
                    value = outputs.get("features", {}).get(column.name, _ABSENT)
                else:
                    continue
                if value is not _ABSENT:
                    columns.setdefault(column.name, []).append(value)
            if row.truth is not None:
                self._label(profile, row, labeled)
        sketches: dict[str, NumericSketch | CategoricalSketch] = {}
        for column in profile.columns.values():
            values = columns.get(column.name)
            if values is None:
                continue
            if column.kind == NUMERIC:
                assert isinstance(column.sketch, NumericSketch)
                sketch: NumericSketch | CategoricalSketch = NumericSketch(column.sketch.center, column.sketch.scale,
                                                                          column.sketch.precision)
            else:
                sketch = CategoricalSketch()
            sketch.update(np.asarray(values, dtype=object))
            sketches[column.name] = sketch
        if rows:
            self._sketched_features(profile, rows[0].time_ns, rows[-1].time_ns, sketches)
        times = [r.time_ns for r in rows]
        return WindowData("analysis", window, len(rows), sketches, labeled,
                          iso_utc_ns(min(times)) if times else None, iso_utc_ns(max(times)) if times else None)

    def _label(self, profile: ReferenceProfile, row: Joined, labeled: LabeledRows) -> None:
        outputs = row.outputs
        if profile.task == "regression":
            if outputs.get("value") is not None:
                labeled.y_true.append(float(row.truth))
                labeled.y_pred.append(float(outputs["value"]))
            return
        if outputs.get("label") is None:
            return
        labeled.y_true.append(category_key(row.truth))
        labeled.y_pred.append(category_key(outputs["label"]))
        scores = outputs.get("scores", {})
        if len(profile.classes) == 2 and "" in scores:
            labeled.scores.append([1.0 - scores[""], scores[""]])
        elif scores and all(c in scores for c in profile.classes):
            labeled.scores.append([scores[c] for c in profile.classes])

    def _sketched_features(self, profile: ReferenceProfile, first_ns: int, last_ns: int,
                           sketches: dict[str, NumericSketch | CategoricalSketch]) -> None:
        """Features not captured in the events, from the sketch points sent in the window's time span."""
        captured = set(sketches)
        for column, data in self.store.sketches(profile.model, profile.version, first_ns, last_ns):
            reference = profile.columns.get(column)
            if column in captured or reference is None or reference.role != "feature":
                continue
            sketch: NumericSketch | CategoricalSketch
            if data.get("type") == "numeric":
                sketch = NumericSketch.from_dict(data)
                if not isinstance(reference.sketch, NumericSketch) or not sketch.same_bucketing(reference.sketch):
                    continue  # another bucketing cannot be compared exactly: instrument with reference=
            else:
                sketch = CategoricalSketch.from_dict(data)
            if column in sketches:
                sketches[column].merge(sketch)  # type: ignore[arg-type]
            else:
                sketches[column] = sketch

_ABSENT = object()


def bootstrap_profile(model: str, version: str, rows: list[Joined], window_rows: int,
                      policy: Policy | None = None) -> ReferenceProfile | None:
    """A reference profile from a model's first rows: its outputs, and its features when captured."""
    from otel_mlmon.engine.columns import profile_from_columns
    from otel_mlmon.engine.windows import WindowSpec

    if not rows:
        return None
    first = rows[0].outputs
    columns: dict[str, np.ndarray] = {}
    scores = first.get("scores", {})
    if first.get("value") is not None:
        task = "regression"
        columns["prediction"] = np.asarray([r.outputs.get("value", np.nan) for r in rows], dtype=np.float64)
    else:
        task = "classification"
        if first.get("label") is not None:
            columns["prediction"] = np.asarray([r.outputs.get("label") for r in rows], dtype=object)
    for key in scores:
        columns[f"score_{key}" if key else "score"] = np.asarray(
            [r.outputs.get("scores", {}).get(key, np.nan) for r in rows], dtype=np.float64)
    for name in first.get("features", {}):
        values = [r.outputs.get("features", {}).get(name) for r in rows]
        numeric = all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values)
        columns[name] = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64) if numeric \
            else np.asarray(values, dtype=object)
    if not columns:
        return None
    profile, _ = profile_from_columns(columns, WindowSpec(chunk_size=window_rows), model=model, version=version,
                                      task=task, policy=policy)
    seen = {category_key(r.outputs.get("label")) for r in rows} if task == "classification" else set()
    classes = sorted(c for c in seen if c is not None)
    if "" in scores and len(classes) != 2:
        classes = ["0", "1"]
    profile.classes = classes
    for name, column in profile.columns.items():
        if name == "prediction":
            column.role = "prediction"
        elif name == "score" or name.startswith("score_"):
            column.role = "score"
    profile.prediction_column = "prediction" if "prediction" in profile.columns else None
    profile.score_columns = ({profile.classes[-1]: "score"} if "score" in profile.columns and profile.classes else
                             {name[len("score_"):]: name for name in profile.columns if name.startswith("score_")})
    profile.target_column = "target"
    return profile
