"""Moving a numeric sketch's counts onto another bucketing (another center, scale or precision).

An app instrumented without a reference sketches with the default bucketing (center 0, scale 1); its profile
buckets by the reference's median and spread. Counts cannot be split exactly once bucketed, so each source bucket's
count is placed by one of two rules:

- A bucket with a non-empty neighbour is part of a continuous stretch of data: its count is spread over the target
  buckets it overlaps, in proportion to the overlap (uniform density inside the bucket; the first and last buckets
  are cut at the sketch's min and max).
- An isolated bucket (both neighbours empty) holds, as far as the sketch can tell, a few distinct values: its count
  goes whole to the target bucket of its inclusive bound (its bound nearer zero). Under the default bucketing,
  integers and other short binary fractions sit exactly there, so integer, binary and ordinal columns move
  exactly; spreading them would split a single value over two target buckets.

The fractional counts are rounded to whole counts on their running total, so the total is exact and every
target bucket's count is within one of its share.

Error bound: at any target bucket bound, the rebucketed cumulative count differs from the data's by at most the
count of the source bucket whose range (bounds included) holds that bound, plus one count of rounding; for a
smooth density the uniform spread makes that error second order in the source bucket width. With the default
precision (relative bucket width 2**-7) and data whose spread is not tiny against its distance from zero, the
Kolmogorov–Smirnov statistic against a reference stays within 0.005 of the exact one
(``tests/sketch/test_rebucket.py``: normal, lognormal, uniform, bimodal, integer and binary data). Data far from
zero relative to its spread (e.g. values around 10**6 with a spread of 1) has all of its values in a handful of
default buckets: no rebucketing can recover what the source sketch never recorded; instrument such a model with
``reference=``.
"""

from __future__ import annotations

import numpy as np

from otel_mlmon.sketch._bucketing import bucket_keys, index_to_key, key_bounds, key_to_index


def rebucket_counts(keys: np.ndarray, counts: np.ndarray, lower: np.ndarray, upper: np.ndarray, minimum: float,
                    maximum: float, center: float, scale: float,
                    precision: int) -> tuple[int, np.ndarray] | None:
    """(lowest internal index, dense counts from it) in the target bucketing of source buckets given by their
    signed ``keys`` (ascending), ``counts`` and value bounds; None when there are no counts."""
    if counts.size == 0:
        return None
    low = np.clip(lower, minimum, maximum)
    high = np.clip(upper, minimum, maximum)
    isolated = np.ones(keys.size, dtype=bool)
    adjacent = np.diff(keys) == 1
    isolated[:-1] &= ~adjacent
    isolated[1:] &= ~adjacent
    inclusive = np.where(keys >= 0, low, high)  # [lower, upper) for keys >= 0, (lower, upper] below zero
    low = np.where(isolated, inclusive, low)
    high = np.where(isolated, inclusive, high)
    first_key = index_to_key(bucket_keys(low, center, scale, precision))
    last_key = index_to_key(bucket_keys(high, center, scale, precision))
    span = last_key - first_key + 1
    source = np.repeat(np.arange(keys.size), span)
    starts = np.concatenate([[0], np.cumsum(span)[:-1]])
    target = first_key[source] + (np.arange(source.size) - starts[source])
    target_low, target_high = key_bounds(target, center, scale, precision)
    with np.errstate(over="ignore", invalid="ignore"):
        overlap = np.minimum(high[source], target_high) - np.maximum(low[source], target_low)
        overlap = np.where(np.isfinite(overlap), np.maximum(overlap, 0.0), 0.0)
        width = np.bincount(source, weights=overlap, minlength=keys.size)
        share = overlap / np.where(width > 0, width, 1.0)[source]
    point = ~(width > 0)  # a single value (an isolated bucket, or min == max): all to its first target bucket
    share[point[source]] = 0.0
    share[starts[point]] = 1.0
    running = np.cumsum(share * counts[source])
    whole = np.floor(running + 0.5)
    whole[-1] = float(counts.sum())
    pieces = np.maximum(np.diff(whole, prepend=0.0), 0.0).astype(np.int64)
    index = key_to_index(target)
    lowest = int(index.min())
    dense = np.zeros(int(index.max()) - lowest + 1, dtype=np.int64)
    np.add.at(dense, index - lowest, pieces)
    return lowest, dense
