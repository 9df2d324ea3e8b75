"""`mlmon demo --stack`, as a user runs it: the native stack, the live view, alerts reaching Alertmanager."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from .conftest import require


def test_mlmon_demo_stack_runs_the_native_stack_and_shows_the_alerts(otelcol: str, jaeger: str) -> None:
    require("prometheus")
    require("prometheus-alertmanager")
    env = {**os.environ, "MLMON_OTELCOL": otelcol, "MLMON_JAEGER": jaeger}
    done = subprocess.run([sys.executable, "-m", "otel_mlmon.cli", "demo", "--stack", "--hold", "0"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for what in ("model service", "Collector OTLP/HTTP", "Prometheus", "Alertmanager", "Jaeger (traces)"):
        assert what in out
    print(out)  # shown when a check below fails
    lines = [parts for parts in map(str.split, out.splitlines()) if len(parts) > 5 and parts[0].isdigit()
             and parts[1].isdigit()]
    assert [line[0] for line in lines] == ["0", "1", "2", "3", "4", "5"]  # one line per window, in order
    final = {line[0]: line for line in lines}
    assert all(final[w][2] == "500" for w in final)  # each with all 500 labels
    assert all(final[w][-1] == "-" for w in ("0", "1", "2"))  # no drift before row 1500
    assert all("monthly_charges," in final[w] and "!" in final[w] for w in ("3", "4", "5"))  # accuracy falls
    assert "drift starts (row 1500): monthly_charges and plan shifted" in out and "^ accuracy fell" in out
    assert "alert in Alertmanager: MLFeatureDrift monthly_charges (Prometheus rule)" in out
    assert "alert in Alertmanager: ml_drift monthly_charges (processor)" in out
    assert "alert in Alertmanager: MLPerformanceDegraded accuracy (Prometheus rule)" in out
    counts = re.search(r"^(\d+) alerts in the analysis windows, (\d+) firing now \(the processor's\); "
                       r"Alertmanager holds (\d+): those (\d+) and (\d+) from Prometheus rules$", out, re.M)
    assert counts is not None
    total, processor, held, again, ruled = map(int, counts.groups())
    assert total > processor > 0 and processor == again and held == processor + ruled and ruled > 0


def test_ctrl_c_stops_the_whole_stack(otelcol: str, jaeger: str) -> None:
    require("prometheus")
    env = {**os.environ, "MLMON_OTELCOL": otelcol, "MLMON_JAEGER": jaeger}
    demo = subprocess.Popen([sys.executable, "-m", "otel_mlmon.cli", "demo", "--stack"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    assert demo.stdout is not None
    folder = None
    for line in demo.stdout:  # up and streaming: the window table's header
        if "logs and state in" in line:
            folder = line.split("logs and state in", 1)[1].strip()
        if line.startswith("window"):
            break
    assert folder, "the demo did not say where its stack lives"
    demo.send_signal(signal.SIGINT)
    rest = demo.stdout.read()
    assert demo.wait(60) == 130 and "stopped" in rest and "Traceback" not in rest
    left = []  # every process of the stack runs in its folder
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "cwd") == folder:
                left.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    assert left == [], f"processes of the stack still run: {left}"
