# retrain-assets: `make demo` sets everything up and plays the lifecycle; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export RETRAIN_CONFIG ?= $(CURDIR)/retrain.yaml
UI_PORT ?= 3000
# Every dependency (runtime, test and bench extras) pinned; each install below takes its versions from it.
LOCK := constraints.txt
PIP_INSTALL := $(BIN)/pip install --quiet --constraint $(LOCK)
# The suite on one pytest-xdist worker per CPU, a test module at a time (its module-scoped fixtures, a served
# model or a replay, are built once). `make test PARALLEL=` runs it in one process.
PARALLEL := -n auto --dist loadfile
UV_VERSION := 0.13.9

.PHONY: install install-test install-bench lock system-deps demo test test-fast ui bench bench-replay clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml $(LOCK)
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[test]'
	touch $@

# Benchmarks: plots, and the US-census data bundled in NannyML's wheel (files only: never imported, so
# none of its dependencies are installed).
$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(PIP_INSTALL) -e '.[test,bench]'
	$(BIN)/pip install --quiet --no-deps nannyml==0.13.1
	touch $@

# The browser test (tests/e2e/test_browser.py) drives Debian's own Chromium through its chromedriver, so
# that Selenium never downloads a browser; CI is a clean Debian machine, hence the apt packages here.
# Skipped when both binaries exist; `apt-get update` only when the package lists do not know them yet
# or are too old (the install of the listed version fails).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends
system-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	if apt-cache show chromium chromium-driver >/dev/null 2>&1 && $(APT_INSTALL) chromium chromium-driver; \
	then exit 0; fi; \
	$(SUDO) apt-get update && $(APT_INSTALL) chromium chromium-driver

install: $(VENV)/.installed
install-test: system-deps $(VENV)/.installed-test
install-bench: $(VENV)/.installed-bench

## lock: re-resolve every dependency of pyproject.toml (runtime, test, bench) into constraints.txt, for any
## platform, keeping each pin that still fits; `make lock LOCK_FLAGS=--upgrade` moves them all to the newest
lock: $(BIN)/python
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml --extra test --extra bench --universal --python-version 3.11 \
		--custom-compile-command "make lock" --quiet $(LOCK_FLAGS) --output-file $(LOCK)

## demo: create .venv, install, play the end-to-end lifecycle on the embedded storage
demo: install
	$(BIN)/retrain demo --home "$(DAGSTER_HOME)"

## test: create/update .venv with test extras and run the whole suite (slow end-to-end tests included), one
## pytest-xdist worker per CPU
test: install-test
	$(BIN)/pytest $(PARALLEL)

## test-fast: the suite without the tests marked slow
test-fast: install-test
	$(BIN)/pytest $(PARALLEL) -m "not slow"

## ui: the Dagster UI (webserver + daemon) on the demo's instance, at http://127.0.0.1:$(UI_PORT)
ui: install
	@mkdir -p "$(DAGSTER_HOME)"
	@[ -f "$(DAGSTER_HOME)/dagster.yaml" ] || cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"
	$(BIN)/dagster dev -h 127.0.0.1 -p $(UI_PORT) -w workspace.yaml

## bench: every benchmark under benchmarks/ (results in benchmarks/RESULTS.md)
bench: install-bench bench-replay
	$(BIN)/python benchmarks/drift_bench.py
	$(BIN)/python benchmarks/retrain_bench.py
	$(BIN)/python benchmarks/decision_bench.py
	$(BIN)/python benchmarks/sensor_bench.py
	$(BIN)/python benchmarks/serve_bench.py

## bench-replay: retraining policies replayed on electricity (and shuffled), census and synthetic data (about 40 min, offline)
bench-replay: install-bench
	$(BIN)/python benchmarks/replay_real.py

clean:
	rm -rf .dagster_home .retrain .pytest_cache
