"""Segments and fairness in the processor (issue 15): what a window's rows and sketch points give per segment, and
the rows fairness reads.

Segments: a model registered with a segmented profile (``mlmon reference build --segment-by COLUMN``, format
``otel-mlmon/segmented-profile``) is judged on the whole window as any model is, and then per segment, exactly as
``mlmon evaluate --segment-by`` does (``engine.segments``): the segments are the reference's; a row's segment is the
``ml.segment`` value its event carried when that is one of them, ``__missing__`` without one, ``__other__``
otherwise; a sketch point's is its ``ml.segment`` attribute, mapped the same way. Each segment's rows and points are
judged against that segment's profile (against the whole reference for a segment the reference did not have). A
window whose rows and points carry no segment at all (the application does not segment) gives no segment rows. Result
rows carry ``segment``: None for the whole window (only for segmented models), the segment's name otherwise.

Fairness: rows whose events carried ``ml.fairness.group`` (the application's sensitive column, opt-in) give the
engine's ``kind=fairness`` rows (``engine.fairness``) on the column ``ml.fairness.attribute`` named: every row's
sensitive value, its predicted label and its joined label (None until it joins), per window and per segment.

The processor calls the engine for all of it; nothing here computes a metric.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from otel_mlmon.engine.evaluate import Policy, reference_results
from otel_mlmon.engine.fairness import SensitiveRows
from otel_mlmon.engine.profile import ReferenceProfile, parse_document, read_document
from otel_mlmon.engine.results import SEGMENT, with_segment
from otel_mlmon.engine.segments import FORMAT as SEGMENTED_FORMAT
from otel_mlmon.engine.segments import MISSING, OTHER, SegmentedProfile
from otel_mlmon.processor.store import StoredPoint, StoredRows
from otel_mlmon.semconv import ML_FAIRNESS_GROUP

Reference = ReferenceProfile | SegmentedProfile


def reference_from_dict(data: Any, source: str) -> Reference:
    """A reference profile or a segmented one, by its ``format``; anything else a one-line ``ValueError``."""
    if isinstance(data, Mapping) and data.get("format") == SEGMENTED_FORMAT:
        try:
            return SegmentedProfile.from_dict(data, source)
        except (TypeError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
            raise ValueError(f"{source} is invalid: {' '.join(str(exc).split())}; rebuild it with `mlmon reference "
                             "build --segment-by`") from None
    return ReferenceProfile.from_dict(data, source)


def reference_loads(document: str | bytes, source: str) -> Reference:
    """``reference_from_dict`` of a JSON document (unreadable or too deeply nested JSON: a one-line error)."""
    return reference_from_dict(parse_document(document, source), source)


def reference_load(path: str) -> Reference:
    source = f"reference profile {path!r}"
    return reference_loads(read_document(path, source), source)


def whole(reference: Reference) -> ReferenceProfile:
    return reference.whole if isinstance(reference, SegmentedProfile) else reference


def reference_rows(reference: Reference, policy: Policy) -> list[dict[str, Any]]:
    """The reference period's rows: the whole profile's, and with segments each segment's (``segment`` set)."""
    if not isinstance(reference, SegmentedProfile):
        return [r.as_json() for r in reference_results(reference, policy)]
    rows = [{**r.as_json(), SEGMENT: None} for r in reference_results(reference.whole, policy)]
    for name, profile in reference.segments.items():
        rows += [with_segment(r, name).as_json() for r in reference_results(profile, policy)]
    return rows


def _segment_of(value: str | None, known: set[str]) -> str:
    if value is None or value == "":
        return MISSING
    return value if value in known else OTHER


def split(segmented: SegmentedProfile, rows: StoredRows, points: Sequence[StoredPoint]
          ) -> Iterator[tuple[str, ReferenceProfile, StoredRows, list[StoredPoint]]]:
    """Each segment present in the window (the reference's order, then the others by name): its profile, rows and
    sketch points. Nothing when neither the rows nor the points carry a segment."""
    if not rows.segments and all(p.segment is None for p in points):
        return
    known = set(segmented.segments) - {OTHER, MISSING}
    row_segments = [_segment_of(s, known) for s in rows.segments] if rows.segments else [MISSING] * len(rows)
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(row_segments):
        positions.setdefault(name, []).append(i)
    by_segment: dict[str, list[StoredPoint]] = {}
    for point in points:
        by_segment.setdefault(_segment_of(point.segment, known), []).append(point)
    present = set(positions) | set(by_segment)
    order = [s for s in segmented.segments if s in present] + sorted(present - set(segmented.segments))
    for name in order:
        part = rows.take(positions[name]) if name in positions else StoredRows.empty()
        yield name, segmented.profile_for(name), part, by_segment.get(name, [])


def sensitive_rows(profile: ReferenceProfile, rows: StoredRows, column: str | None) -> SensitiveRows | None:
    """The rows fairness reads (None: no row carries a sensitive value, or the model is not a classifier)."""
    if not rows.groups or profile.task != "classification":
        return None
    predicted = rows.labels
    if any(extra is not None for extra in rows.extras) and any(label is None for label in predicted):
        predicted = [row.outputs.get("label") for row in rows.joined()]
    keep = [i for i, label in enumerate(predicted) if label is not None]
    return SensitiveRows(column or ML_FAIRNESS_GROUP, groups=[rows.groups[i] for i in keep],
                         y_pred=[predicted[i] for i in keep], y_true=[rows.truths[i] for i in keep])
