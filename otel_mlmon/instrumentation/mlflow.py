"""MLflow models: the registry's name and version, and the training run, on every prediction of a loaded model.

A model loaded by ``mlflow.pyfunc.load_model`` or a flavor's ``load_model`` (sklearn, xgboost, lightgbm, pytorch)
is recorded with ``ml.model.name`` = its registered name, ``ml.model.version`` = its registry version (an alias,
a stage or ``latest`` resolved to the version it points to) and ``ml.model.run_id`` = the run that logged it:

- zero-code: ``opentelemetry-instrument`` loads ``MlflowInstrumentor`` (entry point ``mlmon_mlflow``), which wraps
  those ``load_model`` functions;
- one call: ``instrument_mlflow_model(mlflow.pyfunc.load_model(uri), uri)``, or
  ``MlflowInstrumentor().instrument()`` once at startup.

How a model URI is resolved (once, at load time, through ``mlflow.MlflowClient``):

- ``models:/name/3``: name and version as written; the run from the registry.
- ``models:/name@alias``, ``models:/name/Production``, ``models:/name/latest``: the version the alias, stage or
  ``latest`` pointed to when the registry was asked, just after the load (an alias moved in between is not seen).
- ``runs:/<run_id>/<path>``, ``models:/<model_id>`` (MLflow 3 logged models) and local paths (their ``MLmodel``
  file): the run; when that run's model was registered under one name, that name and its first (lowest) version,
  else the logged model's name (the artifact path) and version ``""``.

A registry that cannot be asked (down, no permission) never fails the load: the model is recorded with what the
URI itself says, and the reason is logged once. A pyfunc model whose underlying model is a scikit-learn, XGBoost,
LightGBM or torch model has that model recorded (its real operation: ``predict``, or ``predict_proba`` for a model
logged with ``pyfunc_predict_fn="predict_proba"``); any other pyfunc model is recorded as the ``PyFuncModel``'s
``predict``. Nothing nested is recorded: a load inside a wrapped load (a flavor that loads another) is left alone.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
import warnings
from collections.abc import Callable, Collection
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import wrapt
from opentelemetry.instrumentation.dependencies import DependencyConflict, get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap

from otel_mlmon import semconv

__all__ = ["MlflowInstrumentor", "MlflowModelInfo", "instrument_mlflow_model", "resolve"]

_logger = logging.getLogger(__name__)

ML_MODEL_RUN_ID: str = semconv.ML_MODEL_RUN_ID
"""The MLflow run that logged the model (span and ``ml.predictions`` event attribute, never on metrics)."""

# Modules whose ``load_model`` is wrapped; each is patched when the application imports it.
LOADERS = ("mlflow.pyfunc", "mlflow.sklearn", "mlflow.xgboost", "mlflow.lightgbm", "mlflow.pytorch")
# Top-level packages of the models recorded as themselves inside a pyfunc model.
_FRAMEWORKS = frozenset({"sklearn", "xgboost", "lightgbm", "torch"})
_PROVIDER_KEYS = ("tracer_provider", "meter_provider", "logger_provider", "sketch_exporter")

_LOADING: ContextVar[bool] = ContextVar("otel_mlmon_mlflow_loading", default=False)
_warned: set[str] = set()


def _warn_once(kind: str, message: str, *args: Any) -> None:
    if kind not in _warned:
        _warned.add(kind)
        _logger.warning(message, *args)


@dataclass(frozen=True)
class MlflowModelInfo:
    """Who a loaded MLflow model is.

    Attributes:
        name: the registered model name; for a model never registered, its logged name (the artifact path).
        version: the registry version (``""`` when the model is not registered).
        run_id: the MLflow run that logged it, when known.
        model_id: the MLflow 3 logged model id, when known.
        uri: the URI the model was loaded from.
    """

    name: str
    version: str
    run_id: str | None
    model_id: str | None
    uri: str


def resolve(model_uri: str | os.PathLike[str], *, loaded: Any = None, client: Any = None) -> MlflowModelInfo:
    """Name, registry version and run of the model at ``model_uri``.

    Args:
        model_uri: the URI given to ``load_model`` (``models:/…``, ``runs:/…``, a local path, …).
        loaded: the loaded model, when there is one (a ``PyFuncModel`` tells its run and logged model id).
        client: an ``mlflow.MlflowClient``; default: one for the current tracking and registry URIs.

    Never raises on a registry that cannot be asked: what the URI itself says is returned, and the reason logged.
    """
    uri = os.fspath(model_uri)
    if not isinstance(uri, str):
        raise TypeError(f"model_uri must be a str or path, got {type(model_uri).__name__}")
    meta = _metadata(loaded, uri)
    guess = _from_uri(uri, meta)
    if guess.run_id is None and urllib.parse.urlparse(uri).scheme != "models":
        return guess  # nothing the registry could add
    try:
        if client is None:
            import mlflow

            client = mlflow.MlflowClient()
        return _ask_registry(client, uri, guess)
    except Exception as exc:  # a registry down or refusing: the URI's own answer, not a failed load
        _warn_once(f"resolve:{type(exc).__name__}",
                   "otel-mlmon could not ask the MLflow registry about %r (%s: %s); its predictions are recorded "
                   "as name=%r version=%r", uri, type(exc).__name__, exc, guess.name, guess.version)
        return guess


@dataclass(frozen=True)
class _Meta:
    run_id: str | None = None
    model_id: str | None = None
    artifact_path: str | None = None


def _metadata(loaded: Any, uri: str) -> _Meta:
    """The run, logged model id and artifact path a loaded pyfunc model (or a local ``MLmodel`` file) records."""
    meta = None
    try:
        meta = getattr(loaded, "metadata", None) if loaded is not None and _is_pyfunc(loaded) else None
        local = urllib.parse.urlparse(uri).path if uri.startswith("file:") else uri
        if meta is None and ":/" not in local and os.path.isfile(os.path.join(local, "MLmodel")):
            from mlflow.models import Model

            meta = Model.load(os.path.join(local, "MLmodel"))
    except Exception as exc:
        _warn_once(f"metadata:{type(exc).__name__}", "otel-mlmon could not read the MLmodel of %r (%s: %s)", uri,
                   type(exc).__name__, exc)
    if meta is None:
        return _Meta()
    return _Meta(_text(getattr(meta, "run_id", None)), _text(getattr(meta, "model_id", None)),
                 _text(getattr(meta, "artifact_path", None)))


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _from_uri(uri: str, meta: _Meta) -> MlflowModelInfo:
    """What the URI alone says (no registry call)."""
    parsed = urllib.parse.urlparse(uri, allow_fragments=False)
    path = parsed.path.strip("/")
    if parsed.scheme == "models":
        head, _, suffix = path.partition("/")
        name = head.rsplit("@", 1)[0] if "@" in head and not suffix else head
        version = suffix if suffix.isdigit() else ""
        model_id = meta.model_id or (head if not suffix and "@" not in head else None)
        return MlflowModelInfo(name or uri, version, meta.run_id, model_id, uri)
    if parsed.scheme == "runs":
        run_id, _, artifact = path.partition("/")
        name = artifact.rstrip("/").rsplit("/", 1)[-1] or meta.artifact_path or "model"
        return MlflowModelInfo(name, "", run_id or meta.run_id, meta.model_id, uri)
    name = meta.artifact_path or os.path.basename(uri.rstrip("/\\")) or uri
    return MlflowModelInfo(name, "", meta.run_id, meta.model_id, uri)


def _ask_registry(client: Any, uri: str, guess: MlflowModelInfo) -> MlflowModelInfo:
    parsed = urllib.parse.urlparse(uri, allow_fragments=False)
    if parsed.scheme == "models":
        head, _, suffix = parsed.path.strip("/").partition("/")
        if suffix.isdigit():
            found = client.get_model_version(head, suffix)
        elif "@" in head and not suffix:
            name, alias = head.rsplit("@", 1)
            found = client.get_model_version_by_alias(name, alias)
        elif suffix:  # "latest" (the highest version), or a stage (deprecated by MLflow, still served)
            if suffix.lower() == "latest":
                candidates = list(client.search_model_versions(f"name = '{_quoted(head)}'"))
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    candidates = list(client.get_latest_versions(head, [suffix]))
            if not candidates:
                return guess
            found = max(candidates, key=lambda v: int(v.version))
        else:  # models:/<model_id>
            logged = client.get_logged_model(head)
            run_id = _text(getattr(logged, "source_run_id", None)) or guess.run_id
            named = MlflowModelInfo(_text(getattr(logged, "name", None)) or guess.name, "", run_id, head, uri)
            return _registered(client, named)
        return MlflowModelInfo(str(found.name), str(found.version), _text(found.run_id) or guess.run_id,
                               _text(getattr(found, "model_id", None)) or guess.model_id, uri)
    if guess.run_id is None:
        return guess
    return _registered(client, guess)


def _registered(client: Any, info: MlflowModelInfo) -> MlflowModelInfo:
    """``info`` with the registered name and first version of its run's model, when registered under one name."""
    versions = list(client.search_model_versions(f"run_id = '{_quoted(info.run_id or '')}'"))
    if info.model_id is not None:
        same_model = [v for v in versions if getattr(v, "model_id", None) == info.model_id]
        versions = same_model or [v for v in versions if getattr(v, "model_id", None) is None]
    names = {str(v.name) for v in versions}
    if len(names) != 1:
        if len(names) > 1:
            _warn_once(f"ambiguous:{info.run_id}", "run %s has models registered as %s; its model loaded from %r is "
                       "recorded as %r, unversioned (pass name= and version= to say which)", info.run_id,
                       sorted(names), info.uri, info.name)
        return info
    first = min(versions, key=lambda v: int(v.version))
    return MlflowModelInfo(str(first.name), str(first.version), info.run_id,
                           info.model_id or _text(getattr(first, "model_id", None)), info.uri)


def _quoted(text: str) -> str:
    """``text`` inside a single-quoted MLflow search filter."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _is_pyfunc(model: Any) -> bool:
    return any(c.__name__ == "PyFuncModel" and c.__module__.startswith("mlflow.pyfunc") for c in type(model).__mro__)


def _framework_model(model: Any) -> bool:
    return any(c.__module__.partition(".")[0] in _FRAMEWORKS for c in type(model).__mro__ if c is not object)


def _recorded_object(model: Any) -> Any:
    """What to instrument: a pyfunc model's underlying framework model, else the model itself."""
    if not _is_pyfunc(model):
        return model
    try:
        raw = model.get_raw_model()
    except Exception:  # NotImplementedError: a pyfunc flavor without a raw model (e.g. a custom PythonModel)
        return model
    return raw if raw is not None and raw is not model and _framework_model(raw) else model


def _rebind_predict_fn(pyfunc_model: Any, raw: Any) -> None:
    """A pyfunc model logged with ``pyfunc_predict_fn`` (e.g. ``predict_proba``) holds that method bound before
    the model was instrumented; bind it again so that its calls are recorded (MLflow's own attribute)."""
    bound = getattr(pyfunc_model, "_predict_fn", None)
    if bound is not None and getattr(bound, "__self__", None) is raw:
        pyfunc_model._predict_fn = getattr(raw, bound.__name__)


def instrument_mlflow_model(model: Any, model_uri: str | os.PathLike[str], *, name: str | None = None,
                            version: str | None = None, client: Any = None, **kwargs: Any) -> Any:
    """Record the predictions of a model MLflow loaded from ``model_uri`` under its registry name and version.

    >>> # model = instrument_mlflow_model(mlflow.pyfunc.load_model("models:/churn@champion"),
    >>> #                                 "models:/churn@champion")

    Args:
        model: what ``mlflow.pyfunc.load_model`` or a flavor's ``load_model`` returned.
        model_uri: the URI it was loaded from.
        name, version: override what the registry says.
        client: an ``mlflow.MlflowClient``; default: one for the current tracking and registry URIs.
        **kwargs: passed to ``otel_mlmon.instrument_model`` (``task``, ``reference``, providers, …).

    Returns:
        ``model`` itself, instrumented in place (a pyfunc model's underlying framework model is the one recorded).

    Raises:
        TypeError / ValueError: as ``instrument_model`` does (a bad argument, a model with nothing to record).
    """
    import otel_mlmon

    info = resolve(model_uri, loaded=model, client=client)
    attributes = dict(kwargs.pop("attributes", None) or {})
    if info.run_id is not None:
        attributes.setdefault(ML_MODEL_RUN_ID, info.run_id)
    target = _recorded_object(model)
    otel_mlmon.instrument_model(target, name=name if name is not None else info.name,
                                version=version if version is not None else info.version,
                                attributes=attributes or None, **kwargs)
    if target is not model:
        try:
            _rebind_predict_fn(model, target)
        except Exception as exc:
            _warn_once("rebind", "otel-mlmon could not rebind the pyfunc predict function (%s: %s); a "
                       "pyfunc_predict_fn other than predict may go unrecorded", type(exc).__name__, exc)
    return model


class MlflowInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Zero-code: every model loaded by ``mlflow.pyfunc.load_model`` or a flavor's ``load_model`` is recorded
    under its registry name, version and run (entry point ``mlmon_mlflow``).

    ``instrument(tracer_provider=…, meter_provider=…, logger_provider=…, sketch_exporter=…)`` sends to these
    providers instead of the global ones.
    """

    _active = False
    _patched: frozenset[str] = frozenset()  # the modules whose load_model is wrapped now
    _providers: dict[str, Any] | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("mlflow >= 2.3",)

    def _check_dependency_conflicts(self) -> DependencyConflict | None:
        # Either distribution provides the ``mlflow`` package: the full server or the client-only build.
        return get_dependency_conflicts([], ["mlflow >= 2.3", "mlflow-skinny >= 2.3"])

    def _instrument(self, **kwargs: Any) -> None:
        self._providers = {k: kwargs[k] for k in _PROVIDER_KEYS if kwargs.get(k) is not None}
        self._active = True
        for module in LOADERS:
            # Importing MLflow at startup would slow every process down: patch when the application imports it.
            wrapt.register_post_import_hook(self._on_import, module)

    def _on_import(self, module: Any) -> None:
        if not self._active or module.__name__ in self._patched:
            return
        try:
            wrapt.wrap_function_wrapper(module, "load_model", self._make_wrapper())
            self._patched = self._patched | {module.__name__}
        except Exception as exc:
            _warn_once(f"patch:{module.__name__}", "otel-mlmon could not wrap %s.load_model (%s: %s)",
                       module.__name__, type(exc).__name__, exc)

    def _uninstrument(self, **kwargs: Any) -> None:
        self._active = False
        import sys

        for name in sorted(self._patched):
            module = sys.modules.get(name)
            if module is not None:
                unwrap(module, "load_model")
        self._patched = frozenset()

    def _make_wrapper(self) -> Callable[..., Any]:
        def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
            if _LOADING.get():
                return wrapped(*args, **kwargs)
            token = _LOADING.set(True)
            try:
                model = wrapped(*args, **kwargs)
            finally:
                _LOADING.reset(token)
            uri = args[0] if args else kwargs.get("model_uri")
            if not self._active or uri is None:
                return model
            try:
                instrument_mlflow_model(model, uri, **(self._providers or {}))
            except Exception as exc:  # never fail the application's load
                _warn_once(f"instrument:{type(exc).__name__}", "otel-mlmon could not instrument the model loaded "
                           "from %r (%s: %s); its predictions are not recorded", uri, type(exc).__name__, exc)
            return model

        return wrapper
