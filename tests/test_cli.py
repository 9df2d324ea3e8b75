from __future__ import annotations

import io

import pytest

from otel_mlmon import cli
from otel_mlmon._demo import run


def test_demo_prints_the_telemetry_it_emitted() -> None:
    out = io.StringIO()
    assert run(out) == 0
    text = out.getvalue()
    assert "69 x 'predict cancer'" in text and "1 x 'predict_proba cancer'" in text
    assert "ml.predictions: 2 event(s), 269 rows" in text
    assert "ml.labels: 1 event(s), 150 rows" in text
    assert "ml.predictions [{prediction}] predict_proba: 200" in text
    assert "window 1 (single rows, 69 rows): drift alerts on ['mean radius']" in text


def test_cli_without_command_is_a_usage_error(capsys) -> None:
    assert cli.main([]) == 2
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
