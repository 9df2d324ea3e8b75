"""The manual API behind the ``otel_mlmon`` facade: ``instrument_model``, ``prediction_ids``, ``record_labels``.

Setup errors (a bad argument, a missing reference profile) raise at once with a message that says what to fix;
nothing here runs on the model's hot path.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter

from otel_mlmon import semconv
from otel_mlmon.instrumentation import _events, _patch
from otel_mlmon.instrumentation._ids import PredictionIds
from otel_mlmon.instrumentation._outputs import RAW
from otel_mlmon.instrumentation._reference import load_columns
from otel_mlmon.instrumentation._telemetry import Telemetry, default_telemetry
from otel_mlmon.instrumentation._wrap import (
    CONFIG_ATTRIBUTE,
    NAME_ATTRIBUTE,
    ModelConfig,
    make_wrapper,
    suppressing,
)

# Keyed by the provider objects themselves (identity): they stay alive while their telemetry does.
_telemetries: dict[tuple[Any, Any, Any, Any], Telemetry] = {}
_telemetries_lock = threading.Lock()


def telemetry_for(tracer_provider: Any = None, meter_provider: Any = None, logger_provider: Any = None,
                  sketch_exporter: MetricExporter | None = None) -> Telemetry:
    """The telemetry of these providers (the global ones when all are None), created once."""
    if tracer_provider is None and meter_provider is None and logger_provider is None and sketch_exporter is None:
        return default_telemetry()
    key = (tracer_provider, meter_provider, logger_provider, sketch_exporter)
    with _telemetries_lock:
        found = _telemetries.get(key)
        if found is None:
            found = _telemetries[key] = Telemetry(tracer_provider, meter_provider, logger_provider,
                                                  sketch_exporter)
        return found


def _check_name(value: Any, what: str, allow_empty: bool) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ValueError(f"{what} must not be empty")
    return value


def _is_torch_module(model: Any) -> bool:
    return any(c.__module__ == "torch.nn.modules.module" and c.__name__ == "Module" for c in type(model).__mro__)


def instrument_model(model: Any, name: str | None = None, version: str | None = None, task: str | None = None,
                     feature_names: Sequence[str] | None = None,
                     reference: str | os.PathLike[str] | Mapping[str, Any] | None = None, *,
                     decision_threshold: float | None = None,
                     tracer_provider: Any = None, meter_provider: Any = None, logger_provider: Any = None,
                     sketch_exporter: MetricExporter | None = None) -> Any:
    """Record every prediction of ``model``: spans, latency and row counts, feature sketches, events.

    Works on any object with ``predict`` / ``predict_proba`` / ``decision_function``, and on torch modules
    (their calls, in eval mode). The model is configured in place and returned; it pickles as before.

    Args:
        model: the model to watch.
        name: ``ml.model.name``; default: the model's ``otel_mlmon_name`` attribute, else its class name.
        version: ``ml.model.version``; default: empty.
        task: ``classification`` or ``regression``; default: inferred from the model when it can be.
        feature_names: input column names; default: DataFrame columns, the model's learned names, or
            ``feature_0``, ``feature_1``, ….
        reference: a reference profile (path or parsed JSON): feature kinds and sharper sketches.
        decision_threshold: for a binary classifier whose caller thresholds ``predict_proba`` itself: the
            recorded ``ml.prediction.label`` of a scored call is the positive class (the second of ``classes_``)
            when its score is >= this, else the negative class. Default: the class of highest score (0.5).
            ``predict`` calls keep the model's own labels.
        tracer_provider, meter_provider, logger_provider: default: the global providers.
        sketch_exporter: where feature sketches go; default: the meter provider's periodic exporter.

    Raises:
        TypeError / ValueError: on a bad argument, or a model with nothing to instrument.
        FileNotFoundError: when ``reference`` names a missing file.
    """
    if model is None:
        raise TypeError("instrument_model() needs a model, got None")
    name = _check_name(name if name is not None else (getattr(model, NAME_ATTRIBUTE, None)
                                                      or type(model).__name__), "name", allow_empty=False)
    version = _check_name(version if version is not None else "", "version", allow_empty=True)
    if task is not None and task not in semconv.TASKS:
        raise ValueError(f"task must be one of {', '.join(semconv.TASKS)} (or None to infer), got {task!r}")
    names: tuple[str, ...] | None = None
    if feature_names is not None:
        if isinstance(feature_names, str):
            raise TypeError("feature_names must be a sequence of names, not one string")
        names = tuple(str(n) for n in feature_names)
        if len(set(names)) != len(names):
            raise ValueError(f"feature_names has duplicates: {sorted({n for n in names if names.count(n) > 1})}")
    columns = load_columns(reference) if reference is not None else {}
    threshold = _check_threshold(decision_threshold, model, task)

    cls = type(model)
    targets: list[tuple[type, str, Any]] = []
    if _is_torch_module(model):
        module_class = next(c for c in cls.__mro__ if c.__module__ == "torch.nn.modules.module")
        targets.append((module_class, "__call__", make_wrapper(semconv.OPERATION_FORWARD, RAW,
                                                               semconv.SYSTEM_TORCH,
                                                               recordable=_torch_recordable)))
    else:
        for method, (operation, output_kind) in _patch.PREDICT_METHODS.items():
            owner = next((c for c in cls.__mro__ if method in c.__dict__), None)
            if owner is None or owner is object:
                continue
            if getattr(model, method, None) is None:  # e.g. predict_proba hidden by available_if
                continue
            targets.append((owner, method, make_wrapper(operation, output_kind, _patch.system_of(owner),
                                                        _patch.estimator_task)))
    if not targets:
        raise TypeError(f"{cls.__name__} has no predict, predict_proba, decision_function or torch forward "
                        "to instrument")
    telemetry = telemetry_for(tracer_provider, meter_provider, logger_provider, sketch_exporter)
    config = ModelConfig(name=name, version=version, task=task, feature_names=names, columns=columns,
                         telemetry=telemetry, decision_threshold=threshold)
    try:
        object.__setattr__(model, CONFIG_ATTRIBUTE, config)
    except (AttributeError, TypeError):
        raise TypeError(f"cannot attach monitoring to {cls.__name__}: its instances take no attributes "
                        "(__slots__ without __dict__)") from None
    if not _is_torch_module(model):  # fit and score may call predict: nothing inside them is recorded
        for method in _patch.FIT_METHODS:
            owner = next((c for c in cls.__mro__ if method in c.__dict__), None)
            if owner is not None and owner is not object:
                targets.append((owner, method, suppressing))
    for owner, method, wrapper in targets:
        _patch.wrap(owner, method, wrapper, _patch.MANUAL)
    return model


def _check_threshold(value: Any, model: Any, task: str | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or (not isinstance(value, (int, float)) and not hasattr(value, "__float__")):
        raise TypeError(f"decision_threshold must be a number in [0, 1], got {type(value).__name__}")
    threshold = float(value)
    if not 0.0 <= threshold <= 1.0:  # also refuses NaN
        raise ValueError(f"decision_threshold must be in [0, 1] (a score of the positive class), got {value!r}")
    if task == semconv.TASK_REGRESSION:
        raise ValueError("decision_threshold applies to binary classifiers, not to task='regression'")
    classes = getattr(model, "classes_", None)
    if classes is not None and not isinstance(classes, str):
        try:
            count = len(classes)
        except TypeError:
            count = 2
        if count != 2:
            raise ValueError(f"decision_threshold applies to binary classifiers; this model has {count} classes")
    return threshold


def _torch_recordable(module: Any) -> bool:
    return not getattr(module, "training", False)


def prediction_ids(ids: Iterable[object] | None = None) -> PredictionIds:
    """A block whose predictions carry these row ids (generated UUID4 hex when ``ids`` is None).

    >>> import otel_mlmon
    >>> with otel_mlmon.prediction_ids(ids=["a", "b"]) as p:
    ...     pass
    >>> p.ids
    ['a', 'b']
    """
    return PredictionIds(ids)


def _label_column(labels: Sequence[Any]) -> list[Any]:
    """Labels as one OTLP array type; floats stay floats, numpy scalars become Python values."""
    values = [v.item() if hasattr(v, "item") else v for v in labels]
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise ValueError(f"labels[{i}] is {value!r}: a label must be a value (leave the row out instead)")
    types = {type(v) for v in values}
    if types <= {int} or types <= {float} or types <= {str} or types <= {bool}:
        return values
    if types <= {int, float}:
        return [float(v) for v in values]
    return [str(v) for v in values]


def record_labels(model: str, ids: Iterable[object], labels: Iterable[Any], version: str = "", *,
                  logger_provider: Any = None) -> None:
    """Report ground truth for predictions made earlier, as ``ml.labels`` events (sent at once).

    Args:
        model: the model name the predictions were recorded under.
        ids: prediction ids (from ``prediction_ids``), one per label.
        labels: the true class or value of each row.
        version: the model version the predictions were recorded under ("" when unversioned).

    Raises:
        TypeError / ValueError: mismatched lengths, missing ids or labels, a bad model name.
    """
    model = _check_name(model, "model", allow_empty=False)
    version = _check_name(version, "version", allow_empty=True)
    id_list = PredictionIds(ids).ids
    if isinstance(labels, (str, bytes)):
        raise TypeError("labels must be a sequence of labels, not one string")
    label_list = list(labels.tolist() if hasattr(labels, "tolist") else labels)
    if len(id_list) != len(label_list):
        raise ValueError(f"record_labels() got {len(id_list)} ids and {len(label_list)} labels; they must pair up")
    if not id_list:
        return
    column = _label_column(label_list)
    telemetry = telemetry_for(logger_provider=logger_provider) if logger_provider is not None else \
        default_telemetry()
    base = {semconv.ML_MODEL_NAME: model, semconv.ML_MODEL_VERSION: version}
    _events.emit_rows(telemetry.logger, semconv.EVENT_LABELS, base,
                      {semconv.ML_PREDICTION_ID: id_list, semconv.ML_LABEL_VALUE: column}, len(id_list),
                      telemetry.settings.event_max_rows)
