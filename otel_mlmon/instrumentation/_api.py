"""The manual API behind the ``otel_mlmon`` facade: ``instrument_model``, ``prediction_ids``, ``record_labels``.

Setup errors (a bad argument, a missing reference profile) raise at once with a message that says what to fix;
nothing here runs on the model's hot path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter

from otel_mlmon import semconv
from otel_mlmon.instrumentation import _events, _patch
from otel_mlmon.instrumentation._config import (
    CONFIG_ATTRIBUTE,
    NAME_ATTRIBUTE,
    RESERVED_ATTRIBUTES,
    RESERVED_PREFIXES,
    ModelConfig,
)
from otel_mlmon.instrumentation._ids import PredictionIds
from otel_mlmon.instrumentation._outputs import RAW
from otel_mlmon.instrumentation._reference import Reference, load_reference
from otel_mlmon.instrumentation._runtime import RUNTIME
from otel_mlmon.instrumentation._segments import SegmentConfig
from otel_mlmon.instrumentation._telemetry import Telemetry
from otel_mlmon.instrumentation._wrap import make_wrapper, system_of

# The runtime's registry of telemetries by providers, under the name tests/conftest.py reads.
_telemetries = RUNTIME.telemetries


def telemetry_for(tracer_provider: Any = None, meter_provider: Any = None, logger_provider: Any = None,
                  sketch_exporter: MetricExporter | None = None) -> Telemetry:
    """The telemetry of these providers (the global ones when all are None), created once."""
    return RUNTIME.telemetry_for(tracer_provider, meter_provider, logger_provider, sketch_exporter)


def _check_name(value: Any, what: str, allow_empty: bool) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ValueError(f"{what} must not be empty")
    return value


def _torch_module_class(cls: type) -> type | None:
    """``torch.nn.Module`` when ``cls`` is a torch module, else None (torch is never imported here)."""
    return next((c for c in cls.__mro__ if c.__module__ == "torch.nn.modules.module" and c.__name__ == "Module"),
                None)


def instrument_model(model: Any, name: str | None = None, version: str | None = None, task: str | None = None,
                     feature_names: Sequence[str] | None = None,
                     reference: str | os.PathLike[str] | Mapping[str, Any] | None = None, *,
                     decision_threshold: float | None = None, attributes: Mapping[str, Any] | None = None,
                     segment_by: str | None = None, segment_baggage_key: str | None = None,
                     max_segments: int | None = None, sensitive_column: str | None = None,
                     tracer_provider: Any = None, meter_provider: Any = None, logger_provider: Any = None,
                     sketch_exporter: MetricExporter | None = None) -> Any:
    """Record every prediction of ``model``: spans, latency and row counts, feature sketches, events.

    Works on any object with ``predict`` / ``predict_proba`` / ``decision_function`` (its own or inherited), and
    on torch modules (their calls, in eval mode). The model is configured in place and returned; it pickles as
    before. Calling it again on the same model replaces its configuration; ``uninstrument_model`` undoes it.

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
        attributes: extra attributes of this model's spans and ``ml.predictions`` events (e.g. a registry's run
            id): string keys, values str, bool, int, float or sequences of one of them; never on metrics. Keys
            otel-mlmon sets itself (``ml.model.name``, ``ml.prediction.*``, …) are refused.
        segment_by: an input column (of DataFrames, dicts of columns, lists of row dicts) whose value is each
            row's segment: ``ml.segment`` on events (one per row) and on every sketch point (sketched per
            segment). Default: ``OTEL_PYTHON_MLMON_SEGMENT_COLUMN``, else a segmented reference profile's column.
        segment_baggage_key: a W3C baggage entry whose value is the segment of all of a call's rows (when there
            is no segment column). Default: ``OTEL_PYTHON_MLMON_SEGMENT_BAGGAGE_KEY``.
        max_segments: segments kept, counting ``__other__`` (the first values seen; a segmented reference
            profile's own segments instead). Default: ``OTEL_PYTHON_MLMON_MAX_SEGMENTS``, else 10.
        sensitive_column: an input column whose value per row goes on events as ``ml.fairness.group`` (opt-in
            personal data, never on metrics or spans); it is not sketched. Default:
            ``OTEL_PYTHON_MLMON_SENSITIVE_COLUMN``.
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
    loaded = load_reference(reference) if reference is not None else None
    columns = loaded.columns if loaded is not None else {}
    for what, value in (("segment_by", segment_by), ("segment_baggage_key", segment_baggage_key),
                        ("sensitive_column", sensitive_column)):
        if value is not None:
            _check_name(value, what, allow_empty=False)
    if max_segments is not None and (isinstance(max_segments, bool) or not isinstance(max_segments, int)
                                     or max_segments < 2):
        raise ValueError(f"max_segments must be a whole number of at least 2 (counting __other__), got "
                         f"{max_segments!r}")
    if segment_by is not None and loaded is not None and loaded.segment_column not in (None, segment_by):
        raise ValueError(f"segment_by={segment_by!r}, but the reference profile's segments are of "
                         f"{loaded.segment_column!r}: rebuild it with `mlmon reference build --segment-by "
                         f"{segment_by}`, or leave segment_by out")
    threshold = _check_threshold(decision_threshold, model, task)
    extra = _check_attributes(attributes)

    cls = type(model)
    torch_module = _torch_module_class(cls)
    if torch_module is None and not any(_patch.owner_of(cls, method) for method in _patch.PREDICT_METHODS):
        raise TypeError(f"{cls.__name__} has no predict, predict_proba, decision_function or torch forward "
                        "to instrument")
    telemetry = telemetry_for(tracer_provider, meter_provider, logger_provider, sketch_exporter)
    segmenting = _segmenting(telemetry, loaded, segment_by, segment_baggage_key, max_segments, sensitive_column)
    config = ModelConfig(name=name, version=version, task=task, feature_names=names, columns=columns,
                         telemetry=telemetry, decision_threshold=threshold, attributes=extra,
                         segmenting=segmenting)
    try:
        object.__setattr__(model, CONFIG_ATTRIBUTE, config)
    except (AttributeError, TypeError):
        raise TypeError(f"cannot attach monitoring to {cls.__name__}: its instances take no attributes "
                        "(__slots__ without __dict__)") from None
    RUNTIME.use(telemetry, model)
    if torch_module is not None:
        RUNTIME.wrap(torch_module, "__call__", make_wrapper(semconv.OPERATION_FORWARD, RAW, semconv.SYSTEM_TORCH,
                                                            recordable=_torch_recordable), _patch.MANUAL, model)
    else:
        # Only methods the instance exposes (e.g. not a predict_proba that available_if hides); fit and score may
        # call predict: nothing inside them is recorded.
        methods = [m for m in _patch.PREDICT_METHODS if getattr(model, m, None) is not None]
        _patch.wrap_resolved(cls, _patch.MANUAL, system_of(cls), _patch.estimator_task, model, methods)
    return model


def _segmenting(telemetry: Telemetry, loaded: Reference | None, segment_by: str | None,
                baggage_key: str | None, max_segments: int | None, sensitive_column: str | None) -> SegmentConfig:
    """Arguments > the environment (the telemetry's settings) > a segmented profile's column > off."""
    settings = telemetry.settings
    column = segment_by if segment_by is not None else settings.segment_column
    baggage_key = baggage_key if baggage_key is not None else settings.segment_baggage_key
    segments = None
    if loaded is not None and loaded.segments is not None:
        if column is None and baggage_key is None:
            column = loaded.segment_column
        if column == loaded.segment_column or (column is None and baggage_key == loaded.segment_column):
            segments = loaded.segments
    return SegmentConfig(column, baggage_key, max_segments if max_segments is not None else settings.max_segments,
                         sensitive_column if sensitive_column is not None else settings.sensitive_column, segments)


def uninstrument_model(model: Any) -> Any:
    """Stop recording ``model``'s predictions (undo ``instrument_model``); returns the model.

    What was recorded so far is flushed with its telemetry. Methods that ``instrument_model`` wrapped on the
    model's classes are restored, the very original functions, unless another instrumented model or a zero-code
    instrumentor still needs them. A model that was not instrumented is returned as is.
    """
    config = getattr(model, "__dict__", {}).get(CONFIG_ATTRIBUTE)
    if config is None:
        return model
    del model.__dict__[CONFIG_ATTRIBUTE]
    RUNTIME.release_model(model)
    RUNTIME.unwrap(model=model)
    telemetry = config.telemetry
    if telemetry is not None:
        telemetry.flush_calls()
    return model


def _check_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if attributes is None:
        return None
    if not isinstance(attributes, Mapping):
        raise TypeError(f"attributes must be a mapping of name to value, got {type(attributes).__name__}")
    checked: dict[str, Any] = {}
    for key, value in attributes.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"attribute names must be non-empty strings, got {key!r}")
        if key in RESERVED_ATTRIBUTES or key.startswith(RESERVED_PREFIXES):
            raise ValueError(f"attribute {key!r} is set by otel-mlmon itself; give it another name")
        if isinstance(value, (str, bool, int, float)):
            checked[key] = value
        elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)) and value and \
                len({type(v) for v in value}) == 1 and isinstance(value[0], (str, bool, int, float)):
            checked[key] = tuple(value)
        else:
            raise TypeError(f"attribute {key!r} must be a str, bool, int or float, or a non-empty sequence of one "
                            f"of them, got {value!r}")
    return checked or None


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
    telemetry = telemetry_for(logger_provider=logger_provider)
    base = {semconv.ML_MODEL_NAME: model, semconv.ML_MODEL_VERSION: version}
    _events.emit_rows(telemetry.logger, semconv.EVENT_LABELS, base,
                      {semconv.ML_PREDICTION_ID: id_list, semconv.ML_LABEL_VALUE: column}, len(id_list),
                      telemetry.settings.event_max_rows)
