"""Event-time windows of a model's stream: which windows exist, when they close, which changed and are due.

Three schemes, each a kind of typed window key:
- ``rows`` (``RowWindow``): window k holds the rows of rank ``[k·N, (k+1)·N)`` in (event time, prediction id)
  order, whatever order they arrived in. A late row shifts the windows after it: they are evaluated again.
- ``time`` (``TimeWindow``): window k is ``[k·W, (k+1)·W)`` of the Unix epoch; rows by their event time, sketch
  points by their start time (the instrumentation cuts sketch exports at clock-aligned interval boundaries).
- ``sketch``: the time windows of a row-windowed model whose features come only from sketches (its events carry
  no captured features): ``sketch_window`` wide, judging the features alone.

A window is evaluated once it is closed — the model's watermark (its latest event time less ``allowed_lateness``)
is past its end, or the model has been idle for ``idle_timeout`` of processing time (then every window with data
closes, a last partial one included) — and again whenever a change recorded in the store's ``touched`` table
(rows, labels, sketch points, to the second of event time) alters its data signature (``state``); for late labels
and sketch points at most once per the processor's revision interval (``revise_before_ns``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.processor.store import LABEL, MAX_NS, ROW, SKETCH, Store, Stream

ROWS, TIME, SKETCHED = "rows", "time", "sketch"  # scheme names, as stored in the windows table
SECOND = 1_000_000_000


@dataclass(frozen=True)
class Timing:
    """When windows close: ``allowed_lateness_ns`` behind the latest event time, or all of them after
    ``idle_timeout_ns`` without data."""

    allowed_lateness_ns: int
    idle_timeout_ns: int

    def close_ns(self, stream: Stream, now_ns: int) -> int:
        """Windows ending at or before this are closed (``MAX_NS``: the model is idle, every window closes)."""
        if now_ns - stream.arrived_ns >= self.idle_timeout_ns:
            return MAX_NS
        return stream.latest_ns - self.allowed_lateness_ns

    def clock_ns(self, stream: Stream, now_ns: int) -> int:
        """The model's event-time clock for TTLs: its latest event time, moved on by processing time while idle."""
        return stream.latest_ns + max(0, now_ns - stream.arrived_ns - self.idle_timeout_ns)


@dataclass(frozen=True)
class RowWindow:
    key: int  # k: ranks [k·size, (k+1)·size)
    first: tuple[int, str]  # (event time, id) of its first and last rows
    last: tuple[int, str]
    rows: int
    labeled: int
    scheme: str = ROWS

    @property
    def index(self) -> int:
        return self.key

    @property
    def state(self) -> str:
        return json.dumps([self.rows, self.labeled, list(self.first), list(self.last)])


@dataclass(frozen=True)
class TimeWindow:
    key: int  # k: [k·width, (k+1)·width)
    width_ns: int
    rows: int
    labeled: int
    points: int
    scheme: str = TIME

    @property
    def start_ns(self) -> int:
        return self.key * self.width_ns

    @property
    def end_ns(self) -> int:
        return (self.key + 1) * self.width_ns

    @property
    def state(self) -> str:
        return json.dumps([self.rows, self.labeled, self.points])


@dataclass(frozen=True)
class Monitored:
    """A monitored model and how its stream is windowed: by rows (``window_rows``) or by event time
    (``window_ns``); features from sketches alone on time windows of ``sketch_window_ns`` when by rows."""

    profile: ReferenceProfile
    window_rows: int | None
    window_ns: int | None
    sketch_window_ns: int

    @property
    def scheme(self) -> str:
        return ROWS if self.window_rows else TIME


def monitored(profile: ReferenceProfile, sketch_window_ns: int) -> Monitored:
    spec = profile.window
    if spec.chunk_size is not None:
        return Monitored(profile, spec.chunk_size, None, sketch_window_ns)
    if spec.chunks is not None:  # a count of windows means nothing for a stream: the reference's rows per window
        return Monitored(profile, max(1, math.ceil(profile.rows / spec.chunks)), None, sketch_window_ns)
    return Monitored(profile, None, int((spec.seconds or 0) * SECOND), int((spec.seconds or 0) * SECOND))


FAILED = "failed "  # prefixes the state of a window whose evaluation failed (no data has that state)


def row_state(state: str) -> tuple[int, int, list, list]:
    """(rows, labeled rows, first key, last key) of a row window's recorded state."""
    rows, labeled, first, last = json.loads(state.removeprefix(FAILED))
    return int(rows), int(labeled), first, last


def due_row_windows(store: Store, model: str, version: str, size: int, changes: list[tuple[str, int, int]],
                    close_ns: int, revise_before_ns: int | None = None
                    ) -> tuple[list[RowWindow], list[tuple[str, int, int]], bool]:
    """Closed row windows whose data changed since they were evaluated (or never were), in key order, the changes
    they account for, and whether a revision waits.

    As for time windows (``due_time_windows``), a window evaluated after ``revise_before_ns`` is not revised yet
    for labels that arrived since: the label changes that touch it stay recorded and it is revised once, later,
    with all of them. Late rows are not held back: they move the rank of every row after them, so the windows
    they shift are evaluated at once (a late row is also bounded by the store's lateness)."""
    inserted = [t for kind, t, _ in changes if kind == ROW]
    bound = min(inserted) * SECOND if inserted else MAX_NS
    base = _full_window_before(store, model, version, size, bound)
    after: tuple[int, str] | None = None
    first: tuple[int, str] | None = None
    key = 0
    if base is not None:
        after, key = base[1], base[0] + 1
    if base is None:  # nothing evaluated before the change: from the start, or from the oldest window pruning kept
        kept = store.earliest_window(model, version, ROWS)
        if kept is not None and kept[0] > 0:  # windows before it were pruned (a late row before them is refused)
            key, (_, _, state) = kept
            _, _, kept_first, _ = row_state(state)
            first = (int(kept_first[0]), str(kept_first[1]))
    found: dict[int, RowWindow] = {}
    keys = store.keys(model, version, after, close_ns, first=first)
    for begin in range(0, len(keys), size):
        chunk = keys[begin: begin + size]
        if len(chunk) < size and close_ns != MAX_NS:
            break  # the open window: not complete, the model not idle
        found[key] = RowWindow(key, chunk[0][:2], chunk[-1][:2], len(chunk), sum(1 for *_, lab in chunk if lab))
        key += 1
    handled = [c for c in changes if c[0] == ROW]
    labeled: dict[tuple[str, int, int], dict[int, tuple[int, int, str]]] = {}
    for change in changes:  # labels of rows in windows evaluated before
        kind, t, _ = change
        if kind == LABEL:
            labeled[change] = store.windows(model, version, ROWS, overlapping=(t * SECOND, (t + 1) * SECOND))
    waiting: set[int] = set()
    if revise_before_ns is not None and labeled:
        touched = set().union(*labeled.values()) - set(found)
        waiting = {k for k, at in store.evaluated_at(model, version, ROWS, touched).items() if at > revise_before_ns}
    for change, overlapping in labeled.items():
        if waiting & set(overlapping):
            continue  # recorded until its window's revision is due
        handled.append(change)
        for k, (_, _, state) in overlapping.items():
            if k in found:
                continue
            _, _, begins, ends = row_state(state)
            first_key, last_key = (int(begins[0]), str(begins[1])), (int(ends[0]), str(ends[1]))
            found[k] = RowWindow(k, first_key, last_key, *store.count_between(model, version, first_key, last_key))
    stored = store.windows(model, version, ROWS, keys=found)
    due = [w for k, w in sorted(found.items()) if k not in stored or stored[k][2] != w.state]
    return due, handled, bool(waiting)


def _full_window_before(store: Store, model: str, version: str, size: int,
                        bound_ns: int) -> tuple[int, tuple[int, str]] | None:
    """(key, last row key) of the last complete evaluated row window that ends before ``bound_ns``."""
    for _ in range(2):
        found = store.windows(model, version, ROWS, last_before=bound_ns)
        if not found:
            return None
        key, (_, _, state) = next(iter(found.items()))
        rows, _, first, last = row_state(state)
        if rows == size and not state.startswith(FAILED):
            return key, (int(last[0]), str(last[1]))
        bound_ns = min(bound_ns, int(first[0]))  # a partial (idle) or failed window: the one before it
    return None


def time_window(store: Store, model: str, version: str, scheme: str, width_ns: int, bucket: int) -> TimeWindow:
    """The time window ``bucket`` as the store holds it now."""
    start, end = bucket * width_ns, (bucket + 1) * width_ns
    rows, labeled = store.time_buckets(model, version, width_ns, start, end).get(bucket, (0, 0))
    return TimeWindow(bucket, width_ns, rows, labeled, len(store.sketch_points(model, version, start, end)), scheme)


def due_time_windows(store: Store, model: str, version: str, scheme: str, width_ns: int,
                     changes: list[tuple[str, int, int]], close_ns: int, revise_before_ns: int | None = None
                     ) -> tuple[list[TimeWindow], list[tuple[str, int, int]], bool]:
    """Closed time windows that were never evaluated or whose data changed since, in key order, the changes they
    account for (changes in windows still open stay recorded), and whether a revision waits.

    A window evaluated after ``revise_before_ns`` (processing time) is not evaluated again yet: its changes
    stay recorded, and it is revised at a later tick, once with all the late data that came meanwhile. Without
    that, labels arriving after a window closed made every tick evaluate the window anew (a 250k-row window: ~2 s
    of CPU each time); a processor behind its load got its labels later still, and so more revisions: at 25k rows/s
    a soak that fell behind evaluated its 60 windows 232 times.

    New windows are found by scanning the data after the last evaluated window up to the watermark; changes to
    windows evaluated before come from ``changes``."""
    kinds = (SKETCH,) if scheme == SKETCHED else (ROW, LABEL, SKETCH)
    limit = MAX_NS if close_ns == MAX_NS else close_ns // width_ns * width_ns  # windows ending by the watermark
    last = store.windows(model, version, scheme, last_before=MAX_NS)
    scan_from = next(iter(last.values()))[1] + 1 if last else -MAX_NS
    candidates: set[int] = set()
    if scan_from < limit:
        starts = store.sketch_starts(model, version, scan_from, limit)
        candidates.update(t // width_ns for t in starts)
        if scheme != SKETCHED:
            candidates.update(store.time_bucket_keys(model, version, width_ns, scan_from, limit))
    handled = []
    changed: dict[tuple[str, int, int], set[int]] = {}
    for change in changes:
        kind, t, _ = change
        if kind not in kinds:
            continue
        buckets = {t * SECOND // width_ns, ((t + 1) * SECOND - 1) // width_ns}
        closed = {b for b in buckets if close_ns == MAX_NS or (b + 1) * width_ns <= close_ns}
        candidates.update(closed)
        if closed == buckets:
            handled.append(change)
            changed[change] = buckets
    waiting: set[int] = set()
    if revise_before_ns is not None and changed:
        waiting = {k for k, at in store.evaluated_at(model, version, scheme, set().union(*changed.values())).items()
                   if at > revise_before_ns}
        if waiting:
            candidates -= waiting
            handled = [c for c in handled if not changed[c] & waiting]
    stored = store.windows(model, version, scheme, keys=candidates)
    windows = []
    for bucket in sorted(candidates):
        window = time_window(store, model, version, scheme, width_ns, bucket)
        if (scheme == SKETCHED and not window.points) or not (window.rows or window.points):
            continue
        if bucket not in stored or stored[bucket][2] != window.state:
            windows.append(window)
    return windows, handled, bool(waiting)
