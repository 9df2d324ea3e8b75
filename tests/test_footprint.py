"""The core install is light: ``pip install otel-mlmon`` (what an application adds) in a fresh venv takes at most
150 MB and brings no scipy, pandas, pyarrow or aiohttp, and an instrumented model with a reference profile works there.

Builds the wheel of this checkout, makes a venv with ``python -m venv`` (pip included, as a user's would be) and
installs the wheel with its core dependencies from the package index (pip's cache makes reruns fast).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_light_imports import APP, check_app_output, write_reference

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MB = 150
ABSENT = ("scipy", "pandas", "pyarrow", "aiohttp")


def _disk_mb(top: Path) -> tuple[float, float]:
    """(disk usage as ``du -s`` counts it, sum of file sizes) under ``top`` in MB, symlinks not followed."""
    blocks = size = 0
    for folder, _, files in os.walk(top):
        blocks += os.lstat(folder).st_blocks * 512
        for name in files:
            stat = os.lstat(os.path.join(folder, name))
            blocks += stat.st_blocks * 512
            size += stat.st_size
    return blocks / 2**20, size / 2**20


def _run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_the_core_install_is_light_and_an_instrumented_model_works_there(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(ROOT)],
                 tmp_path)
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("otel_mlmon-*.whl")
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
                     tmp_path)
    assert installed.returncode == 0, installed.stderr

    names = _run([str(python), "-c", "import importlib.metadata as m, json; "
                  "print(json.dumps(sorted(d.metadata['Name'].lower() for d in m.distributions())))"], tmp_path)
    distributions = json.loads(names.stdout)
    assert "otel-mlmon" in distributions and "numpy" in distributions
    assert not set(ABSENT) & set(distributions), distributions

    (site_packages,) = (venv / "lib").glob("python3*/site-packages")
    venv_mb, venv_files_mb = _disk_mb(venv)
    site_mb, _ = _disk_mb(site_packages)
    print(f"\nfresh venv with the core install: {venv_mb:.1f} MB on disk ({venv_files_mb:.1f} MB of files), "
          f"site-packages {site_mb:.1f} MB; {len(distributions)} distributions: {', '.join(distributions)}")
    assert venv_mb <= BUDGET_MB, f"the core install takes {venv_mb:.1f} MB (budget {BUDGET_MB} MB): {distributions}"

    # An application there: a model instrumented with a reference profile, predictions, labels, sketches.
    reference = write_reference(tmp_path / "ref.json")
    app = tmp_path / "app.py"
    app.write_text(APP)
    ran = _run([str(python), str(app), str(tmp_path / "ref.json")], tmp_path, timeout=120)
    assert ran.returncode == 0, ran.stderr
    output = json.loads(ran.stdout)
    assert Path(output["otel_mlmon"]).is_relative_to(venv)
    check_app_output(output, reference)

    # Commands that need an extra say which, in one line.
    mlmon = str(venv / "bin" / "mlmon")
    evaluate = _run([mlmon, "evaluate", "--reference", "ref.json", "--analysis", "a.csv", "--output", "o.csv"],
                    tmp_path, timeout=60)
    assert (evaluate.returncode, evaluate.stderr) == (2, "mlmon: error: mlmon evaluate needs pandas, pyarrow, scipy "
                                                         "(not installed): pip install 'otel-mlmon[batch]'\n")
    serve = _run([mlmon, "processor", "serve"], tmp_path, timeout=60)
    assert serve.returncode == 2 and serve.stderr.count("\n") == 1, serve.stderr
    assert serve.stderr.endswith("(not installed): pip install 'otel-mlmon[processor]'\n"), serve.stderr
