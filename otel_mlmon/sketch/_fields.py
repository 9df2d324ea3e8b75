"""Typed readers of decoded JSON fields, for sketches and reference profiles read from files or requests.

Each reader returns the field as the type the code needs or raises ``ValueError`` naming the field (a dotted path
such as ``columns.age.sketch.scale``) and what was wrong, on one line: values are described by their type, and
only short scalars are quoted, so a hostile document cannot make the message huge or recurse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def describe(value: Any) -> str:
    """A short description of a JSON value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 40 else f"a {len(text)}-digit number"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else f"a string of {len(value)} characters"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def required(data: Mapping[str, Any], key: str, where: str) -> Any:
    """``data[key]``; a missing key is an error naming it."""
    if key not in data:
        raise ValueError(f"{join(where, key)} is missing")
    return data[key]


def mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be an object, got {describe(value)}")
    return value


def sequence(value: Any, where: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where} must be a list, got {describe(value)}")
    return list(value)


def text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {describe(value)}")
    return value


def optional_text(value: Any, where: str) -> str | None:
    return None if value is None else text(value, where)


def integer(value: Any, where: str, low: int | None = 0, high: int | None = None) -> int:
    """A whole number (JSON integer) in ``[low, high]``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where} must be a whole number, got {describe(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{low:,}..{high:,}" if low is not None and high is not None else (
            f">= {low:,}" if low is not None else f"<= {high:,}")
        raise ValueError(f"{where} must be in {bounds}, got {describe(value)}")
    return value


def number(value: Any, where: str) -> float:
    """A finite number (JSON integer or float)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{where} must be a number, got {describe(value)}")
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise ValueError(f"{where} must be a finite number, got {describe(value)}")
    return result


def optional_number(value: Any, where: str) -> float | None:
    return None if value is None else number(value, where)


def integers(value: Any, where: str, low: int | None = 0, high: int | None = None) -> list[int]:
    """A list of whole numbers in ``[low, high]``."""
    items = sequence(value, where)
    if items and set(map(type, items)) == {int}:  # the common case, checked in C (stored sketches are read back)
        try:
            array = np.asarray(items, dtype=np.int64)
        except OverflowError:
            array = None
        if array is not None and (low is None or int(array.min()) >= low) and \
                (high is None or int(array.max()) <= high):
            return items
    for position, item in enumerate(items):
        if not isinstance(item, int) or isinstance(item, bool) or (low is not None and item < low) or (
                high is not None and item > high):
            integer(item, f"{where}[{position}]", low, high)  # raises with the message
    return items
