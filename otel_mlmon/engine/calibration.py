"""Score calibration for performance estimation: isotonic regression (numpy), fitted on the labelled reference.

A classifier's scores are turned into probabilities that its predictions are right: for a binary model, the
isotonic regression of ``1{y = positive}`` on the positive class's score; for a multiclass model, one such
regression per class (one against the rest), the calibrated row then divided by its sum (as NannyML does). The
fitted maps go into the reference profile (``ReferenceProfile.calibration``), with what the estimator needs to
draw thresholds for any window size (the estimates on the whole reference and the per-row spread of each).

Isotonic regression is the pool-adjacent-violators algorithm on the distinct scores (ties in the score are
pooled first, their labels averaged), with scikit-learn's ``IsotonicRegression(out_of_bounds="clip")``
semantics: linear interpolation between the fitted points, constant beyond the fitted range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from otel_mlmon.sketch import _fields as fields

METHOD = "isotonic"
MAX_KNOTS = 1_000_000  # fitted points of one class's map a profile may hold


def isotonic_fit(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing least-squares fit of ``y`` on ``x`` as knots (xs increasing, fitted ys).

    Pool adjacent violators: equal ``x`` are pooled (weighted mean of ``y``), then neighbouring blocks whose
    means decrease are merged until none does. Only the first and last point of each constant block are kept:
    interpolating between the knots gives the same function.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(x) if weight is None else np.asarray(weight, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y) & (w > 0)
    x, y, w = x[keep], y[keep], w[keep]
    if x.size == 0:
        return np.zeros(0), np.zeros(0)
    unique, inverse = np.unique(x, return_inverse=True)
    total = np.bincount(inverse, weights=w)
    means = np.bincount(inverse, weights=w * y) / total
    # Blocks as a stack: (mean, weight, number of distinct xs).
    block_mean: list[float] = []
    block_weight: list[float] = []
    block_size: list[int] = []
    for mean, weight_ in zip(means.tolist(), total.tolist()):
        size = 1
        while block_mean and block_mean[-1] >= mean:
            previous_weight = block_weight.pop()
            merged = previous_weight + weight_
            mean = (block_mean.pop() * previous_weight + mean * weight_) / merged
            weight_ = merged
            size += block_size.pop()
        block_mean.append(mean)
        block_weight.append(weight_)
        block_size.append(size)
    fitted = np.repeat(np.asarray(block_mean), np.asarray(block_size))
    ends = np.cumsum(block_size)
    knots = np.unique(np.concatenate([ends - np.asarray(block_size), ends - 1]))
    return unique[knots], fitted[knots]


@dataclass(frozen=True)
class IsotonicMap:
    """A fitted isotonic map: ``__call__`` interpolates linearly between knots, constant outside them."""

    x: np.ndarray
    y: np.ndarray

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float64)
        if self.x.size == 0:
            return np.full(scores.shape, math.nan)
        return np.interp(scores, self.x, self.y)

    @classmethod
    def fit(cls, scores: np.ndarray, outcomes: np.ndarray) -> IsotonicMap:
        x, y = isotonic_fit(scores, outcomes)
        return cls(x, np.clip(y, 0.0, 1.0))

    def to_dict(self) -> dict[str, list[float]]:
        return {"x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> IsotonicMap:
        data = fields.mapping(data, where)
        xs = fields.sequence(fields.required(data, "x", where), f"{where}.x")
        ys = fields.sequence(fields.required(data, "y", where), f"{where}.y")
        if len(xs) != len(ys) or not xs or len(xs) > MAX_KNOTS:
            raise ValueError(f"{where}: x and y must be lists of the same length, 1 to {MAX_KNOTS:,} numbers")
        x = np.asarray([fields.number(v, f"{where}.x[{i}]") for i, v in enumerate(xs)], dtype=np.float64)
        y = np.asarray([fields.number(v, f"{where}.y[{i}]") for i, v in enumerate(ys)], dtype=np.float64)
        if np.any(np.diff(x) <= 0) or np.any(np.diff(y) < 0) or y.min() < 0 or y.max() > 1:
            raise ValueError(f"{where}: x must increase and y be non-decreasing probabilities in [0, 1]")
        return cls(x, y)


@dataclass
class Calibration:
    """The calibration of a classifier's scores, and its estimates on the reference it was fitted on.

    ``maps``: class -> isotonic map of that class's score (a binary model has one, for its positive class).
    ``reference``: each estimated metric on all reference rows. ``spread``: the per-row standard deviation of
    each estimate's influence on the reference: an estimate over ``n`` rows drawn like the reference varies by
    about ``spread / sqrt(n)`` (the thresholds' sampling error). ``rows``: reference rows it was fitted on.
    """

    classes: list[str]
    maps: dict[str, IsotonicMap]
    rows: int
    reference: dict[str, float] = field(default_factory=dict)
    spread: dict[str, float] = field(default_factory=dict)
    method: str = METHOD

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    @classmethod
    def fit(cls, classes: Sequence[str], y_true: Sequence[str], scores: np.ndarray) -> Calibration:
        """Fit on labelled rows: ``scores`` is (rows, classes) in the order of ``classes`` (binary: both columns,
        the last being the positive class)."""
        truth = np.asarray([str(v) for v in y_true], dtype=object)
        classes = [str(c) for c in classes]
        fitted = classes[1:] if len(classes) == 2 else classes
        maps = {c: IsotonicMap.fit(scores[:, classes.index(c)], (truth == c).astype(np.float64)) for c in fitted}
        return cls(classes, maps, int(truth.size))

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities (rows, classes) of raw scores (rows, classes)."""
        if self.binary:
            positive = self.maps[self.classes[1]](scores[:, 1])
            return np.column_stack([1.0 - positive, positive])
        calibrated = np.column_stack([self.maps[c](scores[:, j]) for j, c in enumerate(self.classes)])
        total = calibrated.sum(axis=1, keepdims=True)
        uniform = np.full_like(calibrated, 1.0 / len(self.classes))
        return np.divide(calibrated, total, out=uniform, where=total > 0)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "classes": self.classes, "rows": self.rows,
                "maps": {c: m.to_dict() for c, m in self.maps.items()},
                "reference": {k: v for k, v in self.reference.items() if math.isfinite(v)},
                "spread": {k: v for k, v in self.spread.items() if math.isfinite(v)}}

    @classmethod
    def from_dict(cls, data: Any, classes: Sequence[str], where: str = "calibration") -> Calibration:
        """The calibration of ``to_dict()`` output, for a profile of ``classes``; anything else is a
        ``ValueError`` naming the field."""
        data = fields.mapping(data, where)
        method = data.get("method", METHOD)
        if method != METHOD:
            raise ValueError(f"{where}.method must be {METHOD!r}, got {fields.describe(method)}")
        own = [fields.text(c, f"{where}.classes[{i}]")
               for i, c in enumerate(fields.sequence(fields.required(data, "classes", where), f"{where}.classes"))]
        if own != list(classes) or len(own) < 2:
            raise ValueError(f"{where}.classes must be the profile's classes ({len(classes)} of them)")
        maps_data = fields.mapping(fields.required(data, "maps", where), f"{where}.maps")
        wanted = own[1:] if len(own) == 2 else own
        if sorted(maps_data) != sorted(wanted):
            raise ValueError(f"{where}.maps must have one map for each of the classes {', '.join(wanted)}")
        maps = {c: IsotonicMap.from_dict(maps_data[c], f"{where}.maps[{fields.describe(c)}]") for c in wanted}

        def numbers(key: str) -> dict[str, float]:
            found = fields.mapping(data.get(key, {}), f"{where}.{key}")
            return {str(k): fields.number(v, f"{where}.{key}[{fields.describe(k)}]") for k, v in found.items()}

        rows = fields.integer(fields.required(data, "rows", where), f"{where}.rows", 1)
        return cls(own, maps, rows, numbers("reference"), numbers("spread"))


def fit_from_rows(classes: Sequence[str], y_true: Sequence[Any], scores: Sequence[Sequence[float]],
                  minimum: int) -> Calibration | None:
    """A calibration from joined reference rows, or None when there is nothing to calibrate: fewer than
    ``minimum`` rows with scores, fewer than two classes, labels outside the classes or a class never seen."""
    if len(classes) < 2 or len(scores) != len(y_true) or len(y_true) < minimum:
        return None
    truth = [str(v) for v in y_true]
    known = set(map(str, classes))
    if any(t not in known for t in truth) or len(set(truth)) < 2:
        return None
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != len(classes) or not np.isfinite(array).all():
        return None
    return Calibration.fit([str(c) for c in classes], truth, array)

