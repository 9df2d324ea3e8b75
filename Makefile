# The two commands of the README. Both install what they need first (pip is a no-op when it is there).
PYTHON ?= python3
PIP := $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: demo test lint install-dev system-deps bench

demo:
	$(PIP) -e ".[sklearn,processor,batch]"
	$(PYTHON) -m otel_mlmon.cli demo

install-dev:
	$(PIP) -e ".[dev,torch]"

# Debian's Prometheus, Alertmanager and Chromium, and the Collector built with ocb (cached): see the script.
system-deps:
	scripts/system-deps.sh

lint: install-dev
	$(PYTHON) -m ruff check otel_mlmon tests benchmarks examples
	$(PYTHON) -m mypy

# tests/integrations (MLflow, MLServer) run in a venv of their own beside the main environment: see the script.
test: lint system-deps
	$(PYTHON) -m pytest -q --doctest-modules otel_mlmon tests --ignore=tests/integrations
	MLMON_REQUIRE_INTEGRATIONS=1 "$$(PYTHON=$(PYTHON) scripts/integrations-venv.sh | tail -n 1)" -m pytest -q tests/integrations

bench: install-dev
	$(PYTHON) benchmarks/bench_instrumentation.py
	$(PYTHON) benchmarks/bench_engine.py
	$(PYTHON) benchmarks/bench_processor.py
