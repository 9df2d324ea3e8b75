"""`mlmon demo --stack --kafka` (otel_mlmon.demo.run.run_stack(kafka=True)): the native stack with a Kafka broker
between the Collector and two processor replicas. The demo's model's data goes through Kafka into one processor
(its windows complete, from that processor's /v1/results), the broker says the consumer groups committed every
message, and nothing of the stack runs after it returns. Without Java or the cloud Collector it exits 2 with one
line saying what to install or build."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from otel_mlmon.demo.run import run_stack

from .conftest import require

pytestmark = pytest.mark.integration


def _left_in(folder: str) -> list[str]:
    """Command lines of the processes whose working directory is ``folder`` (every process of the stack)."""
    left = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "cwd") == folder:
                left.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return left


def test_demo_stack_kafka_streams_through_the_broker_into_one_of_two_replicas(
        otelcol_cloud: str, jaeger: str, monkeypatch: pytest.MonkeyPatch) -> None:
    require("prometheus")
    require("prometheus-alertmanager")
    require("java")
    monkeypatch.setenv("MLMON_OTELCOL_CLOUD", otelcol_cloud)
    monkeypatch.setenv("MLMON_JAEGER", jaeger)
    out = io.StringIO()
    code = run_stack(out=out, hold_s=0, kafka=True, replicas=2)
    text = out.getvalue()
    print(text)  # shown when a check below fails
    assert code == 0
    for what in ("processor a (/v1/results)", "processor b (/v1/results)", "Kafka broker", "Collector OTLP/HTTP"):
        assert what in text
    # The processors' results: one line per window, each with all of its 500 labels.
    lines = [parts for parts in map(str.split, text.splitlines()) if len(parts) > 5 and parts[0].isdigit()
             and parts[1].isdigit()]
    final = {line[0]: line for line in lines}
    assert sorted(final) == ["0", "1", "2", "3", "4", "5"] and all(final[w][2] == "500" for w in final), lines
    assert "alert in Alertmanager: ml_drift monthly_charges (processor)" in text
    # All of the model's data at one replica (one partition of each topic).
    holders = re.search(r"^Kafka: churn's results are at processor (\S+) of 2 ", text, re.M)
    assert holders is not None and holders.group(1) in ("a", "b"), text[-2000:]
    # The broker's own account: the events and the sketches were consumed, and committed only once processed.
    groups = dict(re.findall(r"^Kafka: consumer group (otel-mlmon-\w+) committed (\d+ of \d+ messages, lag \d+)",
                             text, re.M))
    assert set(groups) == {"otel-mlmon-events", "otel-mlmon-sketches"}, groups
    for group, counts in groups.items():
        committed, end, lag = map(int, re.findall(r"\d+", counts))
        assert committed > 0, (group, counts)
        if group == "otel-mlmon-events":  # every window is complete: every event was processed
            assert committed == end and lag == 0, (group, counts)
    folder = re.search(r"logs and state in (\S+)", text)
    assert folder is not None
    assert _left_in(folder.group(1)) == [], "processes of the stack still run"


def test_demo_stack_kafka_without_java_or_the_cloud_build_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no mvn, no otelcol-mlmon-cloud
    monkeypatch.setenv("MLMON_CACHE_DIR", str(tmp_path / "cache"))  # no cached build, no Kafka jars
    monkeypatch.delenv("MLMON_OTELCOL_CLOUD", raising=False)
    assert run_stack(out=io.StringIO(), hold_s=0, kafka=True) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("mlmon: error: mlmon demo --stack --kafka needs "), error
    assert "Java 17" in error and "Maven" in error and "collector/build.sh --cloud" in error, error
