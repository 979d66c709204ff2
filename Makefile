# Fresh machine: `make run` (set up, process the bundled sample logs, print a summary) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
UV_VERSION := 0.13.9
# Four workers on two cores: the suite waits on servers, browsers and subprocesses as much as it
# computes (measured: 8.7 min on 2 workers, 7.1 on 4). A test module runs on one worker
# (--dist loadfile), so its module-wide server or Dagster instance is made once.
PYTEST_WORKERS ?= 4
DEV_PORT ?= 3000
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# Every Dagster process make starts (the daemon and webserver of `make dev` create runs, and store
# their per-minute-file "planned" events) writes a range's events in batches (README, Operating it).
export DAGSTER_EVENT_BATCH_SIZE ?= 1000
# Paths as every process make starts sees them, whatever its working folder (`make dev` runs in the
# Dagster home: the project's dagster.yaml, which the home's is made from, is not a second instance).
export JAM_EXPORT_DIR ?= $(CURDIR)/dune_exports
ifdef JAM_LOG_DIR
export JAM_LOG_DIR := $(abspath $(JAM_LOG_DIR))
endif

.PHONY: setup lock run test test-fast test-upgrade lint format dev receive home bench bench-quick soak peers clean

# The versions CI tested: uv installs exactly what uv.lock pins (`make lock` updates it).
$(STAMP): pyproject.toml uv.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(VENV)/bin/uv sync --quiet --frozen --extra dev --inexact --active
	@touch $(STAMP)

setup: $(STAMP)

lock: setup
	$(VENV)/bin/uv lock --python 3.11

# The real peers the tests run against: PostgreSQL, bqemulator (its own venv), Chromium, syslog-ng.
peers:
	@scripts/ensure-postgres
	@scripts/ensure-bqemulator >/dev/null
	@if [ -x scripts/ensure-chromium ]; then scripts/ensure-chromium; fi
	@if [ -x scripts/ensure-syslog-ng ]; then scripts/ensure-syslog-ng; fi

home: setup
	@$(PY) -m jam_assets.home "$(DAGSTER_HOME)" >/dev/null

run: setup home
	$(VENV)/bin/jam-etl run

# Everything, on $(PYTEST_WORKERS) processes (about 7 minutes on 2 cores; the aim is 5).
test: setup peers
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile

# The core, the checks' logic, the sensor's planning: no servers, no subprocesses (under a minute).
test-fast: setup
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow"

# The suite on the newest 1.13 Dagster core, in a venv of its own (see pyproject.toml).
test-upgrade: setup peers
	scripts/test-upgrade

lint: setup
	$(VENV)/bin/ruff check jam_assets jam_assets_tests bench scripts
	$(VENV)/bin/ruff format --check jam_assets jam_assets_tests bench
	$(VENV)/bin/pyright

format: setup
	$(VENV)/bin/ruff check --fix jam_assets jam_assets_tests bench
	$(VENV)/bin/ruff format jam_assets jam_assets_tests bench

# `JAM_RECEIVE=1 make dev`: the receiver (`jam-etl receive`, writing into JAM_LOG_DIR) starts first, in the
# background of the same shell, and gets SIGTERM (it drains, fsyncs and exits) when dagster dev exits.
RECEIVE_BESIDE = $(VENV)/bin/jam-etl receive & rx=$$!; \
	trap 'kill -TERM $$rx 2>/dev/null; wait $$rx' EXIT; trap 'exit 130' INT TERM; \
	sleep 1; kill -0 $$rx 2>/dev/null || exit 2;

# Started in the Dagster home, where dagster dev finds no other dagster.yaml to warn about.
dev: setup home
	$(if $(filter 1,$(JAM_RECEIVE)),$(RECEIVE_BESIDE)) cd "$(DAGSTER_HOME)" && "$(CURDIR)/$(VENV)/bin/dagster" dev -w "$(CURDIR)/workspace.yaml" -h 127.0.0.1 -p $(DEV_PORT)

# The telemetry receiver alone (README, The receiver): syslog TCP 5000, HTTP 5080, WebSocket 5081 into
# JAM_LOG_DIR (required), until Ctrl-C or SIGTERM.
receive: setup
	$(VENV)/bin/jam-etl receive

bench: setup
	$(PY) bench/run.py
	@scripts/ensure-syslog-ng
	$(PY) bench/receiver_bench.py

# A full-size network live for an hour under `make dev`'s processes (not part of `make bench`):
# toaster minute files written in real time; prints latency, memory and rejected lines.
soak: setup
	$(PY) bench/scale.py soak $(or $(SOAK_MINUTES),60)

bench-quick: setup
	$(PY) bench/run.py --quick
	@scripts/ensure-syslog-ng
	$(PY) bench/receiver_bench.py --quick

clean:
	rm -rf $(VENV) .venv-bqemu .dagster_home dune_exports .pytest_cache
