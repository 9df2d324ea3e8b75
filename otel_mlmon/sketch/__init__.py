"""Mergeable sketches of columns: numeric (log-linear histogram + moments) and categorical (bounded counts).

numpy only; no OpenTelemetry import. The instrumentation fills them, the engine reads them, and the processor
merges them; the one contract is merge: a sketch of the whole equals the merge of sketches of its parts.
"""

from __future__ import annotations

from otel_mlmon.sketch._categorical import OTHER, CategoricalSketch, category_key, category_keys
from otel_mlmon.sketch._numeric import NumericSketch, bucket_keys, key_bounds, to_float, update_columns

__all__ = [
    "OTHER",
    "CategoricalSketch",
    "NumericSketch",
    "bucket_keys",
    "category_key",
    "category_keys",
    "key_bounds",
    "to_float",
    "update_columns",
]
