"""Window results into MLflow (``mlmon evaluate --mlflow-experiment NAME | --mlflow-run ID``).

The analysis period's values become metrics with step = window index and the window's end as timestamp, keyed as
the TensorBoard tags are (``drift/<column>/<method>``, ``data_quality/<column>/<metric>``, ``performance/<metric>``,
plus ``window/rows``, ``window/label_coverage``, ``alerts/total``; characters other than letters, digits and
``_ - . /`` as ``_``).
The results file and the HTML report are logged as artifacts under ``mlmon/``. Tags ``mlmon.model``,
``mlmon.model_version`` and ``mlmon.alerts`` (the analysis period's alert count) describe the run. A run created
here is ended (FINISHED); an existing run (``--mlflow-run``) is left as it was. The tracking server comes from
``--mlflow-tracking-uri``, else ``MLFLOW_TRACKING_URI``, else MLflow's default.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from otel_mlmon.batch.output import MissingExtraError, OutputError
from otel_mlmon.batch.tensorboard import scalars

if TYPE_CHECKING:
    from otel_mlmon.batch.api import Results

BATCH = 1000  # MLflow's limit of metrics per log_batch call
_REFUSED = re.compile(r"[^\w.\- ]")


def client_class() -> Any:
    """MLflow's ``MlflowClient``, or a ``MissingExtraError`` that says what to install."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise MissingExtraError("--mlflow-experiment and --mlflow-run need mlflow: "
                                "pip install 'otel-mlmon[mlflow]'") from None
    return MlflowClient


def metric_key(tag: str) -> str:
    """A TensorBoard tag as an MLflow metric key: empty, ``.`` and ``..`` parts become ``_`` (MLflow refuses keys
    that are not normalized paths), and at most 250 characters."""
    parts = []
    for part in tag.split("/"):
        cleaned = _REFUSED.sub("_", part).strip()
        parts.append("_" if cleaned in ("", ".", "..") else cleaned)
    return "/".join(parts)[:250]


def log_results(results: Results, *, experiment: str | None, run_id: str | None, tracking_uri: str | None,
                artifacts: Sequence[str]) -> str:
    """Log ``results`` into a new run of ``experiment`` or into the run ``run_id``; returns the run id."""
    client_type = client_class()
    from mlflow.entities import Metric, RunTag
    from mlflow.exceptions import MlflowException

    analysis = [r for r in results.rows if r.period == "analysis"]
    # The documented order, read here: a tracking URI another part of the process set with mlflow.set_tracking_uri
    # (a global) would otherwise win over MLFLOW_TRACKING_URI.
    client = client_type(tracking_uri=tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None)
    where = f"MLflow at {client.tracking_uri}"
    models = sorted({(r.model, r.model_version) for r in results.rows})
    tags = [RunTag("mlmon.model", ", ".join(m for m, _ in models)),
            RunTag("mlmon.model_version", ", ".join(v for _, v in models)),
            RunTag("mlmon.alerts", str(sum(1 for r in analysis if r.alert)))]
    created = run_id is None
    try:
        if run_id is None:
            assert experiment is not None
            found = client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
            name = f"mlmon {models[0][0]}" if models else "mlmon"
            run_id = client.create_run(experiment_id, run_name=name).info.run_id
        metrics = [Metric(metric_key(tag), value, int(when * 1000), step)
                   for points in scalars(analysis).values() for tag, value, step, when in points
                   if math.isfinite(value)]
        client.log_batch(run_id, tags=tags)
        for start in range(0, len(metrics), BATCH):
            client.log_batch(run_id, metrics=metrics[start:start + BATCH])
        for path in artifacts:
            client.log_artifact(run_id, path, artifact_path="mlmon")
        if created:
            client.set_terminated(run_id)
    except (MlflowException, OSError) as exc:  # OSError: artifacts go to a store the client reaches itself
        if created and run_id is not None:
            try:
                client.set_terminated(run_id, status="FAILED")
            except (MlflowException, OSError):
                pass
        raise OutputError(f"{where}: {getattr(exc, 'message', exc)}") from None
    return run_id
