"""What the HTML report reads: window results normalised, windows' sizes (partial windows found), columns ranked
by severity, and ``ReportData``, the part of the analysis windows that results do not carry (their sketches and
confusion counts).

The report never judges a value itself: alerts are the engine's verdicts (``alert`` is true), counted exactly as
``mlmon evaluate`` counts them on the console (``count_alerts``). What the report adds is ordering and marking:
which columns are worst, since when they alert, and which windows are partial (the last window of a period with
fewer rows than the others: a value from a few rows is noisy, so it is drawn apart and never ranks a column).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from otel_mlmon.engine.evaluate import WindowData
from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.engine.results import WindowResult
from otel_mlmon.sketch import CategoricalSketch, NumericSketch, category_key

Sketch = NumericSketch | CategoricalSketch
_FIELDS = tuple(f.name for f in fields(WindowResult))


def count_alerts(rows: Iterable[WindowResult]) -> int:
    """The alert count of a run: analysis-period results whose verdict is an alert (one per window, column and
    metric). ``mlmon evaluate`` prints this number; the report's header and its summary table show the same."""
    return sum(1 for r in rows if r.period == "analysis" and r.alert is True)


def _missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value)) or \
        type(value).__name__ in ("NAType", "NaTType")


def segment_column(column: str, segment: Any) -> str:
    """The column name a segment's results are shown under (the whole window's keep the plain name)."""
    return column if _missing(segment) else f"{column} [segment {segment}]"


def as_results(rows: Iterable[Any]) -> list[WindowResult]:
    """Window results from ``WindowResult`` objects, segment results (``.segment``, ``.result``) or mappings in
    the window-result schema (JSON rows of ``GET /v1/results``, ``DataFrame.to_dict("records")``, with or without
    ``segment``): empty verdicts and thresholds become None; a segment's rows are shown as their own column."""
    out = []
    for row in rows:
        if isinstance(row, WindowResult):
            out.append(row)
            continue
        if isinstance(getattr(row, "result", None), WindowResult):
            result = row.result
            out.append(replace(result, column=segment_column(result.column, getattr(row, "segment", None))))
            continue
        try:
            values = {name: row[name] for name in _FIELDS}
        except KeyError as exc:
            raise ValueError(f"a report row has no {exc.args[0]!r} field (window-result fields: "
                             f"{', '.join(_FIELDS)})") from None
        for name in ("lower_threshold", "upper_threshold", "p_value", "alert", "window_start", "window_end"):
            if _missing(values[name]):
                values[name] = None
        if values["alert"] is not None:
            values["alert"] = values["alert"] in (True, 1, "true", "True", "1")
        value = values["value"]
        values["value"] = math.nan if _missing(value) else float(value)
        values["window"] = int(values["window"])
        for name in ("rows", "labeled_rows"):  # None on the processor's performance_change rows
            values[name] = None if _missing(values[name]) else int(values[name])
        values["column"] = segment_column(str(values["column"]), row.get("segment"))
        out.append(WindowResult(**values))
    return out


@dataclass(frozen=True)
class Window:
    """One window of one period as the report shows it."""

    period: str
    index: int
    rows: int
    labeled_rows: int
    start: str | None
    end: str | None
    partial: bool = False

    @property
    def key(self) -> tuple[str, int]:
        return self.period, self.index


def windows_of(rows: Sequence[WindowResult]) -> dict[tuple[str, int], Window]:
    """Each (period, window) of the results, in order, with partial windows marked: the last window of a period
    is partial when it has fewer rows than the period's other windows (all of them equal, as row windows are) or
    fewer than half their median (time windows, whose sizes vary)."""
    seen: dict[tuple[str, int], Window] = {}
    for r in rows:
        if (r.period, r.window) not in seen:
            seen[(r.period, r.window)] = Window(r.period, r.window, r.rows, r.labeled_rows, r.window_start,
                                                r.window_end)
    ordered = dict(sorted(seen.items(), key=lambda item: (item[0][0] != "reference", item[0][1])))
    for period in ("reference", "analysis"):
        members = [w for w in ordered.values() if w.period == period]
        if len(members) < 2:
            continue
        last, others = members[-1], sorted(w.rows for w in members[:-1])
        median = others[len(others) // 2] if len(others) % 2 else (others[len(others) // 2 - 1]
                                                                   + others[len(others) // 2]) / 2
        if (others[0] == others[-1] and last.rows < others[0]) or last.rows < 0.5 * median:
            ordered[last.key] = Window(last.period, last.index, last.rows, last.labeled_rows, last.start, last.end,
                                       partial=True)
    return ordered


def excess(r: WindowResult) -> float | None:
    """How far a value is from its thresholds, as a multiple: above 1 is beyond them. With an upper threshold
    only, value / threshold; with a band, the distance from its middle in half-widths."""
    value, lower, upper = r.value, r.lower_threshold, r.upper_threshold
    if not math.isfinite(value):
        return None
    if lower is not None and upper is not None and upper > lower:
        return abs(value - (upper + lower) / 2) / ((upper - lower) / 2)
    if upper is not None and upper > 0:
        return value / upper
    if lower is not None and value > 0 and lower > 0:
        return lower / value
    return None


@dataclass
class ColumnSummary:
    """One column's analysis-period results, for the ranked summary."""

    column: str
    role: str
    alerts: int = 0
    alerted: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, metric) -> alerts
    alert_windows: list[int] = field(default_factory=list)
    judged_windows: list[int] = field(default_factory=list)
    worst: WindowResult | None = None  # the full-window row furthest beyond (or closest to) its threshold
    worst_excess: float = -math.inf
    partial_alerts: int = 0

    @property
    def still_alerting(self) -> bool:
        return bool(self.alert_windows) and bool(self.judged_windows) and \
            self.alert_windows[-1] == self.judged_windows[-1]

    @property
    def since(self) -> int | None:
        """The first window of the run of alerting windows that reaches the latest judged window, or the first
        alerting window when the column has stopped alerting."""
        if not self.alert_windows:
            return None
        if not self.still_alerting:
            return self.alert_windows[0]
        alerting, judged = set(self.alert_windows), self.judged_windows
        start = judged[-1]
        for index in reversed(judged):
            if index not in alerting:
                break
            start = index
        return start

    def rank_key(self) -> tuple[int, int, float, str]:
        return (-min(self.alerts, 1), -len(self.alert_windows), -self.worst_excess, self.column)


def summarize(rows: Sequence[WindowResult], windows: Mapping[tuple[str, int], Window],
              profile: ReferenceProfile | None = None) -> list[ColumnSummary]:
    """Columns of the analysis period, most severe first: columns with alerts before the others, then by the
    number of alerting windows, then by the largest excess over a threshold in a full (not partial) window."""
    roles = {name: c.role for name, c in profile.columns.items()} if profile else {}
    target = profile.target_column if profile else None
    columns: dict[str, ColumnSummary] = {}
    judged: dict[str, set[int]] = defaultdict(set)
    alerting: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        if r.period != "analysis":
            continue
        role = roles.get(r.column) or ("target" if r.column == target or r.kind == "performance" else "feature")
        summary = columns.setdefault(r.column, ColumnSummary(r.column, role))
        partial = windows[(r.period, r.window)].partial
        if r.alert is not None:
            judged[r.column].add(r.window)
        if r.alert is True:
            summary.alerts += 1
            summary.alerted[(r.kind, r.metric)] = summary.alerted.get((r.kind, r.metric), 0) + 1
            alerting[r.column].add(r.window)
            summary.partial_alerts += partial
        ratio = excess(r)
        if ratio is not None and not partial and ratio > summary.worst_excess:
            summary.worst, summary.worst_excess = r, ratio
    for summary in columns.values():
        summary.alert_windows = sorted(alerting[summary.column])
        summary.judged_windows = sorted(judged[summary.column])
    return sorted(columns.values(), key=ColumnSummary.rank_key)


def _copy(sketch: Sketch) -> Sketch:
    return sketch.copy()


class ReportData:
    """What the report shows of the windows beyond their results: per column, the sketch of the whole analysis
    period and of its alerting windows (for the reference-vs-analysis histograms), and per window the confusion
    counts of its joined labels (classification).

    Memory is bounded by the columns, not the rows or windows: two sketches a column, and a confusion table of
    at most classes² counts a window.

    Example (the caller of the engine adds each window with its results)::

        data = ReportData(profile)
        for window in windows:
            results = evaluate_window(profile, window, policy)
            data.add(window, results)
        write_report(all_results, "report.html", profile, data)
    """

    def __init__(self, profile: ReferenceProfile) -> None:
        self.profile = profile
        self.analysis: dict[str, Sketch] = {}
        self.alerting: dict[str, Sketch] = {}
        self.alerting_windows: dict[str, list[int]] = defaultdict(list)
        self.confusion: dict[tuple[str, int], Counter[tuple[str, str]]] = {}

    def add(self, window: WindowData, results: Iterable[WindowResult] = ()) -> None:
        """Take what the report needs of one window (``results``: the window's results, to know which columns
        alerted in it). Reference windows add their confusion counts only (their sketches are the profile's)."""
        drifted = {r.column for r in results if r.kind == "drift" and r.alert is True}
        if window.period == "analysis":
            for name, sketch in window.sketches.items():
                if window.columns is not None and name not in window.columns:
                    continue
                self._merge(self.analysis, name, sketch)
                if name in drifted:
                    self._merge(self.alerting, name, sketch)
                    self.alerting_windows[name].append(window.index)
        labeled = window.labeled
        if self.profile.task == "classification" and len(labeled):
            counts: Counter[tuple[str, str]] = Counter()
            for truth, predicted in zip(labeled.y_true, labeled.y_pred):
                counts[(str(category_key(truth)), str(category_key(predicted)))] += 1
            self.confusion[(window.period, window.index)] = counts

    def _merge(self, into: dict[str, Sketch], name: str, sketch: Sketch) -> None:
        held = into.get(name)
        if held is None:
            reference = self.profile.columns.get(name)
            if isinstance(sketch, NumericSketch) and reference is not None and \
                    isinstance(reference.sketch, NumericSketch) and not sketch.same_bucketing(reference.sketch):
                ref = reference.sketch  # a sketch made without the profile: in the reference's buckets
                into[name] = sketch.rebucketed(ref.center, ref.scale, ref.precision)
            else:
                into[name] = _copy(sketch)
            return
        if isinstance(held, NumericSketch) and isinstance(sketch, NumericSketch):
            if not held.same_bucketing(sketch):
                sketch = sketch.rebucketed(held.center, held.scale, held.precision)
            held.merge(sketch)
        elif isinstance(held, CategoricalSketch) and isinstance(sketch, CategoricalSketch):
            held.merge(sketch)
