"""The HTML report: self-contained, ranked by severity, one alert count with the console, partial windows drawn
apart, distributions and confusion matrices from ``ReportData``, a size budget at 1,000 features, and rendered by
a real browser (headless Chromium) without console errors."""

from __future__ import annotations

import html
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from otel_mlmon import cli
from otel_mlmon.batch.report import SIZE_BUDGET, ReportData, count_alerts, render
from otel_mlmon.batch.report_data import as_results, summarize, windows_of
from otel_mlmon.batch.report_svg import HIST_BINS, _shares
from otel_mlmon.engine.columns import build_profile, window_from_columns
from otel_mlmon.engine.evaluate import LabeledRows, evaluate_window
from otel_mlmon.engine.profile import ColumnProfile, ReferenceProfile
from otel_mlmon.engine.results import WindowResult
from otel_mlmon.engine.windows import WindowSpec
from otel_mlmon.sketch import NumericSketch, update_columns
from tests.batch.test_evaluate_cli import FLAGS


def _report(files, tmp_path: Path) -> tuple[str, Path]:
    report = tmp_path / "report.html"
    assert cli.main(["evaluate", "--reference", str(files["reference"]), "--analysis", str(files["analysis"]),
                     "--labels", str(files["labels"]), *FLAGS, "--chunk-size", "1000", "--output",
                     str(tmp_path / "results.csv"), "--report", str(report)]) == 0
    return report.read_text(), report


def _ranked_alerts(text: str) -> list[int]:
    """The 'alerts' cell of every row of the ranked tables."""
    return [int(n) for n in re.findall(r"<tr class='alerting' data-name=[^>]*>(?:<td[^>]*>.*?</td>){4}"
                                       r"<td class='num'>(\d+)", text)]


def test_report_is_self_contained_with_a_plot_per_series(files, tmp_path, capsys) -> None:
    import pandas as pd

    text, _ = _report(files, tmp_path)
    results = pd.read_csv(tmp_path / "results.csv")
    # A small run: every series but data quality (a table) has its timeline.
    series = results[results.kind != "data_quality"].groupby(["kind", "column", "metric"]).ngroups
    plots = re.findall(r'<svg class="plot"[^>]*data-title="([^"]+)"', text)
    assert len(plots) == series
    assert "age years jensen_shannon" in plots and "target accuracy" in plots
    assert "<link" not in text and "src=" not in text and "@import" not in text and "url(" not in text
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert set(re.findall(r"https?://[^\"' ]+", text)) == {"http://www.w3.org/2000/svg"}
    ranked = text[text.index("id='ranked'"):text.index("</table>", text.index("id='ranked'"))]
    assert "age years" in ranked and "income" not in ranked
    assert text.count('class="alert"') >= 2  # alerts marked on the timelines
    # One alert count: the console's, the header's, the results file's and the ranked table's sum.
    console = int(re.search(r"(\d+) alert\(s\) in the analysis period", capsys.readouterr().err).group(1))
    header = int(re.search(r"id='alert-count'><b>(\d+)</b>", text).group(1))
    in_file = int(((results.period == "analysis") & (results.alert.astype(str) == "True")).sum())
    assert console == header == in_file == sum(_ranked_alerts(text)) > 0


def _row(column: str, metric: str, window: int, value: float, alert: bool | None, *, period: str = "analysis",
         kind: str = "drift", rows: int = 1000, upper: float | None = 0.1, lower: float | None = None,
         start: str | None = None) -> WindowResult:
    return WindowResult("m", "1", period, window, start, None, rows, 0, column, kind, metric, value, lower, upper,
                        alert, 0.001 if alert else 0.5)


def _synthetic() -> list[WindowResult]:
    """Column a alerts in windows 2-3 and still does; b alerted in window 1 only; c never alerts but its partial
    last window (12 rows) has a huge value; d alerts in data quality only."""
    sizes = [1000, 1000, 1000, 1000, 12]
    rows = [_row(c, "jensen_shannon", w, 0.02, False, period="reference") for c in "abcd" for w in range(3)]
    a = [0.03, 0.05, 0.3, 0.4, 0.2]
    b = [0.02, 0.5, 0.04, 0.03, 0.05]
    c = [0.03, 0.04, 0.05, 0.06, 0.95]
    for w, n in enumerate(sizes):
        start = f"2026-03-0{w + 1}T00:00:00Z"
        rows += [_row("a", "jensen_shannon", w, a[w], a[w] > 0.1 if n > 30 else None, rows=n, start=start),
                 _row("b", "jensen_shannon", w, b[w], b[w] > 0.1 if n > 30 else None, rows=n, start=start),
                 _row("c", "jensen_shannon", w, c[w], False if n > 30 else None, rows=n, start=start),
                 _row("d", "jensen_shannon", w, 0.01, False if n > 30 else None, rows=n, start=start),
                 _row("d", "missing_rate", w, 0.3 if w == 3 else 0.0, w == 3, kind="data_quality", rows=n,
                      upper=0.02, start=start)]
    return rows


def test_columns_are_ranked_by_severity_with_since_and_partial_windows_apart() -> None:
    rows = _synthetic()
    windows = windows_of(rows)
    assert [w.index for w in windows.values() if w.partial] == [4]
    ranked = summarize(rows, windows)
    # a alerts in 2 windows; d and b in 1, d further beyond its threshold (15x against 5x); c never.
    assert [s.column for s in ranked] == ["a", "d", "b", "c"]
    a, b = ranked[0], ranked[2]
    assert (a.since, a.still_alerting, b.since, b.still_alerting) == (2, True, 1, False)
    assert ranked[3].worst is not None and ranked[3].worst.window == 3  # the partial 0.95 never ranks c
    text = render(rows)
    assert re.findall(r"data-name='(\w)'><td class='num'>\d+</td>", text) == ["a", "d", "b"]
    assert "window 2 · 2026-03-03 00:00 UTC <b>· still alerting</b>" in text
    assert "cleared by window 3" in text  # b alerted in window 1; window 4 is partial without a verdict
    # c's timeline: the y axis stops near the full windows' values; the partial value is a clamped triangle.
    plot = re.search(r'<svg class="plot"[^>]*data-title="c jensen_shannon".*?</svg>', text).group(0)
    ticks = [float(t) for t in re.findall(r'text-anchor="end">([\d.]+)</text>', plot)]
    assert max(ticks) < 0.2 and '<path d="M' in plot and 'class="partial"' in plot
    assert "partial), 12 rows: 0.95" in html.unescape(plot)
    # Data quality shows the one column with a problem.
    quality = text[text.index("id='data_quality'"):]
    assert "missing_rate" in quality and "0 other column(s) without a data-quality alert" in quality


def test_partial_windows_are_the_short_last_window_of_a_period() -> None:
    def partial(sizes: list[int]) -> list[int]:
        rows = [_row("a", "psi", w, 0.0, False, rows=n) for w, n in enumerate(sizes)]
        return [w.index for w in windows_of(rows).values() if w.partial]

    assert partial([1000, 1000, 1000, 999]) == [3]  # row windows: all full ones alike
    assert partial([950, 1000, 1020, 900]) == []  # time windows vary: not partial
    assert partial([950, 1000, 1020, 300]) == [3]
    assert partial([500]) == []


def test_rows_as_json_mappings_and_new_kinds_render_generically() -> None:
    rows = [dict(r.as_json(), alert="" if r.alert is None else r.alert) for r in _synthetic()]
    rows += [dict(_row("target", "accuracy", w, 0.8, False, kind="estimated_performance", upper=0.9,
                       lower=0.7).as_json()) for w in range(4)]
    rows += [dict(_row("sex=F", "demographic_parity", w, 0.2, w == 3, kind="fairness").as_json())
             for w in range(4)]
    results = as_results(rows)
    assert count_alerts(results) == count_alerts(as_results(_synthetic())) + 1
    text = render(rows)
    assert "<h2 id='estimated_performance'>Estimated performance</h2>" in text
    assert "<h2 id='fairness'>Fairness</h2>" in text and 'data-title="sex=F demographic_parity"' in text
    # A segment's rows are their own series (the whole window's keep the plain column name).
    segmented = [dict(r, segment="gold", value=0.9) if r["column"] == "a" else dict(r, segment=None) for r in rows]
    shown = as_results(segmented)
    assert {r.column for r in shown} >= {"a [segment gold]", "b", "sex=F"} and "a" not in {r.column for r in shown}
    assert 'data-title="a [segment gold] jensen_shannon"' in render(segmented)
    with pytest.raises(ValueError, match="no 'metric' field"):
        as_results([{"model": "m"} | {k: v for k, v in rows[0].items() if k != "metric"}])


def _labeled_run(rng: np.random.Generator) -> tuple[ReferenceProfile, list[WindowResult], ReportData, dict]:
    """An in-memory run as the batch path makes it: reference windows, then analysis windows with joined labels,
    each added to ``ReportData`` with its results."""
    def table(n: int, shift: float) -> dict[str, np.ndarray]:
        x = rng.normal(shift, 1.0, n)
        plan = rng.choice(np.array(["basic", "gold", "platinum"]), n, p=[0.6, 0.3, 0.1] if not shift else
                          [0.2, 0.3, 0.5])
        score = 1 / (1 + np.exp(-x))
        return {"x": x, "plan": plan, "score": score, "prediction": (score > 0.5).astype(int).astype(str),
                "target": (rng.random(n) < score).astype(int).astype(str)}

    reference = table(3000, 0.0)
    profile, windows = build_profile(reference, WindowSpec(chunk_size=1000), model="m", version="1",
                                     prediction_column="prediction", score_columns={"1": "score"},
                                     target_column="target", categorical=["plan"])
    data = ReportData(profile)
    rows: list[WindowResult] = []
    for window in windows:
        found = evaluate_window(profile, window)
        rows += found
        data.add(window, found)
    raw: dict[int, dict[str, np.ndarray]] = {}
    for index, (n, shift) in enumerate([(1000, 0.0), (1000, 1.5), (1000, 1.5), (150, 1.5)]):
        part = raw[index] = table(n, shift)
        window = window_from_columns(profile, {k: v for k, v in part.items() if k != "target"}, index)
        labeled = rng.random(n) < 0.7
        window.labeled = LabeledRows(part["target"][labeled].tolist(), part["prediction"][labeled].tolist())
        raw[index]["labeled"] = labeled
        found = evaluate_window(profile, window)
        rows += found
        data.add(window, found)
    return profile, rows, data, raw


def test_distributions_and_confusion_matrices_come_from_report_data() -> None:
    from sklearn.metrics import confusion_matrix

    profile, rows, data, raw = _labeled_run(np.random.default_rng(4))
    assert data.alerting_windows["x"] == [1, 2, 3]
    text = render(rows, profile, data)
    card = text[text.index("id='col-x'"):]
    assert card.index('class="chart hist"') < card.index('<svg class="plot"')
    assert "x: reference vs windows 1–3" in text
    assert 'class="chart bars"' in text  # plan, categorical
    # The category shares shown are the raw data's: reference vs the alerting windows merged.
    shifted = np.concatenate([raw[i]["plan"] for i in (1, 2, 3)])
    reference = profile.columns["plan"].sketch
    for category in ("basic", "platinum"):
        shown = re.search(rf"{category}<title>{category}</title></text>.*?(\d+%) → (\d+%)", text).groups()
        assert shown == (f"{reference.counts[category] / reference.count:.0%}", f"{np.mean(shifted == category):.0%}")
    # One confusion matrix per window, equal to scikit-learn's on the window's labeled rows.
    for index in range(4):
        labeled = raw[index]["labeled"]
        expected = confusion_matrix(raw[index]["target"][labeled], raw[index]["prediction"][labeled],
                                    labels=["0", "1"])
        block = re.search(rf"<b>window {index}</b>.*?</table>", text, re.S).group(0)
        cells = [int(n.replace(",", "")) for n in re.findall(r"<td [^>]*>([\d,]+)</td>", block)]
        assert cells == expected.ravel().tolist()
    assert "<b>window 3</b> <i>(partial)</i>" in text


def test_histogram_shares_equal_numpy_on_the_raw_values() -> None:
    rng = np.random.default_rng(11)
    values = rng.lognormal(3, 0.6, 20_000)
    sketch = NumericSketch(float(np.median(values)), float(np.subtract(*np.percentile(values, [75, 25]))))
    sketch.update(values)
    edges = np.linspace(np.quantile(values, 0.005), np.quantile(values, 0.995), HIST_BINS + 1)
    expected = np.histogram(np.clip(values, edges[0], edges[-1]), edges)[0] / values.size
    assert np.abs(_shares(sketch, edges) - expected).max() < 0.002


def _wide(features: int, windows: int, rows_per_window: int = 200) -> tuple[list[WindowResult], ReferenceProfile,
                                                                               ReportData]:
    """Results of the engine's shape for ``features`` features, every one drifting in every analysis window (the
    largest report), with sketches for each window: a partial last window too."""
    rng = np.random.default_rng(5)
    names = [f"feature_{i:04d}" for i in range(features)]
    reference = [NumericSketch() for _ in names]
    update_columns(reference, rng.normal(size=(rows_per_window * 4, features)))
    profile = ReferenceProfile("wide", "1", "regression", WindowSpec(chunk_size=rows_per_window),
                               {n: ColumnProfile(n, "numeric", "feature", s) for n, s in zip(names, reference)})
    data = ReportData(profile)
    out = []
    for period, count in (("reference", 4), ("analysis", windows)):
        for w in range(count):
            n = rows_per_window if w < count - 1 or period == "reference" else rows_per_window // 10
            drift = period == "analysis" and w > 0
            for i, name in enumerate(names):
                value = 0.05 + (0.3 + 0.001 * i if drift else 0.0)
                alert = drift if n >= 30 else None
                for metric in ("jensen_shannon", "kolmogorov_smirnov"):
                    out.append(WindowResult("wide", "1", period, w, None, None, n, 0, name, "drift", metric, value,
                                            None, 0.1, alert, 1e-6 if drift else 0.4))
                for metric in ("missing_rate", "out_of_range_rate"):
                    out.append(WindowResult("wide", "1", period, w, None, None, n, 0, name, "data_quality", metric,
                                            0.0, None, 0.02, False if n >= 30 else None, 1.0))
            if period == "analysis":
                sketches = [NumericSketch() for _ in names]
                update_columns(sketches, rng.normal(1.0 if drift else 0.0, size=(n, features)))
                from otel_mlmon.engine.evaluate import WindowData

                data.add(WindowData(period, w, n, dict(zip(names, sketches))),
                         [r for r in out if r.period == period and r.window == w])
    return out, profile, data


def test_a_thousand_drifting_features_stay_under_the_size_budget(tmp_path) -> None:
    rows, profile, data = _wide(1000, 8)
    text = render(rows, profile, data)
    size = len(text.encode())
    assert size < SIZE_BUDGET, f"{size:,} bytes for 1,000 features (budget {SIZE_BUDGET:,})"
    assert int(re.search(r"id='alert-count'><b>(\d+)</b>", text).group(1)) == count_alerts(rows) == 1000 * 2 * 6
    assert sum(_ranked_alerts(text)) == count_alerts(rows)
    assert text.count('class="chart hist"') == 40  # charts for the most severe columns only
    (tmp_path / "wide.html").write_text(text)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and raw (filtered) scanlines of an 8-bit RGB(A) PNG: enough to see it is not blank."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    chunks, position = [], 8
    while position < len(data):
        length = struct.unpack(">I", data[position: position + 4])[0]
        kind = data[position + 4: position + 8]
        if kind == b"IDAT":
            chunks.append(data[position + 8: position + 8 + length])
        position += 12 + length
    return width, height, zlib.decompress(b"".join(chunks))


def _browser(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    browser = _chromium()
    if browser is None:
        pytest.fail("chromium is not installed: `make test` installs it (scripts/system-deps.sh)")
    flags = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}"]
    done = subprocess.run([*flags, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # Console messages (errors, CSP refusals of any network access) are logged as CONSOLE lines.
    assert [line for line in done.stderr.splitlines() if ":CONSOLE" in line] == []
    return done


@pytest.mark.integration
def test_a_real_browser_renders_the_report_without_console_errors(files, tmp_path) -> None:
    _, report = _report(files, tmp_path)
    profile, rows, data, _ = _labeled_run(np.random.default_rng(4))
    full = tmp_path / "full.html"
    full.write_text(render(rows, profile, data))
    for page in (report, full):
        dom = _browser(tmp_path, "--dump-dom", page.as_uri()).stdout
        assert dom.count('<svg class="plot"') == page.read_text().count('<svg class="plot"') > 10
        assert "<circle" in dom and "threshold upper" in dom
    assert 'class="chart hist"' in full.read_text()
    shot = tmp_path / "report.png"
    _browser(tmp_path, "--window-size=1400,2400", f"--screenshot={shot}", full.as_uri())
    width, height, pixels = _png_pixels(shot)
    assert (width, height) == (1400, 2400)
    # Blue lines and bars, orange thresholds, green bands and red alert markers: the page is not a blank sheet.
    assert shot.stat().st_size > 60_000 and len(set(pixels)) > 50
    if os.environ.get("MLMON_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["MLMON_KEEP_SCREENSHOT"])
    # The 1,000-feature report loads too, its filter script included.
    rows, profile, data = _wide(1000, 8)
    wide = tmp_path / "wide.html"
    wide.write_text(render(rows, profile, data))
    dom = _browser(tmp_path, "--dump-dom", wide.as_uri()).stdout
    assert dom.count('<tr class="alerting"') == 1000 and 'class="filter"' in dom
