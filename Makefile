# Fresh machine: `make run` (set up, process the bundled sample logs, print a summary) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: setup run test dev home bench bench-quick clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

home: setup
	@$(PY) -m jam_assets.home "$(DAGSTER_HOME)" >/dev/null

run: setup home
	$(VENV)/bin/jam-etl run

test: setup
	@scripts/ensure-postgres
	$(PY) -m pytest

dev: setup home
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: setup
	$(PY) bench/run.py

bench-quick: setup
	$(PY) bench/run.py --quick

clean:
	rm -rf $(VENV) .dagster_home dune_exports .pytest_cache
