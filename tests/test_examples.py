"""The examples run as a user runs them (examples/model_service.py runs in the stack tests, tests/stack)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(argv: list[str], tmp_path: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**clean, **env})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout + done.stderr


def test_manual_instrumentation(tmp_path: Path) -> None:
    out = _run([sys.executable, str(EXAMPLES / "manual_instrumentation.py")], tmp_path)
    for name in ('"name": "predict_proba iris"', '"name": "ml.operation.duration"', '"name": "ml.feature.value"',
                 '"name": "ml.prediction.score"', '"ml.model.name": "iris"'):
        assert name in out, name


def test_zero_code(tmp_path: Path) -> None:
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    out = _run([str(instrument), sys.executable, str(EXAMPLES / "zero_code_app.py")], tmp_path,
               OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="console", OTEL_LOGS_EXPORTER="console")
    assert '"name": "predict_proba cancer"' in out and '"name": "ml.feature.value"' in out


def test_batch_evaluate(tmp_path: Path) -> None:
    out = _run([sys.executable, str(EXAMPLES / "batch_evaluate.py"), str(tmp_path)], tmp_path)
    windows = [line for line in out.splitlines() if line.startswith("window ")]
    assert len(windows) == 6
    assert all(line.endswith("drift in nothing") for line in windows[:3])  # drift starts at row 3000
    assert all("tenure" in line and "y_score" in line for line in windows[3:])
    assert (tmp_path / "report.html").stat().st_size > 0
