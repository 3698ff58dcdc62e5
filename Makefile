# CAAS developer entry points. `make serve` and `make test` work on a fresh clone:
# they create .venv and install the project (and the test servers) on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The Node tools that validate /asyncapi.json and /openapi.json (tests/e2e/test_contracts.py),
# installed from the committed lockfile on first use
CONTRACTS := tools/contracts
NODE_STAMP := $(CONTRACTS)/node_modules/.installed

.PHONY: serve test lint unit sdk-test bench contracts services-up services-down clean

$(STAMP): pyproject.toml sdk/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet -e sdk/python  # the Python SDK, tested in tests/sdk (no generator needed)
	touch $(STAMP)

$(NODE_STAMP): $(CONTRACTS)/package.json $(CONTRACTS)/package-lock.json
	cd $(CONTRACTS) && npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

contracts: $(NODE_STAMP)

serve: $(STAMP)
	$(BIN)/caas serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict domain commands projections streams adapters api
	$(BIN)/mypy --strict sdk/python/caas_client sdk/python/tools

unit: $(STAMP) $(NODE_STAMP)
	$(BIN)/pytest -q tests --ignore=tests/perf

# the Python SDK's tests only: no Node tools needed (the Kafka variants need the services' env)
sdk-test: $(STAMP)
	$(BIN)/pytest -q tests/sdk

test: $(STAMP) $(NODE_STAMP)
	@if [ -x infra/services ]; then infra/services up > $(VENV)/services.env && cat $(VENV)/services.env; fi
	$(MAKE) --no-print-directory lint
	# One pass: a test that fails is a failure (a flaky test is fixed at its cause, never rerun).
	set -a; [ -f $(VENV)/services.env ] && . $(VENV)/services.env; set +a; \
	$(BIN)/pytest -q tests --ignore=tests/perf

bench: $(STAMP)
	$(BIN)/python -m tests.perf.run

services-up:
	infra/services up

services-down:
	infra/services down

clean:
	rm -rf $(VENV) .caas-data $(CONTRACTS)/node_modules
