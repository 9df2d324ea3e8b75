"""The HTML report of ``mlmon evaluate --report``: one self-contained file (inline SVG, no script, no download).

Sections: a summary of the analysis period's alerts; a timeline per drifted column and method (value per window,
the threshold band, alerts marked in red, the reference and analysis periods side by side); realized performance
timelines; data-quality tables.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from otel_mlmon.engine.results import WindowResult

WIDTH, HEIGHT, PAD = 640, 180, 36


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}"


def _timeline(rows: Sequence[WindowResult], title: str) -> str:
    """An SVG line of the values over windows, with the threshold band and alerts."""
    points = [r for r in rows if math.isfinite(r.value)]
    if not points:
        return ""
    values = [r.value for r in points]
    bounds = [v for r in points for v in (r.lower_threshold, r.upper_threshold) if v is not None and math.isfinite(v)]
    low, high = min(values + bounds), max(values + bounds)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    span = high - low
    low, high = low - 0.05 * span, high + 0.05 * span

    def x(i: int) -> float:
        return PAD + (WIDTH - 2 * PAD) * (i / max(len(points) - 1, 1))

    def y(v: float) -> float:
        return HEIGHT - PAD + (PAD * 2 - HEIGHT) * (v - low) / (high - low)

    parts = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{html.escape(title)}" '
             f'data-title="{html.escape(title)}">',
             f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>']
    first_analysis = next((i for i, r in enumerate(points) if r.period == "analysis"), None)
    if first_analysis:
        parts.append(f'<rect x="{x(0) - 4:.1f}" y="{PAD / 2:.1f}" width="{x(first_analysis) - x(0) - 4:.1f}" '
                     f'height="{HEIGHT - 1.5 * PAD:.1f}" fill="#eef3fb"/>')
        parts.append(f'<text x="{x(0):.1f}" y="{PAD / 2 + 12:.1f}" font-size="10" fill="#456">reference</text>')
    upper = [(x(i), y(r.upper_threshold)) for i, r in enumerate(points)
             if r.upper_threshold is not None and math.isfinite(r.upper_threshold)]
    lower = [(x(i), y(r.lower_threshold)) for i, r in enumerate(points)
             if r.lower_threshold is not None and math.isfinite(r.lower_threshold)]
    for line, name in ((upper, "upper"), (lower, "lower")):
        if line:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in line)
            parts.append(f'<polyline class="threshold {name}" points="{path}" fill="none" stroke="#e39b26" '
                         'stroke-dasharray="5,3" stroke-width="1.5"/>')
    path = " ".join(f"{x(i):.1f},{y(r.value):.1f}" for i, r in enumerate(points))
    parts.append(f'<polyline class="value" points="{path}" fill="none" stroke="#2a62b8" stroke-width="2"/>')
    for i, r in enumerate(points):
        color = "#d21f1f" if r.alert else ("#999" if r.alert is None else "#2a62b8")
        radius = 5 if r.alert else 3
        parts.append(f'<circle class="{"alert" if r.alert else "point"}" cx="{x(i):.1f}" cy="{y(r.value):.1f}" '
                     f'r="{radius}" fill="{color}"><title>{r.period} window {r.window}: {_number(r.value)}'
                     f'{" ALERT" if r.alert else ""}</title></circle>')
    parts.append(f'<text x="{PAD}" y="{HEIGHT - 8}" font-size="10" fill="#555">{_number(low)} … '
                 f'{_number(high)}</text>')
    parts.append(f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" font-size="10" fill="#555" text-anchor="end">'
                 f'{len(points)} windows</text></svg>')
    return "".join(parts)


def _series(rows: Sequence[WindowResult], kind: str) -> dict[tuple[str, str], list[WindowResult]]:
    grouped: dict[tuple[str, str], list[WindowResult]] = defaultdict(list)
    for r in rows:
        if r.kind == kind:
            grouped[(r.column, r.metric)].append(r)
    for series in grouped.values():
        series.sort(key=lambda r: (r.period != "reference", r.window))
    return grouped


def render(rows: Sequence[WindowResult], profile: Any = None) -> str:
    analysis = [r for r in rows if r.period == "analysis"]
    model = rows[0].model if rows else (getattr(profile, "model", "") or "")
    version = rows[0].model_version if rows else ""
    alerts: dict[tuple[str, str, str], list[WindowResult]] = defaultdict(list)
    for r in analysis:
        if r.alert:
            alerts[(r.kind, r.column, r.metric)].append(r)
    out = ["<!doctype html><html><head><meta charset='utf-8'>",
           f"<title>otel-mlmon report: {html.escape(model)}</title><style>",
           "body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;"
           "margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}"
           "th{background:#f3f5f8}.alert{color:#b00;font-weight:600}figure{display:inline-block;margin:6px}"
           "figcaption{font-size:13px;font-weight:600}.ok{color:#176d2c}</style></head><body>",
           f"<h1>Model monitoring report: {html.escape(model)}"
           f"{' v' + html.escape(version) if version else ''}</h1>",
           f"<p>{len({r.window for r in analysis})} analysis windows, "
           f"{len({r.window for r in rows if r.period == 'reference'})} reference windows; "
           f"{sum(len(v) for v in alerts.values())} alerts in the analysis period.</p>",
           "<h2 id='summary'>Alerts</h2>"]
    if alerts:
        out.append("<table class='summary'><tr><th>kind</th><th>column</th><th>metric</th><th>windows</th>"
                   "<th>largest value</th><th>threshold</th></tr>")
        for (kind, column, metric), hits in sorted(alerts.items()):
            top = max(hits, key=lambda r: abs(r.value))
            threshold = _number(top.upper_threshold) if top.upper_threshold is not None else _number(
                top.lower_threshold)
            out.append(f"<tr class='alert'><td>{kind}</td><td>{html.escape(column)}</td><td>{metric}</td>"
                       f"<td>{', '.join(str(h.window) for h in hits)}</td><td>{_number(top.value)}</td>"
                       f"<td>{threshold}</td></tr>")
        out.append("</table>")
    else:
        out.append("<p class='ok'>No alerts.</p>")
    for kind, heading in (("drift", "Drift"), ("performance", "Realized performance")):
        series = _series(rows, kind)
        out.append(f"<h2 id='{kind}'>{heading}</h2>")
        if not series:
            out.append("<p>No values.</p>")
        for (column, metric), members in sorted(series.items()):
            plot = _timeline(members, f"{column} {metric}")
            if plot:
                out.append(f"<figure><figcaption>{html.escape(column)} · {metric}</figcaption>{plot}</figure>")
    out.append("<h2 id='data_quality'>Data quality</h2><table class='quality'><tr><th>column</th><th>metric</th>"
               "<th>window</th><th>value</th><th>threshold</th><th>alert</th></tr>")
    for r in sorted((r for r in analysis if r.kind == "data_quality"), key=lambda r: (r.column, r.metric, r.window)):
        flag = "alert" if r.alert else ""
        out.append(f"<tr class='{flag}'><td>{html.escape(r.column)}</td><td>{r.metric}</td><td>{r.window}</td>"
                   f"<td>{_number(r.value)}</td><td>{_number(r.upper_threshold)}</td>"
                   f"<td>{'yes' if r.alert else ('–' if r.alert is None else 'no')}</td></tr>")
    out.append("</table></body></html>")
    return "\n".join(out)


def write_report(rows: Sequence[WindowResult], path: str, profile: Any = None) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render(rows, profile))
