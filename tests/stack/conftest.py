"""The real parts: the Collector built from our manifests, Jaeger built from its module, Prometheus, promtool,
Alertmanager, and the native demo stack run once for tests/stack/test_stack.py. `make test` installs and builds
them (scripts/system-deps.sh); a missing one fails the test with what to run, it is never skipped."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_mlmon.demo.stack import NativeStack, find_binaries

REPO = Path(__file__).resolve().parents[2]


def require(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        pytest.fail(f"{program} is not installed: `make test` installs it (scripts/system-deps.sh), or "
                    "apt-get install prometheus prometheus-alertmanager")
    return found


def _build(*flags: str) -> str:
    try:
        done = subprocess.run([str(REPO / "collector" / "build.sh"), *flags], capture_output=True, text=True,
                              timeout=1800, check=True)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"collector/build.sh {' '.join(flags)} failed:\n{exc.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def otelcol() -> str:
    """The Collector of collector/builder-config.yaml (cached: instant after the first build)."""
    return _build()


@pytest.fixture(scope="session")
def otelcol_cloud() -> str:
    """The Collector of collector/builder-config-cloud.yaml: the core components plus the cloud exporters."""
    return _build("--cloud")


@pytest.fixture(scope="session")
def jaeger() -> str:
    """Jaeger v2, built from its Go module (collector/build.sh --jaeger; cached)."""
    return _build("--jaeger")


@pytest.fixture(scope="module")  # stopped once test_stack.py is done, before the next stack starts
def stack(otelcol: str, jaeger: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeStack]:
    """One run of the native demo stack: drift from row DRIFT_FROM (window 3 of 6), the processor killed and
    restarted while the rows stream, labels arriving late through the Collector, one failing predict call."""
    for program in ("prometheus", "prometheus-alertmanager"):
        require(program)
    binaries, missing = find_binaries()
    assert binaries is not None, missing
    binaries.collector, binaries.jaeger = otelcol, jaeger  # this checkout's builds, whatever else is on PATH
    folder = tmp_path_factory.mktemp("stack")
    stack = NativeStack(folder, binaries)
    stack.prepare()
    try:
        stack.start()
        failing = stack.bad_request()  # an unknown plan: the model raises, the span and histogram say so
        assert failing == 422
        errors: list[BaseException] = []

        def drive() -> None:
            try:
                stack.drive(rate=600.0, label_delay_s=2.0)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        driver = threading.Thread(target=drive)
        driver.start()
        time.sleep(1.5)  # a few hundred rows in: kill the processor, and bring it back 3 s later
        stack.kill("processor")
        time.sleep(3)
        stack.restart("processor")
        driver.join(300)
        assert not driver.is_alive(), "the load driver did not finish"
        assert not errors, f"the load driver failed: {errors[0]!r}\n{stack.tail('replay')}"
        yield stack
    finally:
        stack.stop()
        for name in ("collector", "processor", "model"):
            log = stack.folder / f"{name}.log"
            if log.exists():
                print(f"--- {name}.log (tail)\n{stack.tail(name, 15)}")
