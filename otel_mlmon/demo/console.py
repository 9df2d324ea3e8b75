"""What ``mlmon demo`` prints: a legend, the drift it injects, one line per window with the model's predictions and
the labels together, a comment when accuracy falls, and the alert counts (the report's, and those firing now)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from otel_mlmon.demo.data import CAUSE, DRIFT_FROM, FEATURES, SHIFTS, WINDOW_ROWS

HEADER = f"{'window':>6} {'rows':>5} {'labels':>6} {'predicted':>9} {'churned':>7} {'accuracy':>8}  drifted columns"
DRIFT_WINDOW = DRIFT_FROM // WINDOW_ROWS
COUNTS_DIFFER = ("(the report counts each window's alerts; what fires now counts once per column and metric, as "
                 "Alertmanager shows)")


def legend() -> list[str]:
    """What the columns of the window table mean."""
    return [f"One line per window of {WINDOW_ROWS} served rows, printed once its labels are in (they arrive two "
            "windows late):",
            "  rows, labels  rows served in the window; true labels the processor joined to them",
            "  predicted     share of the rows the model predicted to churn",
            "  churned       share of the rows that really churned (the labels)",
            "  accuracy      the processor's accuracy on the joined labels; '!' when below its band from the reference",
            "  drifted       columns whose distribution moved away from the reference: features, the model's "
            "prediction and score"]


def drift_plan() -> list[str]:
    """Which features the demo shifts, from which row, and how."""
    same = [name for name in FEATURES if name not in SHIFTS]
    lines = [f"Drift injected from row {DRIFT_FROM} (window {DRIFT_WINDOW} on) into {len(SHIFTS)} of the "
             f"{len(FEATURES)} features ({' and '.join(same)} stay as they were):"]
    width = max(map(len, SHIFTS))
    return lines + [f"  {name:<{width}}  {how}" for name, how in SHIFTS.items()]


def _by_window(results: Iterable[Mapping[str, Any]]) -> dict[int, list[Mapping[str, Any]]]:
    found: dict[int, list[Mapping[str, Any]]] = {}
    for r in results:
        if r["period"] == "analysis":
            found.setdefault(int(r["window"]), []).append(r)
    return found


def _accuracy(rows: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return next((r for r in rows if r["kind"] == "performance" and r["metric"] == "accuracy"), None)


class WindowTable:
    """The live table: each window once, in order, when its labels are in (or at the end, as it is).

    ``shares`` gives per window the share of rows predicted to churn and the share that churned."""

    def __init__(self, shares: Mapping[int, tuple[float, float]]) -> None:
        self.shares = shares
        self.printed: dict[int, str] = {}
        self.commented = False

    def lines(self, results: Iterable[Mapping[str, Any]], final: bool = False) -> list[str]:
        """The lines to print now for the processor's current ``results`` (each window printed once)."""
        out = []
        windows = _by_window(results)
        for window in sorted(windows):
            if window in self.printed:
                continue
            rows = windows[window]
            accuracy = _accuracy(rows)
            labeled = int(rows[0]["labeled_rows"] or 0)
            if not final and (accuracy is None or labeled < int(rows[0]["rows"])):
                break  # in window order: the next line waits for its labels
            if window == DRIFT_WINDOW:
                out.append(f"{'-' * 6} drift starts (row {DRIFT_FROM}): {' and '.join(SHIFTS)} shifted {'-' * 6}")
            line = self._line(window, rows, accuracy)
            self.printed[window] = line
            out.append(line)
            if accuracy is not None and accuracy["alert"] is True and not self.commented:
                self.commented = True
                out.extend(self._comment(accuracy, window, windows))
        return out

    def _line(self, window: int, rows: list[Mapping[str, Any]], accuracy: Mapping[str, Any] | None) -> str:
        predicted, churned = self.shares.get(window, (float("nan"), float("nan")))
        drifted = sorted({r["column"] for r in rows if r["kind"] == "drift" and r["alert"] is True})
        shown = "" if accuracy is None else f"{accuracy['value']:.3f}" + (" !" if accuracy["alert"] is True else "  ")
        return (f"{window:>6} {rows[0]['rows']:>5} {rows[0]['labeled_rows'] or 0:>6} {predicted:>8.0%} "
                f"{churned:>7.0%} {shown:>8}  {', '.join(drifted) or '-'}")

    def _comment(self, accuracy: Mapping[str, Any], window: int,
                 windows: Mapping[int, list[Mapping[str, Any]]]) -> list[str]:
        before = [a["value"] for w, rows in windows.items() if w < DRIFT_WINDOW and (a := _accuracy(rows))]
        predicted, churned = self.shares.get(window, (float("nan"), float("nan")))
        was = f" from {sum(before) / len(before):.3f} before the drift" if before else ""
        band = accuracy.get("lower_threshold")
        return [f"  ^ accuracy fell{was} to {accuracy['value']:.3f}" +
                (f", below its band (>= {band:.3f})" if band is not None else "") + ":",
                f"    the model relies on {CAUSE} and reads its shift as a reason to churn: it predicts churn",
                f"    for {predicted:.0%} of the rows where {churned:.0%} churned. The drift alerts came first "
                "(no labels needed);", "    the late labels show what it costs."]


def _spans(windows: list[int]) -> str:
    """``[3, 4, 5, 7]`` -> ``3-5, 7``."""
    out: list[str] = []
    for window in sorted(windows):
        if out and out[-1].split("-")[-1] == str(window - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{window}"
        else:
            out.append(str(window))
    return ", ".join(out)


_ORDER = {kind: i for i, kind in enumerate(("performance", "performance_change", "drift", "data_quality",
                                             "estimated_performance"))}


def _crossed(r: Mapping[str, Any]) -> str:
    lower, upper = r.get("lower_threshold"), r.get("upper_threshold")
    if lower is not None and r["value"] < lower:
        return f"< {lower:.3f}"
    return f"> {upper:.3f}" if upper is not None else ""


def analysis_alerts(results: Iterable[Any]) -> int:
    """The report's alert count (``count_alerts``): analysis-window results whose verdict is an alert."""
    from otel_mlmon.batch.report_data import count_alerts

    return count_alerts(window_results(results))


def window_results(rows: Iterable[Any]) -> list[Any]:
    """``WindowResult`` objects of the processor's result rows (its store's or ``GET /v1/results``'), without the
    fields some kinds add (a ``performance_change`` row's before, after and labels)."""
    from dataclasses import fields

    from otel_mlmon.engine.results import WindowResult

    names = [f.name for f in fields(WindowResult)]
    return [r if isinstance(r, WindowResult) else WindowResult(**{n: r.get(n) for n in names}) for r in rows]


def alert_lines(results: Sequence[Mapping[str, Any]], firing: Sequence[Mapping[str, Any]]) -> list[str]:
    """The two counts, why they differ, and each firing alert with the windows it alerted in."""
    total = analysis_alerts(results)
    lines = [f"{total} alerts in the analysis windows, {len(firing)} firing now",
             f"  {COUNTS_DIFFER}"]
    alerted: dict[tuple[str, str, str], list[int]] = {}
    for r in results:
        if r["period"] == "analysis" and r["alert"] is True:
            alerted.setdefault((r["kind"], r["column"], r["metric"]), []).append(int(r["window"]))
    for r in sorted(firing, key=lambda r: (_ORDER.get(r["kind"], len(_ORDER)), r["kind"], r["column"], r["metric"])):
        windows = alerted.get((r["kind"], r["column"], r["metric"]), [int(r["window"])])
        lines.append(f"  {r['kind']:<21} {r['column']:<16} {r['metric']:<19} {r['value']:.3f} {_crossed(r):<8} "
                     f"window{'s' if len(windows) > 1 else ''} {_spans(windows)}")
    return lines
