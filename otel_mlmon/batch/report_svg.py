"""The report's charts as inline SVG strings: timelines (axes with ticks, threshold band, alert markers, partial
windows drawn apart), reference-vs-analysis histograms of numeric sketches, category bar charts, label coverage
and sparklines. No script and no external resource: each chart is a standalone ``<svg>`` element.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np

from otel_mlmon.batch.report_data import Window
from otel_mlmon.engine.profile import quantile
from otel_mlmon.engine.results import WindowResult
from otel_mlmon.sketch import OTHER, CategoricalSketch, NumericSketch

BLUE, ORANGE, RED, GREY, BAND, INK = "#2a62b8", "#d9661f", "#d21f1f", "#8a8f98", "#e3f1e6", "#555"
HIST_BINS = 30
TOP_CATEGORIES = 10


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for reading: ``digits`` significant digits, no exponent for everyday magnitudes."""
    if value is None or not math.isfinite(value):
        return "–"
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e6:
        return f"{value:.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"
    return f"{value:.{digits - 1}e}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else [0.0]
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * (1 - 1e-9))
    first = math.floor(low / step + 1e-9) * step
    ticks, value = [], first
    while value < high + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _svg_open(css_class: str, width: int, height: int, title: str) -> str:
    label = html.escape(title, quote=True)
    return (f'<svg class="{css_class}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{label}" data-title="{label}">')


def tick_labels(ticks: Sequence[float], percent: bool = False) -> list[str]:
    """Tick texts with as many decimals as the step needs (so that neighbours never print alike)."""
    scaled = [t * 100 for t in ticks] if percent else list(ticks)
    step = min((b - a for a, b in zip(scaled, scaled[1:]) if b > a), default=1.0)
    largest = max((abs(t) for t in scaled), default=0.0)
    if not percent and (largest >= 1e6 or 0 < largest < 1e-3):
        return [f"{t:.3g}" for t in scaled]
    decimals = 0
    while decimals < 8 and abs(round(step, decimals) - step) > 1e-9 * max(step, 1e-300):
        decimals += 1
    return [f"{t:.{decimals}f}{'%' if percent else ''}" for t in scaled]


def _y_axis(ticks: Sequence[float], y: object, left: float, right: float, percent: bool = False) -> list[str]:
    parts = []
    for tick, text in zip(ticks, tick_labels(ticks, percent)):
        py = y(tick)  # type: ignore[operator]
        parts.append(f'<line x1="{left:.1f}" x2="{right:.1f}" y1="{py:.1f}" y2="{py:.1f}" stroke="#e5e7eb"/>'
                     f'<text x="{left - 4:.1f}" y="{py + 3.5:.1f}" font-size="10" fill="{INK}" '
                     f'text-anchor="end">{text}</text>')
    return parts


def _window_label(window: Window) -> str:
    return f"{window.period} window {window.index}"


def timeline(points: Sequence[tuple[Window, WindowResult]], title: str, include_zero: bool = False,
             width: int = 560, height: int = 190) -> str:
    """Values over windows: y-axis ticks, the band between the thresholds (green: no alert), dashed threshold
    lines, red alert markers, hollow grey markers for windows without a verdict; a partial window is a grey
    square joined by a dotted line, left out of the y range (clamped to the edge with a triangle when beyond)."""
    finite = [(w, r) for w, r in points if math.isfinite(r.value)]
    if not finite:
        return ""
    left, right, top, bottom = 50.0, width - 12.0, 20.0, height - 30.0
    scale_values = [r.value for w, r in finite if not w.partial] or [r.value for _, r in finite]
    scale_values += [t for _, r in finite for t in (r.lower_threshold, r.upper_threshold)
                     if t is not None and math.isfinite(t)]
    low, high = min(scale_values), max(scale_values)
    if include_zero:
        low = min(low, 0.0)
    if high - low < 1e-12:
        low, high = low - 0.5 * (abs(low) or 1), high + 0.5 * (abs(high) or 1)
    ticks = nice_ticks(low, high)
    low, high = min(ticks[0], low), max(ticks[-1], high)
    count = len(points)
    step = (right - left) / max(count, 1)

    def x(i: int) -> float:
        return left + step * (i + 0.5)

    def y(v: float) -> float:
        return bottom - (bottom - top) * (v - low) / (high - low)

    parts = [_svg_open("plot", width, height, title), f'<rect width="{width}" height="{height}" fill="#fff"/>']
    parts += _y_axis(ticks, y, left, right)
    first_analysis = next((i for i, (w, _) in enumerate(points) if w.period == "analysis"), None)
    if first_analysis:
        edge = left + step * first_analysis
        parts.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{edge - left:.1f}" height="{bottom - top:.1f}" '
                     'fill="#f1f4f9" opacity="0.7"/>'
                     f'<line x1="{edge:.1f}" x2="{edge:.1f}" y1="{top - 6:.1f}" y2="{bottom:.1f}" stroke="{GREY}" '
                     'stroke-dasharray="3,3"/>'
                     f'<text x="{left + 3:.1f}" y="{top - 6:.1f}" font-size="10" fill="{INK}">reference</text>'
                     f'<text x="{edge + 3:.1f}" y="{top - 6:.1f}" font-size="10" fill="{INK}">analysis</text>')
    # The band of no alert, window by window (thresholds may differ between windows).
    upper_edge, lower_edge, uppers, lowers = [], [], [], []
    for i, (_, r) in enumerate(points):
        if r.lower_threshold is None and r.upper_threshold is None:
            continue
        a, b = x(i) - step / 2, x(i) + step / 2
        hi = y(min(r.upper_threshold, high)) if r.upper_threshold is not None else top
        lo = y(max(r.lower_threshold, low)) if r.lower_threshold is not None else bottom
        upper_edge += [(a, hi), (b, hi)]
        lower_edge += [(a, lo), (b, lo)]
        if r.upper_threshold is not None:
            uppers += [(a, hi), (b, hi)]
        if r.lower_threshold is not None:
            lowers += [(a, lo), (b, lo)]
    if upper_edge:
        outline = " ".join(f"{px:.1f},{py:.1f}" for px, py in upper_edge + lower_edge[::-1])
        parts.append(f'<polygon class="band" points="{outline}" fill="{BAND}" opacity="0.8"/>')
    for line, name in ((uppers, "upper"), (lowers, "lower")):
        if line:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in line)
            parts.append(f'<polyline class="threshold {name}" points="{path}" fill="none" stroke="{ORANGE}" '
                         'stroke-dasharray="5,3" stroke-width="1.4"/>')
    full = [(i, r) for i, (w, r) in enumerate(points) if math.isfinite(r.value) and not w.partial]
    for period in ("reference", "analysis"):
        segment = [(i, r) for i, r in full if r.period == period]
        if segment:
            path = " ".join(f"{x(i):.1f},{y(r.value):.1f}" for i, r in segment)
            parts.append(f'<polyline class="value" points="{path}" fill="none" stroke="{BLUE}" stroke-width="2"/>')
    for i, (window, r) in enumerate(points):
        if not math.isfinite(r.value):
            continue
        verdict = "ALERT" if r.alert else ("no verdict (too few values)" if r.alert is None else "no alert")
        threshold = ", ".join(f"{name} {fmt(t)}" for name, t in (("lower", r.lower_threshold),
                                                                   ("upper", r.upper_threshold)) if t is not None)
        tip = (f"{_window_label(window)}{' (partial)' if window.partial else ''}, {window.rows} rows: "
               f"{fmt(r.value, 4)}{'; ' + threshold if threshold else ''}; {verdict}")
        cx, cy = x(i), y(min(max(r.value, low), high))
        if window.partial:
            previous = next(((j, q) for j, q in reversed(full) if j < i), None)
            if previous is not None:
                parts.append(f'<line x1="{x(previous[0]):.1f}" y1="{y(previous[1].value):.1f}" x2="{cx:.1f}" '
                             f'y2="{cy:.1f}" stroke="{GREY}" stroke-dasharray="2,3"/>')
            clamped = r.value > high or r.value < low
            shape = (f'<path d="M{cx - 5:.1f},{cy + (4 if r.value > high else -4):.1f} L{cx + 5:.1f},'
                     f'{cy + (4 if r.value > high else -4):.1f} L{cx:.1f},{cy:.1f} Z"' if clamped else
                     f'<rect x="{cx - 4:.1f}" y="{cy - 4:.1f}" width="8" height="8"')
            stroke = RED if r.alert else GREY
            parts.append(f'{shape} class="partial" fill="#fff" stroke="{stroke}" stroke-width="1.5">'
                         f'<title>{html.escape(tip)}</title></{"path" if clamped else "rect"}>')
            continue
        if r.alert:
            marker = f'<circle class="alert" cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{RED}" stroke="#fff"'
        elif r.alert is None:
            marker = f'<circle class="unjudged" cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="#fff" stroke="{GREY}"'
        else:
            marker = f'<circle class="point" cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{BLUE}"'
        parts.append(f'{marker}><title>{html.escape(tip)}</title></circle>')
    every = max(1, math.ceil(count / 16))
    for i, (window, _) in enumerate(points):
        if i % every == 0 or window.partial:
            mark = "*" if window.partial else ""
            parts.append(f'<text x="{x(i):.1f}" y="{bottom + 13:.1f}" font-size="9.5" fill="{INK}" '
                         f'text-anchor="middle">{window.index}{mark}</text>')
    note = "window (* partial)" if any(w.partial for w, _ in points) else "window"
    parts.append(f'<text x="{right:.1f}" y="{height - 4:.1f}" font-size="10" fill="{INK}" '
                 f'text-anchor="end">{note}</text></svg>')
    return "".join(parts)


def sparkline(values: Sequence[tuple[float, bool | None, bool]], width: int = 110, height: int = 22) -> str:
    """A tiny line of (value, alert, partial) per analysis window; alerts in red, partial windows left out."""
    shown = [(i, v, a) for i, (v, a, partial) in enumerate(values) if math.isfinite(v) and not partial]
    if len(shown) < 2:
        return ""
    low, high = min(v for _, v, _ in shown), max(v for _, v, _ in shown)
    span = high - low or 1.0

    def x(i: int) -> float:
        return 3 + (width - 6) * i / max(len(values) - 1, 1)

    def y(v: float) -> float:
        return height - 3 - (height - 6) * (v - low) / span

    path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v, _ in shown)
    dots = "".join(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.2" fill="{RED}"/>' for i, v, a in shown if a)
    return (f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'aria-hidden="true"><polyline points="{path}" fill="none" stroke="{BLUE}" stroke-width="1.3"/>'
            f"{dots}</svg>")


def _shares(sketch: NumericSketch, edges: np.ndarray) -> np.ndarray:
    keys, counts = sketch.buckets()
    if counts.size == 0:
        return np.zeros(edges.size - 1)
    lower, upper = sketch.bounds(keys)
    middle = np.where(np.isfinite(lower) & np.isfinite(upper), (lower + upper) / 2,
                      np.where(np.isfinite(lower), lower, upper))
    middle = np.clip(middle, sketch.min, sketch.max)
    index = np.clip(np.searchsorted(edges, middle, side="right") - 1, 0, edges.size - 2)
    return np.bincount(index, weights=counts.astype(np.float64), minlength=edges.size - 1) / counts.sum()


def _legend(x0: float, y0: float, entries: Sequence[tuple[str, str, bool]]) -> str:
    parts, x = [], x0
    for text, color, filled in entries:
        fill = color if filled else "#fff"
        parts.append(f'<rect x="{x:.1f}" y="{y0 - 8:.1f}" width="10" height="10" fill="{fill}" stroke="{color}" '
                     f'stroke-width="1.5" opacity="{0.55 if filled else 1}"/><text x="{x + 14:.1f}" y="{y0 + 1:.1f}" '
                     f'font-size="10.5" fill="#333">{html.escape(text)}</text>')
        x += 24 + 6.2 * len(text)
    return "".join(parts)


def histogram(reference: NumericSketch, analysis: NumericSketch, title: str, analysis_label: str,
              width: int = 460, height: int = 200) -> str:
    """Shares of the reference and the analysis sketch in equal-width bins between the 0.5 % and 99.5 %
    quantiles of both (the outer bins hold the tails): reference filled blue, analysis as an orange outline."""
    if reference.count == 0 or analysis.count == 0:
        return ""
    lo = min(quantile(reference, 0.005), quantile(analysis, 0.005))
    hi = max(quantile(reference, 0.995), quantile(analysis, 0.995))
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi - lo < 1e-12 * max(abs(lo), abs(hi), 1.0):
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    ref, ana = _shares(reference, edges), _shares(analysis, edges)
    left, right, top, bottom = 44.0, width - 10.0, 26.0, height - 26.0
    ticks = nice_ticks(0.0, float(max(ref.max(), ana.max())), 4)
    peak = ticks[-1] or 1.0

    def x(v: float) -> float:
        return left + (right - left) * (v - lo) / (hi - lo)

    def y(share: float) -> float:
        return bottom - (bottom - top) * share / peak

    parts = [_svg_open("chart hist", width, height, title), f'<rect width="{width}" height="{height}" fill="#fff"/>']
    parts += _y_axis(ticks, y, left, right, percent=True)
    bar = (right - left) / HIST_BINS
    for i, share in enumerate(ref.tolist()):
        if share > 0:
            parts.append(f'<rect x="{left + i * bar + 0.5:.1f}" y="{y(share):.1f}" width="{bar - 1:.1f}" '
                         f'height="{bottom - y(share):.1f}" fill="{BLUE}" opacity="0.45"><title>reference '
                         f'{fmt(edges[i])} – {fmt(edges[i + 1])}: {share:.1%}</title></rect>')
    outline = []
    for i, share in enumerate(ana.tolist()):
        outline += [(left + i * bar, y(share)), (left + (i + 1) * bar, y(share))]
    path = " ".join(f"{px:.1f},{py:.1f}" for px, py in [(left, bottom), *outline, (right, bottom)])
    parts.append(f'<polyline class="analysis" points="{path}" fill="none" stroke="{ORANGE}" stroke-width="2"/>')
    x_ticks = nice_ticks(lo, hi, 6)
    for tick, text in zip(x_ticks, tick_labels(x_ticks)):
        if lo <= tick <= hi:
            parts.append(f'<text x="{x(tick):.1f}" y="{bottom + 13:.1f}" font-size="10" fill="{INK}" '
                         f'text-anchor="middle">{text}</text>')
    parts.append(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#999"/>')
    parts.append(_legend(left, 13, [(f"reference ({reference.count:,} values)", BLUE, True),
                                    (f"{analysis_label} ({analysis.count:,})", ORANGE, False)]))
    parts.append("</svg>")
    return "".join(parts)


def bars(reference: CategoricalSketch, analysis: CategoricalSketch, title: str, analysis_label: str,
         width: int = 460) -> str:
    """Shares of the most frequent categories (of either side; the rest as "other"), reference and analysis
    side by side."""
    ref_total, ana_total = reference.count, analysis.count
    if ref_total == 0 or ana_total == 0:
        return ""
    ref_share = {k: n / ref_total for k, n in reference.counts.items()}
    ana_share = {k: n / ana_total for k, n in analysis.counts.items()}
    ranked = sorted(set(ref_share) | set(ana_share),
                    key=lambda k: (k == OTHER, -max(ref_share.get(k, 0.0), ana_share.get(k, 0.0)), k))
    shown = [k for k in ranked if k != OTHER][:TOP_CATEGORIES]
    rest = [k for k in ranked if k not in shown]
    rows = [(k, ref_share.get(k, 0.0), ana_share.get(k, 0.0)) for k in shown]
    if rest:
        rows.append((f"other ({len(rest)})", sum(ref_share.get(k, 0.0) for k in rest),
                     sum(ana_share.get(k, 0.0) for k in rest)))
    left, right, top = 120.0, width - 46.0, 26.0
    row_height = 22
    height = int(top + row_height * len(rows) + 22)
    ticks = nice_ticks(0.0, max(max(r, a) for _, r, a in rows), 4)
    peak = ticks[-1] or 1.0

    def x(share: float) -> float:
        return left + (right - left) * share / peak

    parts = [_svg_open("chart bars", width, height, title), f'<rect width="{width}" height="{height}" fill="#fff"/>']
    bottom = top + row_height * len(rows)
    for tick, text in zip(ticks, tick_labels(ticks, percent=True)):
        parts.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top:.1f}" y2="{bottom:.1f}" '
                     f'stroke="#e5e7eb"/><text x="{x(tick):.1f}" y="{bottom + 12:.1f}" font-size="10" fill="{INK}" '
                     f'text-anchor="middle">{text}</text>')
    for i, (name, ref, ana) in enumerate(rows):
        y0 = top + i * row_height
        label = name if len(name) <= 18 else name[:17] + "…"
        parts.append(f'<text x="{left - 6:.1f}" y="{y0 + 14:.1f}" font-size="10.5" fill="#333" text-anchor="end">'
                     f'{html.escape(label)}<title>{html.escape(name)}</title></text>'
                     f'<rect x="{left:.1f}" y="{y0 + 3:.1f}" width="{x(ref) - left:.1f}" height="8" fill="{BLUE}" '
                     f'opacity="0.55"><title>reference: {ref:.1%}</title></rect>'
                     f'<rect x="{left:.1f}" y="{y0 + 11:.1f}" width="{x(ana) - left:.1f}" height="8" fill="#fff" '
                     f'stroke="{ORANGE}" stroke-width="1.5"><title>{html.escape(analysis_label)}: {ana:.1%}</title>'
                     f'</rect><text x="{max(x(ref), x(ana)) + 4:.1f}" y="{y0 + 14:.1f}" font-size="9.5" '
                     f'fill="{INK}">{ref:.0%} → {ana:.0%}</text>')
    parts.append(_legend(left, 13, [("reference", BLUE, True), (analysis_label, ORANGE, False)]))
    parts.append("</svg>")
    return "".join(parts)


def coverage(windows: Sequence[Window], width: int = 560, height: int = 130) -> str:
    """Label coverage per window (labeled rows / rows) as bars with a 0–100 % axis; partial windows grey."""
    shown = [w for w in windows if w.rows]
    if not shown:
        return ""
    left, right, top, bottom = 50.0, width - 12.0, 14.0, height - 26.0
    step = (right - left) / len(shown)

    def y(share: float) -> float:
        return bottom - (bottom - top) * share

    parts = [_svg_open("chart coverage", width, height, "label coverage"),
             f'<rect width="{width}" height="{height}" fill="#fff"/>']
    parts += _y_axis([0.0, 0.5, 1.0], y, left, right, percent=True)
    every = max(1, math.ceil(len(shown) / 16))
    for i, w in enumerate(shown):
        share = w.labeled_rows / w.rows
        color = GREY if w.partial else ("#7a9cc6" if w.period == "reference" else BLUE)
        parts.append(f'<rect x="{left + i * step + 1:.1f}" y="{y(share):.1f}" width="{max(step - 2, 1):.1f}" '
                     f'height="{bottom - y(share):.1f}" fill="{color}"><title>{_window_label(w)}'
                     f'{" (partial)" if w.partial else ""}: {w.labeled_rows:,} of {w.rows:,} rows labeled '
                     f'({share:.0%})</title></rect>')
        if i % every == 0 or w.partial:
            parts.append(f'<text x="{left + (i + 0.5) * step:.1f}" y="{bottom + 12:.1f}" font-size="9.5" '
                         f'fill="{INK}" text-anchor="middle">{w.index}{"*" if w.partial else ""}</text>')
    parts.append("</svg>")
    return "".join(parts)
