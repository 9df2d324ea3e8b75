"""The HTML report of ``mlmon evaluate --report``: one self-contained file (inline CSS, SVG and a few lines of
script; a Content-Security-Policy forbids any network access).

What a reader sees, in order: the model, the analysis period and the alert count (the number ``mlmon evaluate``
prints: analysis results whose verdict is an alert); a ranked summary of the columns, most severe first, with what
alerted and since when; for each drifted column, its reference-vs-analysis distribution (histogram or category
bars, from the sketches in ``ReportData``) and the timeline of each drift method (y-axis ticks, the band of no
alert, alerts in red, partial windows grey and out of the y range); realized performance over time with label
coverage and a confusion matrix per window; other kinds of results (estimated performance, fairness, …) as
timelines; data quality reduced to the columns with problems; short method notes.

Size budget: at most ``SIZE_BUDGET`` bytes (2.5 MB) for 1,000 features, whatever their alerts (charts are drawn
for at most ``MAX_CARDS`` columns; the ranked table lists every column). Every series gets a timeline only when
the run has at most ``SMALL_RUN`` columns.
"""

from __future__ import annotations

import html
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from otel_mlmon.batch.report_data import (
    ColumnSummary,
    ReportData,
    Window,
    as_results,
    count_alerts,
    summarize,
    windows_of,
)
from otel_mlmon.batch.report_svg import bars, coverage, fmt, histogram, sparkline, timeline
from otel_mlmon.engine.profile import ReferenceProfile
from otel_mlmon.engine.results import WindowResult
from otel_mlmon.sketch import CategoricalSketch, NumericSketch

__all__ = ["MAX_CARDS", "SIZE_BUDGET", "ReportData", "count_alerts", "render", "write_report"]

SIZE_BUDGET = 2_500_000
MAX_CARDS = 40
RANKED_SHOWN = 25
CARD_PLOT_WIDTH = 340  # a drifted column's distribution and two method timelines on one row
SMALL_RUN = 40
MAX_MATRICES = 36
MAX_CLASSES = 12
HEADINGS = {"drift": "Drift", "performance": "Realized performance", "data_quality": "Data quality",
            "estimated_performance": "Estimated performance", "fairness": "Fairness"}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#222;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:20px 28px 40px;background:#fff}
h1{font-size:22px;margin:4px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #e3e6ea;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.sub{color:#555;margin:2px 0 12px}
.kpis{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}.kpi{border:1px solid #e3e6ea;border-radius:6px;
padding:8px 14px;min-width:120px}.kpi b{display:block;font-size:22px}.kpi.bad b{color:#b3261e}.kpi.good b{color:#176d2c}
.kpi span{font-size:12px;color:#555}
table{border-collapse:collapse;margin:6px 0 14px}td,th{border-bottom:1px solid #e3e6ea;padding:4px 8px;
font-size:13px;text-align:left;vertical-align:middle}th{background:#f3f5f8;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.alerting td:first-child{border-left:3px solid #d21f1f}
.tag{display:inline-block;border-radius:3px;padding:0 5px;margin:1px 2px;font-size:11.5px;background:#fde8e6;
color:#8c1d18}.tag.drift{background:#fde8e6}.tag.performance{background:#fff0d6;color:#7a4a00}
.tag.data_quality{background:#e8eefc;color:#1d3f8c}.muted{color:#777}.ok{color:#176d2c}
.card{border:1px solid #e3e6ea;border-radius:6px;padding:8px 12px;margin:10px 0}.card h3{margin:2px 0 6px}
.charts{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start}figure{margin:2px}
figcaption{font-size:12.5px;font-weight:600;color:#333}.matrices{display:flex;flex-wrap:wrap;gap:14px}
table.cm td{width:44px;text-align:center;font-size:12px;border:1px solid #fff}
table.cm th{font-size:11px;padding:2px 4px}
.cmcap{font-size:11.5px;color:#444;max-width:240px}details{margin:6px 0}summary{cursor:pointer;color:#1d3f8c}
input.filter{margin:4px 0;padding:3px 6px;width:260px}.notes li{margin:3px 0;font-size:13px}
.legend{font-size:12px;color:#555}a{color:#1d3f8c}
"""

SCRIPT = """
document.querySelectorAll('input.filter').forEach(function (box) {
  box.addEventListener('input', function () {
    var text = box.value.toLowerCase();
    document.querySelectorAll('#' + box.dataset.table + ' tbody tr').forEach(function (row) {
      row.style.display = (row.dataset.name || '').indexOf(text) < 0 ? 'none' : '';
    });
  });
});
"""

CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; "
       "base-uri 'none'; form-action 'none'")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _anchor(column: str) -> str:
    return "col-" + "".join(c if c.isalnum() else f"_{ord(c):x}" for c in column)


def _when(window: Window | None) -> str:
    if window is None or not window.start:
        return ""
    text = window.start.replace("T", " ").split(".")[0].rstrip("Z")
    return (text[:-3] if text.endswith(":00") else text) + " UTC"


def _series(rows: Iterable[WindowResult], windows: Mapping[tuple[str, int], Window],
            kind: str) -> dict[tuple[str, str], list[tuple[Window, WindowResult]]]:
    grouped: dict[tuple[str, str], list[tuple[Window, WindowResult]]] = defaultdict(list)
    for r in rows:
        if r.kind == kind:
            grouped[(r.column, r.metric)].append((windows[(r.period, r.window)], r))
    for members in grouped.values():
        members.sort(key=lambda pair: (pair[1].period != "reference", pair[1].window))
    return grouped


def _figure(points: Sequence[tuple[Window, WindowResult]], column: str, metric: str, include_zero: bool,
            width: int = 560) -> str:
    plot = timeline(points, f"{column} {metric}", include_zero=include_zero, width=width)
    return f"<figure><figcaption>{_e(column)} · {_e(metric)}</figcaption>{plot}</figure>" if plot else ""


def _tags(summary: ColumnSummary) -> str:
    return "".join(f"<span class='tag {_e(kind)}'>{_e(kind.replace('_', ' '))}: {_e(metric)}"
                   f"{' ×' + str(n) if n > 1 else ''}</span>" for (kind, metric), n in sorted(summary.alerted.items()))


def _worst(summary: ColumnSummary) -> str:
    r = summary.worst
    if r is None:
        return "<span class='muted'>–</span>"
    bound = r.upper_threshold if r.upper_threshold is not None and (
        r.lower_threshold is None or r.value >= r.lower_threshold) else r.lower_threshold
    return (f"{_e(r.metric)} {fmt(r.value)} <span class='muted'>vs {fmt(bound)} in window {r.window}"
            f"{' (' + format(summary.worst_excess, '.1f') + '×)' if summary.worst_excess > 1 else ''}</span>")


def _since(summary: ColumnSummary, windows: Mapping[tuple[str, int], Window]) -> str:
    since = summary.since
    if since is None:
        return "<span class='muted'>–</span>"
    when = _when(windows.get(("analysis", since)))
    text = f"window {since}{' · ' + when if when else ''}"
    if summary.still_alerting:
        return f"{_e(text)} <b>· still alerting</b>"
    return f"{_e(text)} <span class='muted'>· cleared by window {summary.judged_windows[-1]}</span>"


Trends = Mapping[tuple[str, str, str], list[tuple[float, bool | None, bool]]]


def _trends(rows: Sequence[WindowResult], windows: Mapping[tuple[str, int], Window]) -> Trends:
    """(column, kind, metric) -> (value, alert, partial) per analysis window, for the sparklines."""
    out: dict[tuple[str, str, str], list[tuple[float, bool | None, bool]]] = defaultdict(list)
    for r in sorted((r for r in rows if r.period == "analysis"), key=lambda r: r.window):
        out[(r.column, r.kind, r.metric)].append((r.value, r.alert, windows[(r.period, r.window)].partial))
    return out


def _spark(summary: ColumnSummary, trends: Trends) -> str:
    if summary.worst is None:
        return ""
    return sparkline(trends.get((summary.column, summary.worst.kind, summary.worst.metric), []))


def _ranked_table(alerting: Sequence[ColumnSummary], first_rank: int, trends: Trends,
                  windows: Mapping[tuple[str, int], Window], charted: set[str], table_id: str) -> list[str]:
    analysis_windows = sum(1 for w in windows.values() if w.period == "analysis")
    out = [f"<table class='ranked' id='{table_id}'><thead><tr><th class='num'>#</th><th>column</th><th>role</th>"
           "<th>what alerted</th><th class='num'>alerts</th><th>windows alerting</th><th>since</th>"
           "<th>largest excess over a threshold</th><th>trend</th></tr></thead><tbody>"]
    for rank, s in enumerate(alerting, first_rank):
        name = f"<a href='#{_anchor(s.column)}'>{_e(s.column)}</a>" if s.column in charted else _e(s.column)
        partial = (f"<br><span class='muted' title='alerts in a partial window (fewer rows than the others)'>"
                   f"incl. {s.partial_alerts} partial</span>" if s.partial_alerts else "")
        out.append(f"<tr class='alerting' data-name='{_e(s.column.lower())}'><td class='num'>{rank}</td>"
                   f"<td>{name}</td><td>{_e(s.role)}</td><td>{_tags(s)}</td><td class='num'>{s.alerts}{partial}</td>"
                   f"<td>{len(s.alert_windows)} of {analysis_windows}</td><td>{_since(s, windows)}</td>"
                   f"<td>{_worst(s)}</td><td>{_spark(s, trends)}</td></tr>")
    out.append("</tbody></table>")
    return out


def _ranked(summaries: Sequence[ColumnSummary], rows: Sequence[WindowResult],
            windows: Mapping[tuple[str, int], Window], total: int, charted: set[str]) -> list[str]:
    alerting = [s for s in summaries if s.alerts]
    quiet = [s for s in summaries if not s.alerts]
    out = ["<h2 id='summary'>Columns by severity</h2>"]
    if alerting:
        out.append(f"<p class='legend'>{len(alerting)} column(s) alerting, most severe first (most alerting "
                   "windows, then the largest excess over a threshold in a full window); "
                   f"<b>{total} alert(s)</b> in all.</p>")
        trends = _trends(rows, windows)
        out += _ranked_table(alerting[:RANKED_SHOWN], 1, trends, windows, charted, "ranked")
        more = alerting[RANKED_SHOWN:]
        if more:
            out.append(f"<details><summary>{len(more)} more alerting column(s) "
                       f"({sum(s.alerts for s in more)} of the {total} alerts)</summary>"
                       "<input class='filter' data-table='ranked-more' placeholder='filter columns…' "
                       "aria-label='filter alerting columns'>")
            out += _ranked_table(more, RANKED_SHOWN + 1, trends, windows, charted, "ranked-more")
            out.append("</details>")
    else:
        out.append("<p class='ok'>No alerts in the analysis period.</p>")
    if quiet:
        out.append(f"<details{' open' if not alerting and len(quiet) <= 20 else ''}><summary>{len(quiet)} "
                   "column(s) without alerts, closest to a threshold first</summary>")
        if len(quiet) > 20:
            out.append("<input class='filter' data-table='quiet' placeholder='filter columns…' "
                       "aria-label='filter columns'>")
        out.append("<table id='quiet'><thead><tr><th>column</th><th>role</th><th>closest to a threshold</th>"
                   "</tr></thead><tbody>")
        for s in quiet:
            out.append(f"<tr data-name='{_e(s.column.lower())}'><td>{_e(s.column)}</td><td>{_e(s.role)}</td>"
                       f"<td>{_worst(s)}</td></tr>")
        out.append("</tbody></table></details>")
    return out


def _distribution(column: str, profile: ReferenceProfile | None, data: ReportData | None) -> str:
    if profile is None or data is None or column not in profile.columns:
        return ""
    reference = profile.columns[column].sketch
    analysis = data.alerting.get(column)
    label = "alerting windows"
    if analysis is None:
        analysis, label = data.analysis.get(column), "analysis"
    elif data.alerting_windows.get(column):
        indexes = data.alerting_windows[column]
        label = f"window{'s' if len(indexes) > 1 else ''} {_span(indexes)}"
    if analysis is None:
        return ""
    title = f"{column}: reference vs {label}"
    if isinstance(reference, NumericSketch) and isinstance(analysis, NumericSketch):
        chart = histogram(reference, analysis, title, label, width=400)
    elif isinstance(reference, CategoricalSketch) and isinstance(analysis, CategoricalSketch):
        chart = bars(reference, analysis, title, label, width=400)
    else:
        return ""
    return f"<figure><figcaption>{_e(title)}</figcaption>{chart}</figure>" if chart else ""


def _span(indexes: Sequence[int]) -> str:
    ordered = sorted(set(indexes))
    if ordered == list(range(ordered[0], ordered[-1] + 1)) and len(ordered) > 2:
        return f"{ordered[0]}–{ordered[-1]}"
    return ", ".join(map(str, ordered)) if len(ordered) <= 6 else f"{ordered[0]}–{ordered[-1]} ({len(ordered)})"


def _drift(summaries: Sequence[ColumnSummary], series: Mapping[tuple[str, str], list[tuple[Window, WindowResult]]],
           profile: ReferenceProfile | None, data: ReportData | None, small: bool) -> tuple[list[str], set[str]]:
    out = ["<h2 id='drift'>Drift</h2>"]
    by_column: dict[str, list[str]] = defaultdict(list)
    for column, metric in sorted(series):
        by_column[column].append(metric)
    drifted = [s for s in summaries if any(kind == "drift" for kind, _ in s.alerted) and s.column in by_column]
    cards = drifted[:MAX_CARDS]
    charted = {s.column for s in cards}
    if not drifted:
        out.append("<p class='ok'>No column drifted in the analysis period.</p>")
    elif data is None:
        out.append("<p class='muted'>Reference-vs-analysis distributions need the analysis windows' sketches "
                   "(<code>ReportData</code>); these results came without them.</p>")
    for s in cards:
        out.append(f"<div class='card' id='{_anchor(s.column)}'><h3>{_e(s.column)} <span class='muted'>"
                   f"({_e(s.role)})</span></h3><div class='charts'>{_distribution(s.column, profile, data)}")
        out += [_figure(series[(s.column, m)], s.column, m, True, CARD_PLOT_WIDTH) for m in by_column[s.column]]
        out.append("</div></div>")
    if len(drifted) > len(cards):
        out.append(f"<p class='muted'>Charts for the {len(cards)} most severe drifted columns; the other "
                   f"{len(drifted) - len(cards)} are in the table above.</p>")
    rest = [c for c in by_column if c not in {s.column for s in drifted}]
    if rest and small:
        out.append(f"<details><summary>timelines of the {len(rest)} column(s) without drift alerts</summary>"
                   "<div class='charts'>")
        out += [_figure(series[(c, m)], c, m, True) for c in rest for m in by_column[c]]
        out.append("</div></details>")
    return out, charted


def _matrix(counts: Counter[tuple[str, str]], classes: Sequence[str], caption: str) -> str:
    rows = ["<table class='cm'><tr><th>true \\ pred</th>" + "".join(f"<th>{_e(c)}</th>" for c in classes) + "</tr>"]
    for truth in classes:
        total = sum(counts[(truth, p)] for p in classes) or 1
        cells = []
        for predicted in classes:
            n = counts[(truth, predicted)]
            share = n / total
            color = f"rgba(23,109,44,{0.12 + 0.75 * share:.2f})" if truth == predicted else \
                f"rgba(210,31,31,{0.08 + 0.8 * share:.2f})" if n else "#fafafa"
            cells.append(f"<td style='background:{color}' title='true {_e(truth)}, predicted {_e(predicted)}: "
                         f"{n:,} ({share:.0%} of true {_e(truth)})'>{n:,}</td>")
        rows.append(f"<tr><th>{_e(truth)}</th>{''.join(cells)}</tr>")
    return f"<div><div class='cmcap'>{caption}</div>{''.join(rows)}</table></div>"


def _confusion(profile: ReferenceProfile | None, data: ReportData | None,
               windows: Mapping[tuple[str, int], Window]) -> list[str]:
    if profile is None or profile.task != "classification":
        return []
    if data is None or not data.confusion:
        return ["<p class='muted'>Confusion matrices need the windows' joined labels (<code>ReportData</code>); "
                "these results came without them.</p>"]
    seen = {c for counts in data.confusion.values() for pair in counts for c in pair}
    classes = [c for c in profile.classes if c in seen] + sorted(seen - set(profile.classes))
    if len(classes) > MAX_CLASSES:
        return [f"<p class='muted'>{len(classes)} classes: too many for confusion matrices here.</p>"]
    out = ["<h3>Confusion matrix per window</h3><p class='legend'>Rows are true classes, columns predicted ones; "
           "the colour is the share of the row (green: right, red: wrong). Class balance below each matrix.</p>"
           "<div class='matrices'>"]
    reference = Counter[tuple[str, str]]()
    for (period, _), counts in data.confusion.items():
        if period == "reference":
            reference.update(counts)
    keys = [k for k in data.confusion if k[0] == "analysis"]
    shown = keys[-MAX_MATRICES:]
    if reference:
        out.append(_matrix(reference, classes, "<b>reference</b> (all windows)" + _balance(reference, classes)))
    for key in shown:
        counts = data.confusion[key]
        window = windows.get(key)
        n = sum(counts.values())
        right = sum(counts[(c, c)] for c in classes)
        partial = " <i>(partial)</i>" if window is not None and window.partial else ""
        out.append(_matrix(counts, classes, f"<b>window {key[1]}</b>{partial} · {n:,} labeled · accuracy "
                                            f"{right / n:.3f}" + _balance(counts, classes)))
    out.append("</div>")
    if len(keys) > len(shown):
        out.append(f"<p class='muted'>The last {len(shown)} of {len(keys)} windows.</p>")
    return out


def _balance(counts: Counter[tuple[str, str]], classes: Sequence[str]) -> str:
    n = sum(counts.values()) or 1
    true = " · ".join(f"{_e(c)} {sum(counts[(c, p)] for p in classes) / n:.0%}" for c in classes)
    predicted = " · ".join(f"{_e(c)} {sum(counts[(t, c)] for t in classes) / n:.0%}" for c in classes)
    return f"<br>classes true: {true}<br>predicted: {predicted}"


def _performance(rows: Sequence[WindowResult], windows: Mapping[tuple[str, int], Window],
                 profile: ReferenceProfile | None, data: ReportData | None) -> list[str]:
    series = _series(rows, windows, "performance")
    out = ["<h2 id='performance'>Realized performance</h2>"]
    if not series:
        out.append("<p class='muted'>No labels joined: no realized performance.</p>")
    else:
        out.append("<div class='charts'>")
        out += [_figure(points, column, metric, False) for (column, metric), points in sorted(series.items())]
        out.append("</div>")
    analysis = [w for w in windows.values() if w.period == "analysis"]
    labeled = sum(w.labeled_rows for w in analysis)
    total = sum(w.rows for w in analysis)
    if total and (series or labeled):
        out.append(f"<h3>Label coverage</h3><p class='legend'>{labeled:,} of {total:,} analysis rows labeled "
                   f"({labeled / total:.0%}); per window:</p>{coverage(analysis)}")
    if series or labeled:
        out += _confusion(profile, data, windows)
    return out


def _other_kinds(rows: Sequence[WindowResult], windows: Mapping[tuple[str, int], Window]) -> list[str]:
    out = []
    for kind in sorted({r.kind for r in rows} - {"drift", "performance", "data_quality"}):
        heading = HEADINGS.get(kind, kind.replace("_", " ").capitalize())
        out.append(f"<h2 id='{_e(kind)}'>{_e(heading)}</h2><div class='charts'>")
        out += [_figure(points, column, metric, False)
                for (column, metric), points in sorted(_series(rows, windows, kind).items())]
        out.append("</div>")
    return out


def _quality(rows: Sequence[WindowResult], windows: Mapping[tuple[str, int], Window]) -> list[str]:
    analysis = [r for r in rows if r.period == "analysis" and r.kind == "data_quality"]
    problems: dict[tuple[str, str], list[WindowResult]] = defaultdict(list)
    for r in analysis:
        problems[(r.column, r.metric)].append(r)
    flagged = {key: members for key, members in problems.items() if any(r.alert for r in members)}
    columns = {r.column for r in analysis}
    out = ["<h2 id='data_quality'>Data quality</h2>"]
    if not flagged:
        out.append(f"<p class='ok'>No data-quality alert in {len(columns)} column(s).</p>")
        return out
    out.append("<table class='quality'><thead><tr><th>column</th><th>metric</th><th>windows alerting</th>"
               "<th class='num'>largest value</th><th class='num'>threshold</th><th>since</th></tr></thead><tbody>")
    ordered = sorted(flagged.items(), key=lambda item: (-sum(1 for r in item[1] if r.alert), item[0]))
    for (column, metric), members in ordered:
        hits = [r for r in members if r.alert]
        top = max(hits, key=lambda r: r.value if math.isfinite(r.value) else -math.inf)
        first = windows.get(("analysis", hits[0].window))
        out.append(f"<tr class='alerting'><td>{_e(column)}</td><td>{_e(metric)}</td><td>{len(hits)} of "
                   f"{len(members)}</td><td class='num'>{fmt(top.value)}</td>"
                   f"<td class='num'>{fmt(top.upper_threshold)}</td><td>window {hits[0].window}"
                   f"{' · ' + _e(_when(first)) if _when(first) else ''}</td></tr>")
    quiet = len(columns - {c for c, _ in flagged})
    out.append(f"</tbody></table><p class='muted'>{quiet} other column(s) without a data-quality alert.</p>")
    return out


def _notes(rows: Sequence[WindowResult]) -> list[str]:
    drift_metrics = sorted({r.metric for r in rows if r.kind == "drift"})
    return ["<h2 id='notes'>How to read this report</h2><ul class='notes'>",
            f"<li><b>Alert count</b>: analysis-period results whose verdict is an alert, one per window, column "
            f"and metric; <code>mlmon evaluate</code> prints the same number and the results file has as many rows "
            f"with <code>alert</code> true.</li>"
            f"<li><b>Drift</b> ({_e(', '.join(drift_metrics) or 'none')}): each window's sketch against the "
            "reference's. Default verdict: the value is above its threshold (the method's effect-size floor, or "
            "the reference windows' mean + 3σ when higher) and its Benjamini–Hochberg-adjusted p-value is below "
            "α = 0.01; presets and <code>--thresholds</code> use constant thresholds instead.</li>"
            "<li><b>Performance</b>: computed on the joined labels; an alert is a value outside the reference "
            "windows' prediction interval (the band). <b>Data quality</b>: a rate above the reference's by a floor "
            "and significantly (one-sided binomial test).</li>"
            "<li><b>Charts</b>: green band = no alert; dashed orange = thresholds; red dot = alert; hollow grey dot "
            "= no verdict (fewer than 30 values). A <b>partial window</b> (the last window of a period, with fewer "
            "rows, marked *) is a grey square: it does not set the y range (a triangle at the edge when it is "
            "beyond) and never ranks a column; its engine verdict still counts.</li>"
            "<li><b>Distributions</b>: from the sketches (bucket width 2<sup>−7</sup> relative), in 30 equal bins "
            "between the 0.5 % and 99.5 % quantiles (the outer bins hold the tails); the analysis side is the "
            "windows where the column drifted.</li></ul>"]


def render(rows: Iterable[Any], profile: ReferenceProfile | None = None,
           data: ReportData | None = None) -> str:
    """The report as one HTML document.

    Args:
        rows: window results of both periods (``WindowResult``, segment results, or mappings in the
            window-result schema); a segment's results are shown as the column ``"name [segment value]"``.
        profile: the reference profile (column roles, reference sketches, classes), when known.
        data: what the engine's caller kept of the windows (``ReportData``): analysis sketches for the
            distributions and confusion counts. Without it those sections say what is missing.
    """
    results = as_results(rows)
    windows = windows_of(results)
    summaries = summarize(results, windows, profile)
    total = count_alerts(results)
    model = results[0].model if results else (profile.model if profile else "")
    version = results[0].model_version if results else (profile.version if profile else "")
    analysis = [w for w in windows.values() if w.period == "analysis"]
    reference = [w for w in windows.values() if w.period == "reference"]
    partial = sum(w.partial for w in analysis)
    alerting = [s for s in summaries if s.alerts]
    drifted = [s for s in alerting if any(kind == "drift" for kind, _ in s.alerted)]
    small = len(summaries) <= SMALL_RUN
    drift_out, charted = _drift(summaries, _series(results, windows, "drift"), profile, data, small)
    period = ""
    if analysis and analysis[0].start:
        period = f"{_when(analysis[0])} – {_when(Window('', 0, 0, 0, analysis[-1].end, None))}"
    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
           f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
           "<meta name='viewport' content='width=device-width, initial-scale=1'>",
           f"<title>otel-mlmon report: {_e(model)}</title><style>{CSS}</style></head><body><main>",
           f"<h1>Model monitoring report: {_e(model)}{' v' + _e(version) if version else ''}</h1>",
           f"<p class='sub'>{len(analysis)} analysis window(s){' · ' + period if period else ''}"
           f"{f' · {partial} partial' if partial else ''} · {len(reference)} reference window(s) · "
           f"{sum(w.rows for w in analysis):,} analysis rows</p>",
           "<div class='kpis'>",
           f"<div class='kpi {'bad' if total else 'good'}' id='alert-count'><b>{total}</b><span>alert(s) in the "
           "analysis period</span></div>",
           f"<div class='kpi {'bad' if alerting else 'good'}'><b>{len(alerting)} of {len(summaries)}</b><span>"
           f"columns alerting ({sum(s.still_alerting for s in alerting)} still in their latest window)</span></div>",
           f"<div class='kpi {'bad' if drifted else 'good'}'><b>{len(drifted)}</b><span>column(s) drifted</span>"
           "</div>"]
    out += _performance_kpis(results, windows)
    out.append("</div><p class='legend'><a href='#summary'>severity</a> · <a href='#drift'>drift</a> · "
               "<a href='#performance'>performance</a> · <a href='#data_quality'>data quality</a> · "
               "<a href='#notes'>how to read</a></p>")
    out += _ranked(summaries, results, windows, total, charted)
    out += drift_out
    out += _performance(results, windows, profile, data)
    out += _other_kinds(results, windows)
    out += _quality(results, windows)
    out += _notes(results)
    out.append(f"</main><script>{SCRIPT}</script></body></html>")
    return "\n".join(out)


def _performance_kpis(rows: Sequence[WindowResult], windows: Mapping[tuple[str, int], Window]) -> list[str]:
    """The latest full window's first performance metric against the reference windows' mean, and coverage."""
    performance = [r for r in rows if r.kind == "performance" and math.isfinite(r.value)]
    out = []
    if performance:
        metric = "accuracy" if any(r.metric == "accuracy" for r in performance) else performance[0].metric
        chosen = [r for r in performance if r.metric == metric]
        latest = [r for r in chosen if r.period == "analysis" and not windows[(r.period, r.window)].partial]
        before = [r.value for r in chosen if r.period == "reference"]
        if latest:
            last = latest[-1]
            versus = f" (reference {fmt(sum(before) / len(before))})" if before else ""
            out.append(f"<div class='kpi {'bad' if last.alert else ''}'><b>{fmt(last.value)}</b><span>{_e(metric)} "
                       f"in window {last.window}{_e(versus)}</span></div>")
    analysis = [w for w in windows.values() if w.period == "analysis"]
    total = sum(w.rows for w in analysis)
    if total and any(w.labeled_rows for w in analysis):
        share = sum(w.labeled_rows for w in analysis) / total
        out.append(f"<div class='kpi'><b>{share:.0%}</b><span>of analysis rows labeled</span></div>")
    return out


def write_report(rows: Iterable[Any], path: str,
                 profile: ReferenceProfile | None = None, data: ReportData | None = None) -> None:
    """Write ``render(rows, profile, data)`` to ``path`` (UTF-8)."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render(rows, profile, data))
