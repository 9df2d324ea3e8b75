"""What an application imports stays light: no scipy, pandas, pyarrow, aiohttp or grpc when it imports otel_mlmon,
instruments a model with a reference profile and predicts; ``mlmon`` commands whose extra is missing say which
extra to install in one line (exit 2) instead of a traceback.

``APP`` is also what tests/test_footprint.py runs in a fresh venv that has only the core install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from otel_mlmon.sketch import NumericSketch

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("scipy", "pandas", "pyarrow", "aiohttp", "grpc", "sklearn")

# An application: a model that is no framework's (a class with predict), instrumented with a reference profile
# (argv[1]), in-memory exporters; prints what was recorded and which heavy modules got imported, as JSON.
APP = f"HEAVY = {HEAVY!r}\n" + '''
import json, sys
import otel_mlmon
from otel_mlmon.instrumentation import force_flush
import numpy as np
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExporter, MetricExportResult
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class Sketches(MetricExporter):
    def __init__(self):
        super().__init__()
        self.points = []

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        self.points += [(m.name, p) for rm in metrics_data.resource_metrics for sm in rm.scope_metrics
                        for m in sm.metrics for p in m.data.data_points]
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis=10_000):
        return True

    def shutdown(self, timeout_millis=30_000, **kwargs):
        pass


class Churn:
    def predict(self, X):
        return np.where(X[:, 0].astype(float) > 40, "1", "0")


spans = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
logs = InMemoryLogRecordExporter()
logger_provider = LoggerProvider()
logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
sketches = Sketches()
model = otel_mlmon.instrument_model(Churn(), name="churn", version="1", task="classification",
                                    feature_names=["age", "plan"], reference=sys.argv[1],
                                    tracer_provider=tracer_provider, logger_provider=logger_provider,
                                    meter_provider=MeterProvider([InMemoryMetricReader()]), sketch_exporter=sketches)
rng = np.random.default_rng(1)
X = np.empty((300, 2), dtype=object)
X[:, 0] = rng.normal(45, 10, 300)
X[:, 1] = rng.choice(["basic", "gold"], 300)
with otel_mlmon.prediction_ids() as ids:
    y = model.predict(X)
otel_mlmon.record_labels("churn", ids=ids.ids, labels=list(y), version="1", logger_provider=logger_provider)
force_flush()
(age,) = [p for name, p in sketches.points if name == "ml.feature.value"]
print(json.dumps({
    "heavy": sorted(m for m in HEAVY if m in sys.modules),
    "otel_mlmon": otel_mlmon.__file__,
    "ids": len(ids.ids),
    "spans": [s.name for s in spans.get_finished_spans()],
    "events": sorted(r.log_record.event_name for r in logs.get_finished_logs()),
    "ages": X[:, 0].astype(float).tolist(),
    "plans": X[:, 1].tolist(),
    "age": {"center": age.attributes["ml.sketch.center"], "scale": age.attributes["ml.sketch.scale"],
            "bounds": list(age.explicit_bounds), "counts": list(age.bucket_counts), "count": age.count},
    "plan": {p.attributes["ml.feature.category"]: p.value for name, p in sketches.points
             if name == "ml.feature.category.count"},
}))
'''


def write_reference(path: Path) -> dict[str, Any]:
    """A reference profile built by the engine (``mlmon reference build`` in memory); returns its JSON."""
    from otel_mlmon.engine.columns import build_profile
    from otel_mlmon.engine.windows import WindowSpec

    rng = np.random.default_rng(0)
    age = rng.normal(40, 10, 2000)
    plan = rng.choice(["basic", "gold"], 2000).astype(object)
    profile, _ = build_profile({"age": age, "plan": plan,
                                "prediction": np.where(age > 40, "1", "0").astype(object)},
                               WindowSpec(chunk_size=500), model="churn", prediction_column="prediction")
    profile.save(path)
    return json.loads(path.read_text())


def check_app_output(output: dict[str, Any], reference: dict[str, Any]) -> None:
    """The app recorded everything, sketched ``age`` with the reference's bucketing, and imported nothing heavy."""
    assert output["heavy"] == []
    assert output["ids"] == 300 and output["spans"] == ["predict churn"]
    assert output["events"] == ["ml.labels", "ml.predictions"]
    sketch = reference["columns"]["age"]["sketch"]
    age = output["age"]
    assert (age["center"], age["scale"]) == (sketch["center"], sketch["scale"]) != (0.0, 1.0)
    rebuilt = NumericSketch.from_explicit(age["bounds"], age["counts"], count=age["count"], total=0.0, minimum=None,
                                          maximum=None, center=age["center"], scale=age["scale"])
    direct = NumericSketch(sketch["center"], sketch["scale"])
    direct.update(np.asarray(output["ages"]))
    assert age["count"] == 300
    for got, expected in zip(rebuilt.buckets(), direct.buckets()):
        assert got.tolist() == expected.tolist()
    plans = output["plans"]
    assert output["plan"] == {p: plans.count(p) for p in set(plans)}


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTHON"))}


def test_an_application_imports_no_scipy_pandas_pyarrow_aiohttp_or_grpc(tmp_path: Path) -> None:
    reference = write_reference(tmp_path / "ref.json")
    app = tmp_path / "app.py"
    app.write_text(APP)
    done = subprocess.run([sys.executable, str(app), str(tmp_path / "ref.json")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**_clean_env(), "PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)
    assert Path(output["otel_mlmon"]).is_relative_to(ROOT)
    check_app_output(output, reference)


def _imported(code: str) -> set[str]:
    """Top-level modules ``python -X importtime -c code`` imports."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**_clean_env(), "PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == 0, done.stderr
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in done.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_the_facade_and_the_instrumentors_import_nothing_heavy() -> None:
    facade = _imported("import otel_mlmon; import otel_mlmon.instrumentation")
    assert "otel_mlmon" in facade
    assert facade.isdisjoint({*HEAVY, "numpy"}), facade & {*HEAVY, "numpy"}
    # What zero-code loads (the entry points) and the reference reader: numpy at most.
    loaders = _imported("import otel_mlmon.instrumentation.sklearn, otel_mlmon.instrumentation.xgboost, "
                        "otel_mlmon.instrumentation.lightgbm, otel_mlmon.instrumentation.torch, "
                        "otel_mlmon.instrumentation._reference, otel_mlmon.sketch, otel_mlmon.semconv")
    assert loaders.isdisjoint(HEAVY), loaders & set(HEAVY)


def _mlmon_without(blocked: tuple[str, ...], *argv: str) -> subprocess.CompletedProcess[str]:
    """``mlmon argv`` as in an install without the ``blocked`` modules (``sys.modules[name] = None``)."""
    code = (f"import sys\nfor name in {blocked!r}: sys.modules[name] = None\n"
            f"from otel_mlmon.cli import main\nraise SystemExit(main({list(argv)!r}))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**_clean_env(), "PYTHONPATH": str(ROOT)}, check=False)


@pytest.mark.parametrize(("blocked", "argv", "needs"), [
    (("scipy",), ("evaluate", "--reference", "r.json", "--analysis", "a.csv", "--output", "o.csv"),
     "mlmon evaluate needs scipy (not installed): pip install 'otel-mlmon[batch]'"),
    (("pyarrow",), ("reference", "build", "--data", "a.csv", "--model", "m", "--output", "r.json"),
     "mlmon reference build needs pyarrow (not installed): pip install 'otel-mlmon[batch]'"),
    (("pandas",), ("replay", "--analysis", "a.csv", "--model", "m", "--endpoint", "http://127.0.0.1:9"),
     "mlmon replay needs pandas (not installed): pip install 'otel-mlmon[batch]'"),
    (("scipy", "aiohttp"), ("processor", "serve"),
     "mlmon processor serve needs aiohttp, scipy (not installed): pip install 'otel-mlmon[processor]'"),
    (("sklearn",), ("demo",),
     "mlmon demo needs scikit-learn (not installed): pip install 'otel-mlmon[sklearn,processor,batch]'"),
])
def test_a_command_without_its_extra_says_which_to_install(blocked: tuple[str, ...], argv: tuple[str, ...],
                                                           needs: str) -> None:
    done = _mlmon_without(blocked, *argv)
    assert (done.returncode, done.stderr) == (2, f"mlmon: error: {needs}\n")
