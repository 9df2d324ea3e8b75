from __future__ import annotations

import io

import pytest

from otel_mlmon import cli
from otel_mlmon._demo import run


def test_demo_runs_the_whole_product_and_writes_a_report(tmp_path) -> None:
    out = io.StringIO()
    report = tmp_path / "demo.html"
    assert run(out, str(report)) == 0
    text = out.getvalue()
    final = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit() and parts[1] == "500":
            final[int(parts[0])] = line
    assert sorted(final) == [0, 1, 2, 3, 4, 5]
    for window in (0, 1, 2):  # before the drift: labeled, scored, silent
        assert final[window].split()[2] == "500" and final[window].rstrip().endswith("-")
    for window in (3, 4, 5):  # after it: the shifted inputs and the outputs they move
        assert "tenure" in final[window] and "plan" in final[window] and "score" in final[window]
    assert "joined 3000 labels" in text and "alerts firing: 0" not in text
    assert report.exists() and report.read_text().count('<svg class="plot"') > 10


def test_demo_stack_says_what_is_missing_and_how_to_get_it(tmp_path, monkeypatch) -> None:
    from otel_mlmon._demo import stack

    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus, alertmanager or otelcol-mlmon here
    monkeypatch.setenv("MLMON_CACHE_DIR", str(tmp_path / "cache"))  # and no cached Collector build
    monkeypatch.delenv("MLMON_OTELCOL", raising=False)
    out = io.StringIO()
    assert stack(out, hold_s=0) == 1
    text = out.getvalue()
    assert "Missing here" in text and "collector/build.sh" in text
    assert "apt-get install prometheus prometheus-alertmanager" in text


def test_demo_prepare_writes_the_compose_stacks_inputs(tmp_path) -> None:
    from otel_mlmon.engine.profile import ReferenceProfile

    assert cli.main(["demo", "--prepare", str(tmp_path)]) == 0
    profile = ReferenceProfile.load(str(tmp_path / "reference.json"))
    assert profile.model == "churn" and profile.classes == ["0", "1"]
    serving = (tmp_path / "serving.csv").read_text().splitlines()
    assert serving[0].split(",") == ["tenure", "monthly_charges", "support_calls", "plan", "churned", "id"]
    assert len(serving) == 3001 and (tmp_path / "model.pkl").stat().st_size > 0


def test_cli_without_command_is_a_usage_error(capsys) -> None:
    assert cli.main([]) == 2
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0


def test_replay_to_a_model_service_that_is_down_is_a_clear_error(tmp_path, capsys) -> None:
    from tests.conftest import free_port

    data = tmp_path / "rows.csv"
    data.write_text("id,x,y\na,1.0,0\nb,2.0,1\n")
    from otel_mlmon.instrumentation._telemetry import _live

    dead = f"http://127.0.0.1:{free_port()}"
    live = set(_live)
    code = cli.main(["replay", "--analysis", str(data), "--model", "m", "--id-column", "id", "--target-column", "y",
                     "--service", dead, "--endpoint", dead])
    assert code == 1
    assert f"the model service at {dead} is not reachable" in capsys.readouterr().err
    assert set(_live) == live  # nothing left behind to flush into the dead endpoint at exit
    assert cli.main(["replay", "--analysis", str(data), "--model", "m", "--id-column", "id", "--service", dead,
                     "--model-file", "x.pkl", "--endpoint", dead]) == 2  # the service holds the model
