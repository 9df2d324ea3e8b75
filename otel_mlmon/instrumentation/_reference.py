"""What the instrumentation reads from a reference profile: each feature's kind and sketch bucketing.

A profile (written by ``mlmon reference build``, owned by ``otel_mlmon.engine``) is JSON with a ``columns``
object: ``{name: {"kind": "numeric"|"categorical", "role": "feature"|…, "sketch": {"center": c, "scale": s}}}``.
Sketching with the reference's center and scale makes the buckets finest where the data is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from otel_mlmon.instrumentation._inputs import CATEGORICAL, NUMERIC
from otel_mlmon.instrumentation._recorder import ColumnSpec

SEGMENTED_FORMAT = "otel-mlmon/segmented-profile"  # engine.segments.FORMAT (the engine is not imported here)


@dataclass(frozen=True)
class Reference:
    """What the instrumentation uses of a profile: feature specs and, of a segmented profile, its segments."""

    columns: dict[str, ColumnSpec]
    segment_column: str | None = None
    segments: tuple[str, ...] | None = None


def load_columns(reference: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, ColumnSpec]:
    """Column specs of the features of a profile given as a path or as the parsed JSON."""
    return load_reference(reference).columns


def load_reference(reference: str | os.PathLike[str] | Mapping[str, Any]) -> Reference:
    """A profile given as a path or as the parsed JSON; a segmented profile (``mlmon reference build
    --segment-by``) gives its whole reference's columns, its segment column and its segments, in order."""
    where = "reference profile"
    if isinstance(reference, Mapping):
        profile: Any = reference
    else:
        where = f"reference profile {os.fspath(reference)!r}"
        try:
            with open(reference, encoding="utf-8") as handle:
                profile = json.load(handle)
        except FileNotFoundError:
            raise FileNotFoundError(f"{where} does not exist; build one with `mlmon reference build`") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{where} cannot be read as JSON: {exc}") from None
    segment_column = segments = None
    if isinstance(profile, Mapping) and profile.get("format") == SEGMENTED_FORMAT:
        found = profile.get("segments")
        segment_column = profile.get("column")
        if not isinstance(found, Mapping) or not found or not isinstance(segment_column, str):
            raise ValueError(f"{where} is a segmented profile without a 'column' name and 'segments': rebuild it "
                             "with `mlmon reference build --segment-by COLUMN`")
        segments = tuple(str(name) for name in found)
        profile = profile.get("whole")
    columns = profile.get("columns") if isinstance(profile, Mapping) else None
    if not isinstance(columns, Mapping):
        raise ValueError(f"{where} has no 'columns' object: is it a profile from `mlmon reference build`?")
    specs: dict[str, ColumnSpec] = {}
    for name, column in columns.items():
        if not isinstance(column, Mapping) or column.get("role", "feature") != "feature":
            continue
        kind = column.get("kind")
        if kind not in (NUMERIC, CATEGORICAL):
            raise ValueError(f"{where}: column {name!r} has kind {kind!r} (expected numeric or categorical)")
        sketch = column.get("sketch") or {}
        if kind == NUMERIC:
            try:
                center, scale = float(sketch.get("center", 0.0)), float(sketch.get("scale", 1.0))
            except (TypeError, ValueError):
                raise ValueError(f"{where}: column {name!r} has a malformed sketch center/scale") from None
            if not scale > 0:
                raise ValueError(f"{where}: column {name!r} has sketch scale {scale} (must be > 0)")
            specs[str(name)] = ColumnSpec(NUMERIC, center, scale)
        else:
            specs[str(name)] = ColumnSpec(CATEGORICAL)
    return Reference(specs, segment_column, segments)
