"""Window results as TensorBoard scalars (``mlmon evaluate --tensorboard DIR``), written with tensorboardX.

One TensorBoard run per period (``DIR/reference``, ``DIR/analysis``; ``DIR/<model>/<version>/<period>`` when the
results hold several models), so the two periods overlay on each chart. Step = window index, wall time = the
window's end (its event time), so TensorBoard's "relative" and "wall" axes show event time. Tags:

- ``drift/<column>/<method>`` and ``data_quality/<column>/<metric>`` (characters other than letters, digits and
  ``_ - . /`` as ``_``, as TensorBoard wants them);
- ``performance/<metric>`` and ``estimated_performance/<metric>`` (the target's; another column's as
  ``performance/<column>/<metric>``);
- ``window/rows``, ``window/label_coverage`` (labeled rows / rows) and ``alerts/total`` (alerting rows).

Values without a number (NaN: no data) are left out rather than drawn as gaps of TensorBoard's making.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from otel_mlmon.batch.output import MissingExtraError, OutputError
from otel_mlmon.engine.results import WindowResult


def writer_class() -> Any:
    """tensorboardX's ``SummaryWriter``, or a ``MissingExtraError`` that says what to install."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise MissingExtraError("--tensorboard needs tensorboardX: pip install 'otel-mlmon[tensorboard]'") from None
    return SummaryWriter


_NOT_IN_TAGS = re.compile(r"[^-/\w.]")  # what TensorBoard (and tensorboardX) replace in a tag


def tag(row: WindowResult) -> str:
    """The scalar's tag of one window-result row; characters other than letters, digits and ``_ - . /`` become
    ``_`` (as TensorBoard does: a column ``age years`` gives ``drift/age_years/jensen_shannon``)."""
    if row.kind in ("performance", "estimated_performance") and "=" not in row.column:
        text = f"{row.kind}/{row.metric}"
    else:
        text = f"{row.kind}/{row.column}/{row.metric}"
    return _NOT_IN_TAGS.sub("_", text).lstrip("/")


def wall_time(row: WindowResult) -> float:
    """The window's end as epoch seconds (now, when the window has no time)."""
    for text in (row.window_end, row.window_start):
        if text:
            try:
                return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return time.time()


def scalars(rows: Iterable[WindowResult]) -> dict[tuple[str, ...], list[tuple[str, float, int, float]]]:
    """(run path parts) -> [(tag, value, step, wall time)]: what ``write_scalars`` writes."""
    rows = list(rows)
    several = len({(r.model, r.model_version) for r in rows}) > 1
    out: dict[tuple[str, ...], list[tuple[str, float, int, float]]] = defaultdict(list)
    windows: dict[tuple[tuple[str, ...], int], list[WindowResult]] = defaultdict(list)
    for r in rows:
        run: tuple[str, ...] = (r.model, r.model_version or "unversioned", r.period) if several else (r.period,)
        windows[(run, r.window)].append(r)
        if math.isfinite(r.value):
            out[run].append((tag(r), float(r.value), r.window, wall_time(r)))
    for (run, window), members in sorted(windows.items()):
        first = members[0]
        when = wall_time(first)
        out[run].append(("window/rows", float(first.rows), window, when))
        if first.rows:
            out[run].append(("window/label_coverage", first.labeled_rows / first.rows, window, when))
        out[run].append(("alerts/total", float(sum(1 for r in members if r.alert)), window, when))
    return out


def _safe(part: str) -> str:
    """A run path part that is one directory name."""
    cleaned = "".join(c if c.isalnum() or c in "-_. " else "_" for c in part).strip(" .")
    return cleaned or "_"


def write_scalars(rows: Iterable[WindowResult], logdir: str) -> int:
    """Write the rows' scalars into ``logdir`` (created if needed); returns how many scalars were written."""
    writer_type = writer_class()
    written = 0
    try:
        for run, points in scalars(rows).items():
            writer = writer_type(logdir=os.path.join(logdir, *map(_safe, run)), flush_secs=3600)
            try:
                for name, value, step, when in points:
                    writer.add_scalar(name, value, global_step=step, walltime=when)
                    written += 1
            finally:
                writer.close()
    except OSError as exc:
        raise OutputError(f"--tensorboard {logdir}: cannot write: {exc}") from None
    return written
