# CAAS developer entry points. `make serve` and `make test` work on a fresh clone:
# they create .venv and install the project (and the test servers) on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The Node tools that validate /asyncapi.json and /openapi.json (tests/e2e/test_contracts.py),
# installed from the committed lockfile on first use
CONTRACTS := tests/e2e/contracts
NODE_STAMP := $(CONTRACTS)/node_modules/.installed
# The TypeScript SDK (sdk/typescript): its dev dependencies from the committed lockfile on first
# use; tests/sdk/test_typescript_sdk.py runs its Node suite against real servers
SDK_TS := sdk/typescript
SDK_TS_STAMP := $(SDK_TS)/node_modules/.installed
# The browser tests (tests/browser): playwright-core and axe-core from the committed lockfile; they drive
# Debian's Chromium (`make tools` installs it)
BROWSER := tests/browser
BROWSER_STAMP := $(BROWSER)/node_modules/.installed
# The SDK's build (dist/), the React kit (ui/react, its build checks the bundle budget) and the demo
# chat (examples/web-chat, served at /demo): each rebuilt when its sources or what it builds on change
SDK_TS_BUILT := $(SDK_TS)/dist/index.js
UI_REACT := ui/react
UI_REACT_STAMP := $(UI_REACT)/node_modules/.installed
UI_REACT_BUILT := $(UI_REACT)/dist/index.js
DEMO := examples/web-chat
DEMO_STAMP := $(DEMO)/node_modules/.installed
DEMO_BUILT := $(DEMO)/dist/index.html
# The tenant portal (ui/console, served at /console): rebuilt when its sources change
CONSOLE := ui/console
CONSOLE_STAMP := $(CONSOLE)/node_modules/.installed
CONSOLE_BUILT := $(CONSOLE)/dist/index.html

.PHONY: serve test lint unit sdk-test bench contracts tools sdk-ts browser-tests ui-react demo console services-up services-down clean

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

# The command-line tools tests run: curl and jq as the quickstart prints them (tests/docs/test_quickstart.py),
# Chromium for the browser tests (tests/browser),
# openssl for the webhook sender's TLS test certificates (tests/webhooks/test_sender.py):
# installed from Debian's packages when missing and we are root, else a clear failure (never a skip)
tools:
	@for t in curl jq openssl chromium; do \
	  command -v $$t >/dev/null && continue; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "$$t not found; installing Debian's $$t package"; \
	    apt-get install -y -q $$t >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q $$t >/dev/null; }; \
	  fi; \
	  command -v $$t >/dev/null || { echo "the tests need $$t on PATH: install it" >&2; exit 1; }; \
	done
	@# an emoji font for the browser tests' screenshots (reactions); optional: nothing fails without it
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! dpkg -s fonts-noto-color-emoji >/dev/null 2>&1; then \
	  apt-get install -y -q fonts-noto-color-emoji >/dev/null 2>&1 || true; fi

$(SDK_TS_STAMP): $(SDK_TS)/package.json $(SDK_TS)/package-lock.json
	cd $(SDK_TS) && npm ci --no-audit --no-fund
	touch $(SDK_TS_STAMP)

sdk-ts: $(SDK_TS_STAMP)

$(BROWSER_STAMP): $(BROWSER)/package.json $(BROWSER)/package-lock.json
	cd $(BROWSER) && npm ci --no-audit --no-fund
	touch $(BROWSER_STAMP)

browser-tests: $(BROWSER_STAMP)

$(SDK_TS_BUILT): $(SDK_TS_STAMP) $(shell find $(SDK_TS)/src -type f) $(SDK_TS)/tsconfig.json
	cd $(SDK_TS) && npm run -s build

$(UI_REACT_STAMP): $(UI_REACT)/package.json $(UI_REACT)/package-lock.json
	cd $(UI_REACT) && npm ci --no-audit --no-fund
	touch $(UI_REACT_STAMP)

$(UI_REACT_BUILT): $(UI_REACT_STAMP) $(SDK_TS_BUILT) $(shell find $(UI_REACT)/src $(UI_REACT)/scripts -type f) $(UI_REACT)/tsconfig.json
	cd $(UI_REACT) && npm run -s build

ui-react: $(UI_REACT_BUILT)

$(DEMO_STAMP): $(DEMO)/package.json $(DEMO)/package-lock.json
	cd $(DEMO) && npm ci --no-audit --no-fund
	touch $(DEMO_STAMP)

$(DEMO_BUILT): $(DEMO_STAMP) $(UI_REACT_BUILT) $(shell find $(DEMO)/src -type f) $(DEMO)/index.html $(DEMO)/vite.config.ts
	cd $(DEMO) && npm run -s build

demo: $(DEMO_BUILT)

$(CONSOLE_STAMP): $(CONSOLE)/package.json $(CONSOLE)/package-lock.json
	cd $(CONSOLE) && npm ci --no-audit --no-fund
	touch $(CONSOLE_STAMP)

$(CONSOLE_BUILT): $(CONSOLE_STAMP) $(shell find $(CONSOLE)/src -type f) $(CONSOLE)/index.html $(CONSOLE)/vite.config.ts $(CONSOLE)/tsconfig.json
	cd $(CONSOLE) && npm run -s build

console: $(CONSOLE_BUILT)

# --demo: the demo chat at http://127.0.0.1:8000/demo/ hands out demo users' tokens (api/ui.py);
# the tenant portal is at http://127.0.0.1:8000/console/ (sign in with a tenant API key)
serve: $(STAMP) $(DEMO_BUILT) $(CONSOLE_BUILT)
	$(BIN)/caas serve --demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict domain commands projections streams adapters api docsite caas
	$(BIN)/mypy --strict sdk/python/caas_client sdk/python/tools

unit: $(STAMP) $(NODE_STAMP) $(SDK_TS_STAMP) $(BROWSER_STAMP) $(DEMO_BUILT) $(CONSOLE_BUILT) tools
	$(BIN)/pytest -q tests --ignore=tests/perf

# the Python SDK's tests only: no Node tools needed (the Kafka variants need the services' env)
sdk-test: $(STAMP)
	$(BIN)/pytest -q tests/sdk --ignore=tests/sdk/test_typescript_sdk.py

test: $(STAMP) $(NODE_STAMP) $(SDK_TS_STAMP) $(BROWSER_STAMP) $(DEMO_BUILT) $(CONSOLE_BUILT) tools
	@if [ -x infra/services ]; then infra/services up --with-jaeger > $(VENV)/services.env && cat $(VENV)/services.env; fi
	$(MAKE) --no-print-directory lint
	# One pass: a test that fails is a failure (a flaky test is fixed at its cause, never rerun).
	set -a; [ -f $(VENV)/services.env ] && . $(VENV)/services.env; set +a; \
	$(BIN)/pytest -q tests --ignore=tests/perf

# The docs site into site/ (offline; --strict: a broken link or anchor fails). Preview: $(BIN)/mkdocs serve
.PHONY: docs  # (docs/ is a folder)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python -m tests.perf.run

services-up:
	infra/services up

services-down:
	infra/services down

clean:
	rm -rf $(VENV) .caas-data $(CONTRACTS)/node_modules $(SDK_TS)/node_modules
	rm -rf $(BROWSER)/node_modules $(BROWSER)/artifacts
	rm -rf $(UI_REACT)/node_modules $(UI_REACT)/dist $(DEMO)/node_modules $(DEMO)/dist
	rm -rf $(CONSOLE)/node_modules $(CONSOLE)/dist
