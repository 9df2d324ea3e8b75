"""MLServer runtimes whose inferences otel-mlmon records, with the V2 request id as the prediction ids.

Seldon's MLServer serves a model through a *runtime* class named in its ``model-settings.json``. Name ours instead
of the stock one and run the server under ``opentelemetry-instrument``::

    {"name": "churn", "implementation": "otel_mlmon.instrumentation.mlserver.SKLearnModel",
     "parameters": {"uri": "./model.joblib", "version": "v3"}}

    OTEL_PYTHON_MLMON_EVENT_MODE=per_call opentelemetry-instrument mlserver start .

Every V2 inference request (REST ``POST /v2/models/<name>/infer`` or gRPC ``ModelInfer``) is then one
``predict`` span, its metrics and one ``ml.predictions`` event (``per_call`` mode), under ``ml.model.name`` = the
settings' ``name`` and ``ml.model.version`` = its ``parameters.version`` (``""`` when absent). Its rows get the
request's ``id`` as prediction ids — ``<id>`` for a one-row request, ``<id>-<row>`` (row from 0) for more, as
``OTEL_PYTHON_MLMON_ID_BAGGAGE_KEY`` does — so labels sent later with ``otel_mlmon.record_labels`` under those ids
join. MLServer answers with the same ``id``, and gives one to a request that has none.

- ``SKLearnModel``: ``mlserver_sklearn.SKLearnModel`` (pip package ``mlserver-sklearn``), monitored.
- ``MonitoredRuntime``: the mixin behind it, for other runtimes that keep their model in ``self._model``
  (``mlserver_xgboost.XGBoostModel``, ``mlserver_lightgbm.LightGBMModel``) or say which object to record by
  overriding ``monitored_model()``: ``class Runtime(MonitoredRuntime, XGBoostModel): pass``.

Options of ``instrument_model`` may be given in the settings as ``parameters.extra.otel_mlmon``: ``task``,
``feature_names``, ``decision_threshold`` and ``reference`` (a profile path, relative to the settings' folder).

MLServer runs inference in worker processes (``parallel_workers``, 1 by default); ``opentelemetry-instrument``
configures the SDK in each of them (they inherit its environment). Not covered: adaptive batching
(``max_batch_size`` > 1) merges requests before the runtime sees them, so the rows of a merged batch get the
merged request's id; send an id input column with ``OTEL_PYTHON_MLMON_ID_COLUMN`` there instead.
A failure of ours never fails a load or an inference: the model is served unmonitored and the reason is logged.
"""

from __future__ import annotations

import logging
import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

__all__ = ["MonitoredRuntime", "SKLearnModel", "request_ids"]  # noqa: F822 - SKLearnModel: module __getattr__

_logger = logging.getLogger(__name__)
OPTIONS_KEY = "otel_mlmon"  # parameters.extra.otel_mlmon in model-settings.json
_OPTIONS = frozenset({"task", "feature_names", "decision_threshold", "reference"})


def request_ids(payload: Any) -> list[str] | None:
    """The prediction ids of a V2 inference request: ``<id>`` for one row, ``<id>-<row>`` for more.

    The row count is the first dimension of the first input (every input of a V2 request carries the batch in
    its first dimension). None when the request has no id or no inputs with a shape.
    """
    request_id = getattr(payload, "id", None)
    inputs = getattr(payload, "inputs", None)
    if not request_id or not inputs:
        return None
    shape = list(getattr(inputs[0], "shape", None) or [])
    if not shape or int(shape[0]) < 1:
        return None
    rows = int(shape[0])
    return [str(request_id)] if rows == 1 else [f"{request_id}-{row}" for row in range(rows)]


class MonitoredRuntime:
    """Mixin for an MLServer runtime (put it first): the loaded model is instrumented with the settings' name and
    version, and each inference request's rows get the request id as prediction ids."""

    _otel_mlmon_ready = False

    def monitored_model(self) -> Any:
        """The object whose predictions are recorded; default: ``self._model`` (the stock runtimes' model)."""
        return getattr(self, "_model", None)

    async def load(self) -> bool:
        ready: bool = await super().load()  # type: ignore[misc]
        try:
            self._otel_mlmon_instrument()
        except Exception as exc:  # serve unmonitored rather than not at all
            _logger.warning("otel-mlmon could not instrument MLServer model %r (%s: %s); it is served without "
                            "monitoring", getattr(self, "name", "?"), type(exc).__name__, exc)
        return ready

    def _otel_mlmon_instrument(self) -> None:
        import otel_mlmon

        model = self.monitored_model()
        if model is None:
            raise TypeError(f"{type(self).__name__}.monitored_model() returned None: override it to return the "
                            "loaded model")
        settings = self.settings  # type: ignore[attr-defined]
        options = _options(settings)
        otel_mlmon.instrument_model(model, name=self.name, version=self.version or "",  # type: ignore[attr-defined]
                                    **options)
        self._otel_mlmon_ready = True

    async def predict(self, payload: Any) -> Any:
        block: AbstractContextManager[Any] = nullcontext()
        if self._otel_mlmon_ready:
            try:
                ids = request_ids(payload)
                if ids is not None:
                    import otel_mlmon

                    block = otel_mlmon.prediction_ids(ids=ids)
            except Exception as exc:
                _logger.warning("otel-mlmon could not take prediction ids from request %r (%s: %s)",
                                getattr(payload, "id", None), type(exc).__name__, exc)
        with block:
            return await super().predict(payload)  # type: ignore[misc]


def _options(settings: Any) -> dict[str, Any]:
    """``parameters.extra.otel_mlmon`` of the model settings, checked; ``reference`` made absolute."""
    parameters = getattr(settings, "parameters", None)
    extra = getattr(parameters, "extra", None) or {}
    options = extra.get(OPTIONS_KEY) or {}
    if not isinstance(options, dict):
        raise TypeError(f"parameters.extra.{OPTIONS_KEY} must be an object, got {type(options).__name__}")
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ValueError(f"parameters.extra.{OPTIONS_KEY} has unknown keys {unknown} (known: {sorted(_OPTIONS)})")
    options = dict(options)
    source = getattr(settings, "_source", None)
    reference = options.get("reference")
    if isinstance(reference, str) and source and not os.path.isabs(reference):
        options["reference"] = os.path.join(os.path.dirname(source), reference)
    return options


def __getattr__(name: str) -> Any:
    # Built at first use, so that importing this module needs neither mlserver nor mlserver-sklearn.
    if name == "SKLearnModel":
        from mlserver_sklearn import SKLearnModel as Stock

        runtime = type("SKLearnModel", (MonitoredRuntime, Stock), {
            "__module__": __name__,
            "__qualname__": "SKLearnModel",
            "__doc__": "``mlserver_sklearn.SKLearnModel`` whose inferences otel-mlmon records.",
        })
        globals()["SKLearnModel"] = runtime
        return runtime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
