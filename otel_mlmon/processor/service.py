"""The processor: OTLP in, the store, event-time windows evaluated by the engine, window results out.

A model is monitored when a reference profile for its (name, version) is registered (at start or by
``POST /v1/references``), or bootstrapped from its first rows. Its stream is windowed by event time as the profile
says (``windows.py``: row windows in (event time, prediction id) order, or time windows of the Unix epoch); a window
is evaluated once the model's watermark passes it, and again whenever its rows, labels or sketch points change (late
rows up to ``max_lateness``, labels up to the label TTL). Features come from the events when the application captures
them (exact, like the batch path), else from the feature sketches (``assemble.py``).

Labels are also fed, as they join, to sequential change detection (``sequential.py``: the engine's ADWIN or
Page–Hinkley); ``tick`` first reports the changes it found, as ``performance_change`` results and alerts, without
waiting for any window to close.

``tick`` does the work of one period for the models that had data since the last one (and, every ``sweep_s``, for
all, so that idle models close their windows and expire their TTLs): its cost does not grow with idle models. A
model whose evaluation raises is logged and counted (per model) and does not stop the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

from otel_mlmon.engine.evaluate import Policy, WindowData, evaluate_window
from otel_mlmon.engine.fairness import FAIRNESS
from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.engine.results import SEGMENT, with_segment
from otel_mlmon.engine.segments import SegmentedProfile
from otel_mlmon.processor.alerts import AlertBook, Transition
from otel_mlmon.processor.assemble import MISSING, window_data, window_data_chunks
from otel_mlmon.processor.bootstrap import bootstrap_profile
from otel_mlmon.processor.decode import Decoded, PredictionBatch
from otel_mlmon.processor.export import AlertmanagerSink, OtlpExport, TensorBoardSink, WebhookSink
from otel_mlmon.processor.segmented import Reference, reference_from_dict, reference_rows, sensitive_rows, split, whole
from otel_mlmon.processor.sequential import Sequential, change_result
from otel_mlmon.processor.store import (
    MAX_NS,
    SKETCH,
    Store,
    StoredPoint,
    StoredRows,
    StoreUnavailable,
    Stream,
)
from otel_mlmon.processor.windows import (
    FAILED,
    ROWS,
    SECOND,
    SKETCHED,
    TIME,
    Monitored,
    RowWindow,
    TimeWindow,
    Timing,
    due_row_windows,
    due_time_windows,
    monitored,
    time_window,
)

_logger = logging.getLogger("otel_mlmon.processor")

DEFAULT_ALLOWED_LATENESS_S = 30.0  # a sketch interval's export after its end, plus Collector batching
DEFAULT_IDLE_TIMEOUT_S = 120.0  # two default sketch export intervals
DEFAULT_SKETCH_WINDOW_S = 3600.0
DEFAULT_MAX_FUTURE_S = 300.0
# Pruning deletes about this many predictions a transaction, then pauses so that requests waiting for the store go
# first (a request of 4096 rows waits one chunk, ~50 ms, not the whole sweep's 2-3 s).
PRUNE_CHUNK = 16_384
PRUNE_PAUSE_S = 0.002
# A closed window is revised for late data at most once per the revision interval, or per this many times the
# CPU its model's last window evaluation took, whichever is longer: revisions of a model then take at most about a
# tenth of a core, whatever its windows' size (a 250k-row window costs ~1 s), and small windows get their late
# labels within the interval.
REVISION_COST_RATIO = 10
FUTURE_EVENT = "record with an event time more than max_future_s ahead of the processor's clock, or none"


def _span(window: RowWindow | TimeWindow) -> tuple[int, int]:
    """The event times a window covers: its first and last rows' (row windows), its start and last nanosecond."""
    if isinstance(window, RowWindow):
        return window.first[0], window.last[0]
    return window.start_ns, window.end_ns - 1


def _latency(rows: StoredRows) -> float | None:
    """Mean seconds from a row's event time to its label's arrival (None: no labelled row)."""
    latencies = [(labeled - at) / 1e9 for at, labeled in zip(rows.times, rows.labeled_ns) if labeled is not None]
    return sum(latencies) / len(latencies) if latencies else None


def _window_data(profile: ReferenceProfile, index: int, window: RowWindow | TimeWindow, rows: StoredRows,
                 points: list[StoredPoint], stream: Stream) -> WindowData:
    """The engine's window of these rows and sketch points (of the whole window, or of one segment of it), with the
    rows fairness reads when the events carried sensitive values."""
    if isinstance(window, RowWindow):
        data = window_data(profile, index, rows, [], features=stream.captured)
    else:
        outputs = window.scheme == TIME
        sketched = any(p.sketch.get("type") != MISSING for p in points)
        data = window_data(profile, index, rows, points, features=stream.captured or sketched,
                           start_ns=window.start_ns, end_ns=window.end_ns, outputs=outputs)
    if isinstance(window, RowWindow) or window.scheme == TIME:
        data.sensitive = sensitive_rows(profile, rows, stream.sensitive)
    return data


class Processor:
    """The receiver's sink, the windows and the results of every monitored model."""

    def __init__(self, store: Store, policy: Policy | None = None, clock: Callable[[], int] = time.time_ns,
                 otlp: OtlpExport | None = None, alertmanager: AlertmanagerSink | None = None,
                 bootstrap_windows: int = 10, bootstrap_window_rows: int = 1000,
                 require_reference: bool = False, webhook: WebhookSink | None = None, *,
                 allowed_lateness_s: float = DEFAULT_ALLOWED_LATENESS_S,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S, sketch_window_s: float = DEFAULT_SKETCH_WINDOW_S,
                 max_future_s: float = DEFAULT_MAX_FUTURE_S, sweep_s: float = 60.0,
                 sequential_detector: str = "adwin", tensorboard: TensorBoardSink | None = None,
                 revision_interval_s: float = 0.0) -> None:
        self.store = store
        self.bootstrap_windows = bootstrap_windows
        self.bootstrap_window_rows = bootstrap_window_rows
        self.policy = policy or Policy()
        self.clock = clock
        self.timing = Timing(int(allowed_lateness_s * SECOND), int(idle_timeout_s * SECOND))
        self.sketch_window_ns = int(sketch_window_s * SECOND)
        self.max_future_ns = int(max_future_s * SECOND)
        self.sweep_ns = int(sweep_s * SECOND)
        self.revision_interval_ns = int(revision_interval_s * SECOND)
        self._evaluation_ns: dict[tuple[str, str], int] = {}  # CPU time of each model's last window evaluation
        self.monitored: dict[tuple[str, str], Monitored] = {}
        self.segmented: dict[tuple[str, str], SegmentedProfile] = {}  # models judged per segment too
        self.sequential = Sequential(sequential_detector, self.monitored)
        store.on_join = self.sequential.joined if sequential_detector != "off" else None
        self.alerts = AlertBook(store.path)
        self.otlp = otlp
        self.alertmanager = alertmanager
        self.webhook = webhook
        self.tensorboard = tensorboard
        self.receiver_counters: dict[str, int] = {}  # the HTTP receiver's, once the app is built
        self.failures: dict[tuple[str, str], int] = {}  # evaluation failures per model
        self.evaluated = 0  # window evaluations since the start (a window revised by late labels counts again)
        self.stopping = threading.Event()  # set: the tick stops between windows (what is left resumes later)
        self.require_reference = require_reference
        self._active: set[tuple[str, str]] = set(store.streams())  # models to look at next tick
        self._active_lock = threading.Lock()
        self._failed: dict[tuple[str, str], int] = {}  # model -> the touched count its tick failed on
        self._failed_windows: dict[tuple[str, str, str, int], str] = {}  # window -> the state it failed on
        self._swept_ns = 0
        self._alerted = False  # this tick sent transitions to Alertmanager (with the firing alerts when due)
        if otlp is not None:
            otlp.watch(self.counters, store.path)
            otlp.firing_state(self.alerts.firing())  # alerts that fired before a restart still fire
        for data in store.profiles():  # references registered before a restart
            self.register(reference_from_dict(data, "stored reference profile"), persist=False)

    def close(self) -> None:
        """Close the alert book's connection, then the store's (the last connection to close checkpoints the WAL:
        closed here, not whenever the interpreter's teardown gets to it)."""
        self.alerts.close()
        self.store.close()

    def counters(self) -> dict[str, int]:
        """Everything counted: the store's, the receiver's, failed alert deliveries and evaluations."""
        found = {**self.store.counters(), **self.receiver_counters}
        found["export_failures"] = sum(sink.failures for sink in (self.alertmanager, self.webhook) if sink is not None)
        found["evaluation_failures"] = sum(self.failures.values())
        found["windows_evaluated"] = self.evaluated
        found["sequential_failures"] = self.sequential.failures
        return found

    def failures_by_model(self) -> dict[str, int]:
        return {f"{model}@{version}": n for (model, version), n in sorted(self.failures.items())}

    def _activate(self, keys: Any) -> None:
        with self._active_lock:
            self._active.update(keys)

    # --- the sink ------------------------------------------------------------------------------------------
    def _in_time(self, decoded: Decoded, items: list[Any], time_of: Callable[[Any], int]) -> list[Any]:
        """Records with an event time, not too far in the future (a clock gone wrong would close every window)."""
        limit = self.clock() + self.max_future_ns
        kept = [item for item in items if 0 < time_of(item) <= limit]
        if len(kept) < len(items):
            decoded.rejected[FUTURE_EVENT] += len(items) - len(kept)
            decoded.accepted -= len(items) - len(kept)
        return kept

    def _rows_in_time(self, decoded: Decoded) -> list[PredictionBatch]:
        """Prediction rows with an event time not too far in the future; a record whose every row is out is refused
        (partial success), single rows of a record are dropped and counted."""
        limit = self.clock() + self.max_future_ns
        kept = []
        for batch in decoded.predictions:
            good = [i for i, t in enumerate(batch.row_times()) if 0 < t <= limit]
            if not good:
                decoded.rejected[FUTURE_EVENT] += 1
                decoded.accepted -= 1
                continue
            if len(good) < len(batch):
                decoded.rejected_rows[FUTURE_EVENT.replace("record with", "rows with")] += len(batch) - len(good)
                batch = batch.take(good)
            kept.append(batch)
        return kept

    def _refused(self, decoded: Decoded, refused: dict[str, int]) -> None:
        for reason, n in refused.items():
            decoded.rejected[reason] += n
            decoded.accepted -= n

    def accept_logs(self, decoded: Decoded, received_ns: int) -> None:
        predictions = self._rows_in_time(decoded)
        if self.require_reference:  # predictions of models nobody registered a profile for: partial success
            known = [b for b in predictions if (b.model, b.version) in self.monitored]
            unknown = len(predictions) - len(known)
            if unknown:
                decoded.rejected["prediction event of a model without a reference profile"] += unknown
                decoded.accepted -= unknown
                predictions = known
        decoded.predictions = predictions
        try:
            if predictions:
                self._refused(decoded, self.store.add_predictions(predictions, received_ns).refused)
            if decoded.labels:
                self._refused(decoded, self.store.add_labels(decoded.labels, received_ns).refused)
        finally:  # once committed (a tick that ran before would not see the data, and drop the model)
            self._activate({(b.model, b.version) for b in predictions} | {(b.model, b.version) for b in decoded.labels})

    def accept_metrics(self, decoded: Decoded, received_ns: int) -> None:
        points = self._in_time(decoded, decoded.sketches, lambda p: p.time_unix_nano)
        decoded.sketches = points
        if points:
            try:
                self._refused(decoded, self.store.add_sketches(points, received_ns).refused)
            finally:
                self._activate({(p.model, p.version) for p in points})

    # --- references ----------------------------------------------------------------------------------------
    def register(self, reference: Reference, persist: bool = True) -> None:
        """Monitor a model against a reference profile, or a segmented one (per segment too)."""
        profile = whole(reference)
        key = (profile.model, profile.version)
        if persist:
            self.store.put_profile(profile.model, profile.version, reference.to_dict())
        self.monitored[key] = monitored(profile, self.sketch_window_ns)
        if isinstance(reference, SegmentedProfile):
            self.segmented[key] = reference
        else:
            self.segmented.pop(key, None)
        self.store.put_results(profile.model, profile.version, reference_rows(reference, self.policy))
        self._failed.pop(key, None)
        for window in [w for w in self._failed_windows if w[:2] == key]:
            del self._failed_windows[window]
        self._activate([key])

    def bootstrap(self, key: tuple[str, str], stream: Stream, now: int) -> bool:
        """A model that streams without a reference gets one from its first ``bootstrap_windows`` windows of
        ``bootstrap_window_rows`` closed rows (0 windows: never); those windows are the reference period's."""
        if self.bootstrap_windows <= 0:
            return False
        needed = self.bootstrap_windows * self.bootstrap_window_rows
        keys = self.store.keys(*key, None, self.timing.close_ns(stream, now), limit=needed)
        if len(keys) < needed:
            return False
        rows = self.store.rows(*key, keys[0][:2], keys[-1][:2])
        profile = bootstrap_profile(*key, rows, self.bootstrap_window_rows, self.policy)
        if profile is None:
            return False
        self.register(profile)
        return True

    # --- windows -------------------------------------------------------------------------------------------
    def tick(self) -> int:
        """Evaluate every window that closed or changed since the last tick; windows evaluated."""
        now = self.clock()
        if not self.store.healthy:
            self.store.probe()
        try:  # the changes labels showed go out before any window is evaluated
            self.report_changes(now)
        except StoreUnavailable as exc:
            _logger.warning("the store is unavailable (%s): sequential changes are reported later", exc)
        except Exception:  # the service never dies on data
            _logger.exception("reporting sequential changes failed; retried at the next tick")
        with self._active_lock:
            keys, self._active = self._active, set()
        sweep = now - self._swept_ns >= self.sweep_ns
        if sweep:
            keys |= set(self.store.streams())
            self._swept_ns = now
        done = 0
        pending = sorted(keys)
        while pending:
            if self.stopping.is_set():
                break
            key = pending.pop(0)
            try:
                done += self._tick_model(key, now)
            except StoreUnavailable as exc:
                _logger.warning("the store is unavailable (%s): windows of %s %r wait", exc, *key)
                self._activate([key])
            except Exception:  # the service never dies on data: log, count, go on with the other models
                _logger.exception("evaluating %s %r failed; retried when its data or reference changes", *key)
                self.failures[key] = self.failures.get(key, 0) + 1
                self._failed[key] = self._change_count(key)
        self._activate(pending)  # stopped early: the rest resumes at the next tick (or after a restart)
        if sweep and not pending:  # after the evaluations: what they needed is evaluated before it goes
            try:
                self.prune(now)
            except StoreUnavailable as exc:
                _logger.warning("pruning waits: the store is unavailable (%s)", exc)
        # Firing alerts are resent so that Alertmanager keeps them, once a tick (a send of this tick that failed is
        # retried at the next one, not at once).
        if self.alertmanager is not None and not self._alerted:
            self.alertmanager.send([], self.alerts.firing(), now)
        self._alerted = False
        return done

    def _change_count(self, key: tuple[str, str]) -> int:
        return sum(n for *_, n in self.store.touched(*key))

    def _tick_model(self, key: tuple[str, str], now: int) -> int:
        stream = self.store.stream(*key)
        if stream is None:
            return 0
        if now - stream.arrived_ns < self.timing.idle_timeout_ns + self.sweep_ns:
            self._activate([key])  # not idle yet: its windows close as its watermark moves
        clock_ns = self.timing.clock_ns(stream, now)
        self.store.expire(*key, clock_ns, now)
        changes = self.store.touched(*key)
        if key in self._failed:
            if self._failed[key] == sum(n for *_, n in changes):
                return 0  # it failed on this very data: wait for new rows, labels or reference
            del self._failed[key]
        watched = self.monitored.get(key)
        if watched is None and not self.bootstrap(key, stream, now):
            self.store.untouch(*key, changes)  # the first windows are found by scanning when it is monitored
            return 0
        watched = self.monitored[key]
        close_ns = self.timing.close_ns(stream, now)
        done = 0
        handled: list[tuple[str, int, int]] = []
        revise_before = now - max(self.revision_interval_ns, REVISION_COST_RATIO * self._evaluation_ns.get(key, 0)) \
            if self.revision_interval_ns else None
        if watched.scheme == ROWS:
            assert watched.window_rows is not None
            row_windows, handled, waiting = due_row_windows(self.store, *key, watched.window_rows, changes,
                                                            close_ns, revise_before)
            if waiting:
                self._activate([key])  # a revision waits for its interval: looked at again at the next tick
            for row_window in row_windows:
                if self.stopping.is_set():
                    return done
                done += self._evaluate_once(watched, row_window, stream, now)
        schemes = [(TIME, watched.window_ns)] if watched.scheme == TIME else \
            ([] if stream.captured else [(SKETCHED, watched.sketch_window_ns)])
        if watched.scheme == ROWS and stream.captured:
            handled += [c for c in changes if c[0] == SKETCH]  # captured features win over sketches
        for scheme, width in schemes:
            assert width
            windows, accounted, waiting = due_time_windows(self.store, *key, scheme, width, changes, close_ns,
                                                           revise_before)
            handled += accounted
            if waiting:
                self._activate([key])  # a revision waits for its interval: looked at again at the next tick
            queue = list(windows)
            while queue:
                if self.stopping.is_set():
                    return done
                next_window = queue.pop(0)
                queue = self._renumber(watched, next_window, queue)
                done += self._evaluate_once(watched, next_window, stream, now)
        self.store.untouch(*key, handled)
        return done

    def _evaluate_once(self, watched: Monitored, window: RowWindow | TimeWindow, stream: Stream, now: int) -> int:
        """Evaluate a window (1), unless it failed on this very data before (0): a window whose evaluation raises is
        logged and counted once, and tried again when its data changes; the model's other windows go on."""
        failed = (watched.profile.model, watched.profile.version, window.scheme, window.key)
        if self._failed_windows.get(failed) == window.state:
            return 0
        began = time.thread_time_ns()
        try:
            self.evaluate(watched, window, stream, now)
            self._evaluation_ns[failed[:2]] = time.thread_time_ns() - began
        except StoreUnavailable:
            raise
        except Exception:
            _logger.exception("evaluating %s window %s of %s %r failed; tried again when its data or reference "
                              "changes", window.scheme, window.key, *failed[:2])
            self.failures[failed[:2]] = self.failures.get(failed[:2], 0) + 1
            self._failed_windows[failed] = window.state
            # Recorded as failed (a state no data has), so that a change to its rows or labels finds it again.
            self.store.put_results(*failed[:2], [], window=(window.scheme, window.key, *_span(window),
                                                            FAILED + window.state), evaluated_ns=now)
            return 0
        self._failed_windows.pop(failed, None)
        self.evaluated += 1
        return 1

    def _renumber(self, watched: Monitored, window: TimeWindow, queue: list[TimeWindow]) -> list[TimeWindow]:
        """A time window new before windows already evaluated moves their numbers (windows count from 0 over the
        non-empty ones): their results are dropped and they are evaluated again, after it."""
        model, version = watched.profile.model, watched.profile.version
        stored = self.store.windows(model, version, window.scheme, keys=[window.key])
        if stored:
            return queue
        later = self.store.windows(model, version, window.scheme, after=window.key)
        if not later:
            return queue
        index = self.store.count_windows(model, version, window.scheme, window.key)
        self.store.delete_results(model, version, "analysis", index, list(watched.profile.columns))
        self.store.forget_windows(model, version, window.scheme, later)
        queued = {w.key for w in queue}
        extra = [time_window(self.store, model, version, window.scheme, window.width_ns, k)
                 for k in sorted(later) if k not in queued]
        return sorted([*queue, *extra], key=lambda w: w.key)

    def evaluate(self, watched: Monitored, window: RowWindow | TimeWindow, stream: Stream, now: int) -> None:
        profile = watched.profile
        model, version = profile.model, profile.version
        # A segmented model's windows, and those of a stream with sensitive values, are read whole (each row's
        # segment and group are needed); the others in chunks (``Store.row_chunks``: a bounded peak of memory).
        whole_read = (model, version) in self.segmented or stream.sensitive is not None
        points: list[StoredPoint] = []
        found: tuple[WindowData, float | None] | None = None
        rows = StoredRows.empty()
        if isinstance(window, RowWindow):
            index = window.index
            if not whole_read:
                with closing(self.store.row_chunks(model, version, window.first, window.last)) as chunks:
                    found = window_data_chunks(profile, index, chunks, [], features=stream.captured)
            if found is None:  # multiclass scores or captured features: read whole, row by row
                rows = self.store.stored_rows(model, version, window.first, window.last)
        else:
            index = self.store.count_windows(model, version, window.scheme, window.key)
            outputs = window.scheme == TIME
            points = self.store.sketch_points(model, version, window.start_ns, window.end_ns)
            if outputs and not whole_read:
                sketched = any(p.sketch.get("type") != MISSING for p in points)
                with closing(self.store.row_chunks(model, version, start_ns=window.start_ns,
                                                   end_ns=window.end_ns)) as chunks:
                    found = window_data_chunks(profile, index, chunks, points, features=stream.captured or sketched,
                                               start_ns=window.start_ns, end_ns=window.end_ns)
            if found is None and outputs:
                rows = self.store.stored_rows(model, version, start_ns=window.start_ns, end_ns=window.end_ns)
        data, latency = found if found is not None else (
            _window_data(profile, index, window, rows, points, stream), _latency(rows))
        if isinstance(window, TimeWindow):
            data.rows = window.rows
        results = [r.as_json() for r in evaluate_window(profile, data, self.policy)]
        judged = set(data.columns or ())
        segmented = self.segmented.get((model, version))
        if segmented is not None:  # then each segment's rows against its own reference (engine.segments's rule)
            results = [{**r, SEGMENT: None} for r in results]
            for name, part_profile, part_rows, part_points in split(segmented, rows, points):
                part = _window_data(part_profile, index, window, part_rows, part_points, stream)
                part.start, part.end = data.start, data.end  # a segment's window is the window
                results += [with_segment(r, name).as_json()
                            for r in evaluate_window(part_profile, part, self.policy)]
                judged |= set(part.columns or ())
        judged |= {r["column"] for r in results if r["kind"] == FAIRNESS}  # revised with the window too
        self.store.put_results(model, version, results, window=(window.scheme, window.key, *_span(window),
                                                                window.state),
                               evaluated_ns=now, replace=("analysis", sorted(judged)))
        transitions = self.alerts.update(results, now)
        if self.otlp is not None:
            self.otlp.results(results, latency)
        self._send(transitions, now)
        if self.tensorboard is not None:
            self.tensorboard.write(results)

    def _send(self, transitions: list[Transition], now: int) -> None:
        """Alert transitions to the sinks: OTLP ``ml.alert`` events, Alertmanager, the webhook."""
        if self.otlp is not None:
            self.otlp.transitions(transitions)
        if self.alertmanager is not None and transitions:
            self.alertmanager.send(transitions, self.alerts.firing(), now)
            self._alerted = True
        if self.webhook is not None and transitions:
            self.webhook.send(transitions, now)

    def report_changes(self, now: int) -> int:
        """The changes sequential detection found since the last call: each a ``performance_change`` result in its
        prediction's window and an alert transition when it moves the alert; changes reported. A change is
        forgotten only once reported (a restart in between reports it again: the same result row, no second
        transition)."""
        reported = 0
        while True:
            found = self.store.sequential_changes()
            if not found:
                return reported
            rows: list[dict[str, Any]] = []
            for _, model, version, change in found:
                watched = self.monitored.get((model, version))
                if watched is None:
                    continue  # its reference was replaced by nothing: nothing to judge it against
                try:
                    rows.append(change_result(self.store, watched, change))
                except StoreUnavailable:
                    raise
                except Exception:  # a change that cannot be reported must not hold back the others
                    _logger.exception("a sequential change of %s %r could not be reported: %r", model, version,
                                      change)
            for model, version in dict.fromkeys((r["model"], r["model_version"]) for r in rows):
                self.store.put_results(model, version, [r for r in rows if (r["model"], r["model_version"]) ==
                                                        (model, version)])
            self._send(self.alerts.update(rows, now), now)
            self.store.forget_sequential_changes([seq for seq, *_ in found])
            reported += len(rows)

    def prune(self, now: int) -> int:
        """Delete rows and sketch points that no window can need again: past the lateness bound and the label TTL
        of their model's clock, plus the store's retention, and before its newest evaluated window (nothing is
        deleted before it was evaluated); rows deleted."""
        deleted = 0
        for key, stream in self.store.streams().items():
            clock_ns = self.timing.clock_ns(stream, now)
            before = min(stream.latest_ns - self.store.max_lateness_ns, clock_ns - self.store.label_ttl_ns) \
                - self.store.retention_ns
            if before <= 0:
                continue
            cut = self._cut(key, before)
            while not self.stopping.is_set():  # stopped: the rest goes at the next sweep
                n, finished = self.store.prune(*key, cut, limit=PRUNE_CHUNK)
                deleted += n
                if finished:
                    break
                time.sleep(PRUNE_PAUSE_S)  # the requests waiting for the store go first
        return deleted

    def _cut(self, key: tuple[str, str], before: int) -> int:
        """``before``, moved back to the start of the window it falls in (a window is kept whole) and to the start
        of the newest evaluated window of each scheme."""
        watched = self.monitored.get(key)
        if watched is None:
            return before
        schemes: list[tuple[str, int | None]] = [(ROWS, None)] if watched.scheme == ROWS else \
            [(TIME, watched.window_ns)]
        if watched.scheme == ROWS:
            schemes.append((SKETCHED, watched.sketch_window_ns))
        for scheme, width in schemes:
            newest = self.store.windows(*key, scheme, last_before=MAX_NS)
            if newest:
                before = min(before, next(iter(newest.values()))[0])
            if width:
                before = before // width * width
            else:
                found = self.store.windows(*key, scheme, overlapping=(before, before + 1))
                before = min([before, *(first for first, _, _ in found.values())])
        return before
