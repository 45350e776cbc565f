# Quick start: `make audit` (set up and run the smoke suite), `make test` (run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUITE ?= suites/smoke.yaml
CONSTRAINTS ?= constraints.txt
PIP_CONSTRAINT_ARG := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
STAMP := $(VENV)/.installed

.PHONY: setup audit test test-fast lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(PIP_CONSTRAINT_ARG) -e '.[dev,ray,real]'
	touch $(STAMP)

audit: setup
	$(BIN)/explain-audit run $(SUITE)

test: setup
	$(BIN)/python -m pytest -q --durations=15

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check audit tests benchmarks

clean:
	rm -rf $(VENV) reports .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
