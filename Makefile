# The two commands of the README. Both install what they need first (pip is a no-op when it is there).
PYTHON ?= python3
PIP := $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: demo test lint install-dev system-deps bench

demo:
	@echo "make demo: pip installs otel-mlmon[sklearn,processor,batch] (a minute or two the first time, seconds after)"
	$(PYTHON) -m pip install --disable-pip-version-check --progress-bar on -e ".[sklearn,processor,batch]"
	@echo "make demo: installed; starting the demo (about 30 s)"
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
