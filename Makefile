# Lumora OTA — every target sets up what it needs on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: run test test-s3 lint typecheck check bench install dev system-deps services clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev-installed

## Serve on 127.0.0.1:3002 with the embedded default (SQLite + files under ./.lumora).
run: install
	$(VENV)/bin/lumora serve

system-deps:
	bash scripts/ensure-system-deps.sh

services:
	bash scripts/ensure-postgres.sh

lint: dev
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples

typecheck: dev
	$(VENV)/bin/mypy src

## Install everything the tests need, then lint, type-check and run the whole suite on
## SQLite and PostgreSQL, and the foundation and delivery suites again on S3 (SeaweedFS).
test: dev system-deps services lint typecheck
	$(VENV)/bin/pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-s3

S3_SUITES := tests/test_mgmt_*.py tests/test_device_*.py tests/test_delta_e2e.py

## The foundation and delivery suites with every test server on SeaweedFS instead of files.
test-s3: dev services
	LUMORA_TEST_STORAGE=s3 LUMORA_TEST_BACKENDS=$${LUMORA_TEST_BACKENDS:-postgres} \
		$(VENV)/bin/pytest $(PYTEST_ARGS) $(S3_SUITES)

bench: dev system-deps services
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .lumora .pytest_cache .mypy_cache .ruff_cache test-artifacts
