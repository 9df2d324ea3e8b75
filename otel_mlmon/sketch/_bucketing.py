"""Bucketing of the numeric sketch: values to bucket indexes and back, by the bits of IEEE-754 doubles.

A value ``x`` is standardised, ``t = (x - center) / scale``, then bucketed by the exponent and the top
``precision`` bits of the mantissa of ``t``: DDSketch's "linearly interpolated" logarithmic mapping. Every bucket
spans at most ``2**-precision`` of its own magnitude, and the index is a few integer operations on the bit pattern
(no logarithm). Magnitudes below ``2**-40`` (in scale units) share the bucket next to zero.
"""

from __future__ import annotations

import math

import numpy as np

_MAGNITUDE_MASK = np.uint64(0x7FFF_FFFF_FFFF_FFFF)
_MIN_MAGNITUDE_EXPONENT = -40
_MIN_MAGNITUDE_BITS = np.float64(2.0**_MIN_MAGNITUDE_EXPONENT).view(np.uint64)
_MANTISSA_BITS = 52
_CLEAR_LOW_BIT = np.uint64(0xFFFF_FFFF_FFFF_FFFE)
_LARGEST = np.finfo(np.float64).max
_LARGEST_BITS = np.float64(_LARGEST).view(np.uint64)
MAX_PRECISION = 10


def check_parameters(center: float, scale: float, precision: int) -> None:
    if not isinstance(precision, (int, np.integer)) or isinstance(precision, bool):
        raise TypeError(f"precision must be an int, got {type(precision).__name__}")
    if not 1 <= precision <= MAX_PRECISION:
        raise ValueError(f"precision must be in 1..{MAX_PRECISION}, got {precision}")
    if not math.isfinite(center):
        raise ValueError(f"center must be finite, got {center!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be finite and > 0, got {scale!r}")


def max_magnitude_key(precision: int) -> int:
    """The largest magnitude key of a bucketing (the bucket of the largest double): signed keys of valid sketches
    lie in ``-max - 1 .. max``."""
    return (int(_LARGEST_BITS) - int(_MIN_MAGNITUDE_BITS)) >> (_MANTISSA_BITS - precision)


def bucket_keys(values: np.ndarray, center: float, scale: float, precision: int,
                out: np.ndarray | None = None, work: np.ndarray | None = None) -> np.ndarray:
    """Internal bucket indexes of finite float64 ``values`` (any shape): ``2 * magnitude_key + sign``.

    Interleaving the sign keeps the index range of data around zero compact (a signed, value-ordered key would
    span the empty magnitudes between the smallest value and 2**-40 twice). ``out`` and ``work`` (int64, the
    shape of ``values``) are optional scratch arrays: fresh large arrays cost page faults that take as long as
    the arithmetic.
    """
    if center == 0.0 and scale == 1.0:
        t = values
    else:
        with np.errstate(over="ignore"):
            t = (values - center) * (1.0 / scale)
        if not np.isfinite(t).all():  # a finite value beyond float range once standardised: the outermost bucket
            t = np.clip(t, -_LARGEST, _LARGEST)
    bits = np.ascontiguousarray(t, dtype=np.float64).view(np.uint64)
    index = np.bitwise_and(bits, _MAGNITUDE_MASK, out=None if out is None else out.view(np.uint64))
    np.maximum(index, _MIN_MAGNITUDE_BITS, out=index)
    np.subtract(index, _MIN_MAGNITUDE_BITS, out=index)
    np.right_shift(index, np.uint64(_MANTISSA_BITS - precision - 1), out=index)
    np.bitwise_and(index, _CLEAR_LOW_BIT, out=index)
    sign = np.right_shift(bits, np.uint64(63), out=None if work is None else work.view(np.uint64))
    np.bitwise_or(index, sign, out=index)
    return index.view(np.int64)


def index_to_key(index: np.ndarray) -> np.ndarray:
    """Signed, value-ordered keys of internal indexes: ``k >= 0`` holds t in ``[lower(k), upper(k))``,
    ``k < 0`` holds t in ``(-upper(~k), -lower(~k)]``."""
    index = np.asarray(index, dtype=np.int64)
    magnitude = index >> 1
    return np.where(index & 1, ~magnitude, magnitude)


def key_to_index(keys: np.ndarray) -> np.ndarray:
    keys = np.asarray(keys, dtype=np.int64)
    negative = keys < 0
    return np.where(negative, (~keys << 1) | 1, keys << 1)


def key_bounds(keys: np.ndarray, center: float, scale: float, precision: int) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) value bounds of each signed key, in the data's units."""
    keys = np.asarray(keys, dtype=np.int64)
    negative = keys < 0
    magnitude_key = np.where(negative, ~keys, keys).astype(np.uint64)
    shift = np.uint64(_MANTISSA_BITS - precision)
    low = ((magnitude_key << shift) + _MIN_MAGNITUDE_BITS).view(np.float64)
    high_bits = ((magnitude_key + np.uint64(1)) << shift) + _MIN_MAGNITUDE_BITS
    high = np.minimum(high_bits, _LARGEST_BITS).view(np.float64)  # the top bucket ends at the largest double
    low = np.where(magnitude_key == 0, 0.0, low)
    lower_t = np.where(negative, -high, low)
    upper_t = np.where(negative, -low, high)
    return center + scale * lower_t, center + scale * upper_t
