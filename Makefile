# Single entry point. `make run` and `make test` install everything they need first.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
PYTHON ?= $(shell command -v python3.11 || command -v python3)
# make run EXECUTOR=celery WORKERS=2: CeleryExecutor on this machine's PostgreSQL and Redis
EXECUTOR ?= local
WORKERS ?= 2

.PHONY: help run test test-celery stop status install system-tools venv lint typecheck validate

help:
	@echo "make run      install everything, start the local stack, run a full compose"
	@echo "              (EXECUTOR=celery [WORKERS=2]: CeleryExecutor on this machine's PostgreSQL and Redis)"
	@echo "make test     install everything and run the test suite"
	@echo "make stop     stop the local stack"
	@echo "make status   show the local stack's settings and services"
	@echo "make validate check the release profiles"
	@echo "make lint     ruff and mypy"

install: system-tools venv

system-tools:
	@scripts/install-system-tools.sh --with-test-extras

venv: $(VENV)/.installed

# Reinstall when the pins change; plugins/ goes on the venv's path so `$(PY) -m releng` works.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found %d.%d)" % sys.version_info[:2])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -c 'import site, sys; open(site.getsitepackages()[0] + "/releng-checkout.pth", "w").write(sys.argv[1] + "\n")' "$(CURDIR)/plugins"
	@touch $@

run: install
	@$(PY) -m dev.stack status >/dev/null 2>&1 || $(PY) -m dev.stack start --executor $(EXECUTOR) --workers $(WORKERS)
	$(PY) -m dev.stack compose
	@$(PY) -m dev.stack status

stop:
	@test -x $(PY) && $(PY) -m dev.stack stop || true

status:
	$(PY) -m dev.stack status

test: install
	$(VENV)/bin/pytest

# Only the Celery end-to-end test (part of `make test`): the three DAGs on the local Celery stack, two workers,
# this machine's PostgreSQL and Redis, after the LocalExecutor compose it compares with.
test-celery: install
	$(VENV)/bin/pytest tests/e2e/test_full_compose.py::test_full_compose_two_arches tests/e2e/test_stack_celery.py

validate: venv
	$(PY) -m releng validate config/releases

lint: venv
	$(VENV)/bin/ruff check plugins dags dev tests bench
	$(VENV)/bin/mypy

typecheck: venv
	$(VENV)/bin/mypy
