# Quick start: `make audit` (set up and run the main job, suites/full.yaml), `make test` (run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUITE ?= suites/full.yaml
CONSTRAINTS ?= constraints.txt
PIP_CONSTRAINT_ARG := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
STAMP := $(VENV)/.installed

MUTANTS ?= 200
MUTATION_SEED ?= 0

.PHONY: setup audit test test-fast lint mutation clean

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
	$(BIN)/ruff check audit tests benchmarks tools

# Mutation testing (mutmut) of audit/metrics, audit/explainers and audit/report on a seeded
# random sample of MUTANTS mutants (MUTANTS=all for every one: hours on 2 cores); prints the
# kill rate and the survivors. Not part of `make test`. Config: [tool.mutmut] in pyproject.toml.
mutation: setup
	rm -rf mutants
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python tools/mutation.py $(if $(filter all,$(MUTANTS)),--all,--sample $(MUTANTS)) --seed $(MUTATION_SEED)

clean:
	rm -rf $(VENV) reports .pytest_cache build *.egg-info mutants
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
