"""Model outputs as event columns: predicted labels, class scores, regression values.

``output_kind`` says what the wrapped method returns: ``labels`` (scikit-learn style ``predict`` of a classifier),
``proba`` (``predict_proba``), ``raw`` (boosters and torch modules: probabilities, logits or values, read with the
model's task), or ``none`` (``decision_function``: margins are not scores and are not recorded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from otel_mlmon import semconv
from otel_mlmon.instrumentation import _guard

LABELS = "labels"
PROBA = "proba"
RAW = "raw"
NONE = "none"


@dataclass
class OutputBatch:
    rows: int
    labels: list[Any] | None = None
    classes: list[str] | None = None  # class names of the score columns
    scores: np.ndarray | None = None  # (rows, classes) probabilities
    values: np.ndarray | None = None  # regression outputs

    def take(self, index: np.ndarray) -> OutputBatch:
        """The scores and values of the rows at ``index`` (a segment's rows; labels are not sketched)."""
        return OutputBatch(int(index.size), classes=self.classes,
                           scores=self.scores[index] if self.scores is not None else None,
                           values=self.values[index] if self.values is not None else None)

    def event_attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        if self.labels is not None:
            attributes[semconv.ML_PREDICTION_LABEL] = self.labels
        if self.scores is not None and self.classes is not None:
            if len(self.classes) == 2:
                attributes[semconv.ML_PREDICTION_SCORE] = self.scores[:, 1].tolist()
            else:
                for j, name in enumerate(self.classes):
                    attributes[semconv.ML_PREDICTION_SCORE_PREFIX + name] = self.scores[:, j].tolist()
        if self.values is not None:
            attributes[semconv.ML_PREDICTION_VALUE] = self.values.tolist()
        return attributes


def to_numpy(result: Any) -> np.ndarray | None:
    """The result as an array without touching the object the caller receives (never in place)."""
    if isinstance(result, np.ndarray):
        return result
    module = type(result).__module__.partition(".")[0]
    if module == "torch" and hasattr(result, "detach"):
        return result.detach().float().cpu().numpy()
    if module == "pandas" and hasattr(result, "to_numpy"):
        return np.asarray(result.to_numpy())
    if isinstance(result, (list, tuple)):
        try:
            array = np.asarray(result)
        except ValueError:
            return None
        return None if array.dtype == object and array.ndim > 1 else array
    return None


def homogeneous(values: np.ndarray) -> list[Any]:
    """A 1-D array as a list of one OTLP-compatible type (bool, int, float or str)."""
    kind = values.dtype.kind
    if kind in "biuf":
        return values.tolist()
    items = values.tolist()
    types = {type(v) for v in items}
    if len(types) == 1 and types <= {bool, int, float, str}:
        return items
    return [str(v) for v in items]


def class_names(model: Any, count: int) -> list[str]:
    classes = getattr(model, "classes_", None)
    if classes is not None:
        try:
            names = [str(c.item() if hasattr(c, "item") else c) for c in classes]
        except (TypeError, ValueError):  # not one class per column (e.g. a chain's classes per output)
            names = []
        if len(names) == count:
            return names
    return [str(i) for i in range(count)]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _is_probability(matrix: np.ndarray) -> bool:
    return bool(np.all((matrix >= 0) & (matrix <= 1)) and np.allclose(matrix.sum(axis=1), 1.0, atol=1e-4))


def read_output(result: Any, output_kind: str, task: str | None, model: Any,
                decision_threshold: float | None = None) -> OutputBatch | None:
    """Event columns of one call's result, or None when it has no rows we understand.

    ``decision_threshold``: for two-class scores, the predicted label is the positive (second) class when its score
    is >= the threshold, else the negative one (what a caller that thresholds ``predict_proba`` itself uses);
    None: the class of highest score. Ignored for more than two classes.
    """
    if output_kind == NONE:
        return None
    array = to_numpy(result)
    if array is None or array.ndim == 0 or array.ndim > 2:
        return None
    rows = int(array.shape[0])
    if output_kind == LABELS:
        if task == semconv.TASK_REGRESSION:
            if array.ndim == 1 or array.shape[1] == 1:
                return OutputBatch(rows, values=np.asarray(array, dtype=np.float64).ravel())
            return OutputBatch(rows)
        if array.ndim != 1:
            return OutputBatch(rows)
        return OutputBatch(rows, labels=homogeneous(array))
    if array.dtype.kind not in "biuf":
        return OutputBatch(rows)
    matrix = np.asarray(array, dtype=np.float64)
    if output_kind == RAW and task != semconv.TASK_CLASSIFICATION:
        if matrix.ndim == 1 or matrix.shape[1] == 1:
            return OutputBatch(rows, values=matrix.ravel())
        return OutputBatch(rows)
    # Class probabilities (predict_proba, or a classifier's raw output).
    if matrix.ndim == 1 or matrix.shape[1] == 1:
        positive = matrix.ravel()
        if not np.all((positive >= 0) & (positive <= 1)):
            positive = 1.0 / (1.0 + np.exp(-positive))  # a logit
        matrix = np.column_stack([1.0 - positive, positive])
    elif not _is_probability(matrix):
        matrix = _softmax(matrix)
    names = class_names(model, matrix.shape[1])
    if decision_threshold is not None and matrix.shape[1] == 2:
        winners = (matrix[:, 1] >= decision_threshold).astype(np.intp)
    else:
        if decision_threshold is not None:
            _guard.failure("decision_threshold_multiclass", message=(
                f"decision_threshold applies to two classes, the model scored {matrix.shape[1]}; the labels of "
                "highest score were recorded"))
        winners = matrix.argmax(axis=1)
    classes = getattr(model, "classes_", None)
    if classes is not None and len(classes) == matrix.shape[1] and np.asarray(classes, dtype=object).ndim == 1:
        labels = homogeneous(np.asarray(classes)[winners])
    else:
        labels = winners.tolist()
    return OutputBatch(rows, labels=labels, classes=names, scores=matrix)
