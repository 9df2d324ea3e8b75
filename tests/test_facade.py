"""The public facade: its names, and that importing it loads no heavy dependency."""

from __future__ import annotations

import subprocess
import sys

import otel_mlmon
from otel_mlmon import environment_variables, semconv


def test_every_public_name_imports() -> None:
    assert sorted(otel_mlmon.__all__) == ["__version__", "instrument_model", "prediction_ids", "record_labels",
                                           "uninstrument_model"]
    for name in otel_mlmon.__all__:
        assert getattr(otel_mlmon, name) is not None
    assert otel_mlmon.__version__.count(".") == 2


def test_import_loads_no_numpy_scipy_grpc_or_framework() -> None:
    code = ("import sys, otel_mlmon; heavy = {'numpy', 'scipy', 'grpc', 'aiohttp', 'sklearn', 'torch', 'xgboost', "
            "'lightgbm', 'pandas'}; print(sorted(heavy & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_every_setting_is_documented() -> None:
    import ast
    import inspect

    source = inspect.getsource(environment_variables)
    tree = ast.parse(source)
    documented = set()
    body = tree.body
    for node, following in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant) and "default" in following.value.value):
            documented.add(node.target.id)  # type: ignore[union-attr]
    names = {n for n in dir(environment_variables) if n.startswith("OTEL_PYTHON_MLMON_")}
    assert names == documented == set(environment_variables.ALL)


def test_no_telemetry_literals_outside_semconv() -> None:
    """Every `ml.*` name used in the package comes from semconv (DESIGN.md section 1)."""
    import pathlib
    import re

    root = pathlib.Path(otel_mlmon.__file__).parent
    pattern = re.compile(r"""["']ml\.[a-z_.]+["']""")
    offenders = [f"{path.relative_to(root)}:{i}" for path in root.rglob("*.py") if path.name != "semconv.py"
                 for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []
    assert semconv.ML_OPERATION_DURATION_UNIT == "s"
