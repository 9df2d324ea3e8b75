"""The HTML report: self-contained, one plot per series, and rendered by a real browser (headless Chromium)."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from otel_mlmon import cli
from tests.batch.test_evaluate_cli import FLAGS


def _report(files, tmp_path: Path) -> tuple[str, Path]:
    report = tmp_path / "report.html"
    assert cli.main(["evaluate", "--reference", str(files["reference"]), "--analysis", str(files["analysis"]),
                     "--labels", str(files["labels"]), *FLAGS, "--chunk-size", "1000", "--output",
                     str(tmp_path / "results.csv"), "--report", str(report)]) == 0
    return report.read_text(), report


def test_report_is_self_contained_with_a_plot_per_series(files, tmp_path) -> None:
    import pandas as pd

    text, _ = _report(files, tmp_path)
    results = pd.read_csv(tmp_path / "results.csv")
    series = results[results.kind.isin(["drift", "performance"])].groupby(["column", "metric"]).ngroups
    plots = re.findall(r'<svg class="plot"[^>]*data-title="([^"]+)"', text)
    assert len(plots) == series
    assert "age years jensen_shannon" in plots and "target accuracy" in plots
    assert "<script" not in text and "<link" not in text and "src=" not in text
    assert re.findall(r"https?://[^\"' ]+", text) == ["http://www.w3.org/2000/svg"] * len(plots)
    summary = text[text.index("id='summary'"):text.index("id='drift'")]
    assert "age years" in summary and "income" not in summary
    assert text.count('class="alert"') >= 2  # alerts marked on the timelines


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


@pytest.mark.integration
def test_a_real_browser_renders_the_plots(files, tmp_path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.fail("chromium is not installed: `make test` installs it (scripts/system-deps.sh)")
    _, report = _report(files, tmp_path)
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr
    assert dom.stdout.count('<svg class="plot"') == report.read_text().count('<svg class="plot"') > 10
    assert "<circle" in dom.stdout and "threshold upper" in dom.stdout
    shot = tmp_path / "report.png"
    done = subprocess.run([*flags, "--window-size=1400,2400", f"--screenshot={shot}", report.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.exists(), done.stderr
    width, height, pixels = _png_pixels(shot)
    assert (width, height) == (1400, 2400)
    # Blue value lines, orange thresholds and red alert markers were drawn: the page is not a blank sheet.
    assert len(set(pixels)) > 50
    if os.environ.get("MLMON_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["MLMON_KEEP_SCREENSHOT"])
