# Taskyard: `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3
LISTEN ?= 127.0.0.1:50051
HTTP_LISTEN ?= 127.0.0.1:50080
DB ?= taskyard.db
LOG_LEVEL ?= INFO

.DEFAULT_GOAL := help
.PHONY: help venv proto proto-check lint test test-sqlite-stock test-node deps-floor chaos fuzz bench bench-dashboard bench-peers profile screenshots run demo clean node system-tools

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

venv: $(STAMP) ## Create .venv with pinned dependencies

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[broker,dev]'
	touch $(STAMP)

node_modules/.stamp: package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

node: node_modules/.stamp

# *_connect.py (the HTTP/JSON side, broker/http) come from the same protos, with the
# google.protobuf message classes the gRPC side uses.
proto: venv ## Regenerate taskyard/v1 from protos/ (gRPC, typing stubs, Connect)
	$(PY) -m grpc_tools.protoc -Iprotos \
	  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. \
	  --connectrpc_out=. --connectrpc_opt=protobuf=google \
	  --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy \
	  --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc \
	  --plugin=protoc-gen-connectrpc=$(VENV)/bin/protoc-gen-connectrpc \
	  protos/taskyard/v1/*.proto

lint: venv node ## ruff, mypy --strict, import layers (lint-imports), buf lint/format/breaking
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-logo
	npx buf lint
	npx buf format -d --exit-code
	@if git rev-parse --verify -q main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then \
	  npx buf breaking --against '.git#branch=main'; else echo "buf breaking: no main to compare"; fi

NODE_EXAMPLES := examples/node-worker examples/node-client

# npm ci only when node_modules is missing or older than the package files.
%/node_modules/.stamp: %/package.json %/package-lock.json
	cd $* && npm ci --silent --no-audit --no-fund
	touch $@

# The dashboard's browser tests (tests/web) drive Debian's chromium through Playwright
# (never `playwright install`); tests/deploy runs promtool from Debian's prometheus package.
SYSTEM_TOOLS := /usr/bin/chromium:chromium /usr/bin/promtool:prometheus

system-tools: ## Install Debian's chromium and prometheus (promtool) when missing
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  [ -x "$${pair%%:*}" ] || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "installing$$missing with apt-get"; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; fi

test: venv system-tools $(NODE_EXAMPLES:%=%/node_modules/.stamp) ## Run the test suite (real broker and worker processes), then test-sqlite-stock and test-node
	$(PY) -m pytest -m "not bench and not chaos" $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-sqlite-stock
	$(MAKE) --no-print-directory test-node

# The SQLite fast path falls back to SQLAlchemy's stock aiosqlite dialect when its
# start-up self-check fails (broker/store/sqlite_driver.py); this keeps the fallback correct.
test-sqlite-stock: venv ## The store and end-to-end SQLite tests again, on the stock aiosqlite dialect
	TASKYARD_SQLITE_DRIVER=stock $(PY) -m pytest -m "not bench and not chaos and not slow" \
	  -k sqlite tests/store tests/e2e $(PYTEST_ARGS)

test-node: venv $(NODE_EXAMPLES:%=%/node_modules/.stamp) ## Run the Node.js worker and client examples' own tests
	cd examples/node-worker && npm test
	cd examples/node-client && npm test

FLOOR_VENV ?= /tmp/taskyard-deps-floor
# The fast path's own tests (self_check, fallback) hold on the locked versions only.
FLOOR_TESTS ?= tests/unit tests/store tests/e2e/test_round_trip.py tests/e2e/test_cli.py tests/telemetry
FLOOR_TOOLS := $(shell grep -E '^(pytest|pytest-asyncio|pytest-timeout|hypothesis|cryptography)==' requirements.lock)

deps-floor: venv ## Install every dependency at its pyproject.toml floor in a scratch venv, import, smoke-test (~3 min)
	rm -rf $(FLOOR_VENV)
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(PY) .ci/floors.py > $(FLOOR_VENV)/floors.txt
	$(FLOOR_VENV)/bin/pip install -q -c $(FLOOR_VENV)/floors.txt '.[broker]' $(FLOOR_TOOLS)
	$(FLOOR_VENV)/bin/python .ci/floors.py report
	cd / && $(FLOOR_VENV)/bin/python -c 'import logging; logging.basicConfig(); \
	  import broker.app, broker.cli, worker_sdk; from broker.store import sqlite_driver as d; \
	  print("SQLite driver at the floors:", d.driver())'
	TASKYARD_SQLITE_DRIVER=stock $(FLOOR_VENV)/bin/python -m pytest -p no:cacheprovider -q \
	  -m "not bench and not chaos and not slow" -k "not self_check and not fallback" $(FLOOR_TESTS)

chaos: venv ## Kill brokers and workers under load; check nothing acknowledged is lost
	$(PY) -m pytest -m chaos -s $(PYTEST_ARGS)

FUZZ_EXAMPLES ?= 2000
fuzz: venv ## Fuzz a running broker with random seeds, FUZZ_EXAMPLES per property (~15 min; not in CI)
	TASKYARD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/security/test_fuzz.py \
	  -o timeout=0 -p no:cacheprovider -q $(PYTEST_ARGS)
	@echo "Keep every input a failure printed as an @example in tests/security/test_fuzz.py."

bench: venv ## Run the benchmarks (median of several runs)
	$(PY) -m bench $(BENCH_ARGS)

screenshots: venv system-tools ## Renew the dashboard's pictures in docs/img (a broker, workers and Chromium)
	$(PY) -m tests.web.screenshots docs/img

DASHBOARD_TASKS ?= 1000000
bench-dashboard: venv system-tools ## Time the dashboard's overview and first tasks page with DASHBOARD_TASKS stored (both backends)
	$(PY) -m bench.dashboard --tasks $(DASHBOARD_TASKS) $(BENCH_ARGS)

# The peers (huey, procrastinate, dramatiq, Celery) live in their own virtualenv with
# Taskyard, never in .venv; pinned in bench/peers/requirements.txt. Not part of make test.
PEERS_VENV ?= .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed-stamp
LIMITS ?= ../shared/tools/limits/grpc_batch.py

$(PEERS_STAMP): pyproject.toml requirements.lock bench/peers/requirements.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install -q -c requirements.lock \
	  -r bench/peers/requirements.txt -e '.[broker]'
	touch $@

bench-peers: $(PEERS_STAMP) ## Taskyard beside huey, procrastinate, dramatiq and Celery on one workload (~15 min; PEERS_ARGS=--help)
	$(PEERS_VENV)/bin/python -m bench.peers --limits-script '$(LIMITS)' $(PEERS_ARGS)

profile: venv ## py-spy flame graphs of the broker and a worker under the end-to-end load; top frames by self time
	$(PY) -m bench.profile $(PROFILE_ARGS)

# `taskyard dev` starts the broker, waits for its health check, starts the worker, prints a
# banner, and on Ctrl-C stops the worker, then the broker, and exits 0 (broker/cli/dev.py).
run: venv ## Start a broker (SQLite: ./taskyard.db; HTTP on 127.0.0.1:50080) and the demo worker; Ctrl-C stops both
	@$(VENV)/bin/taskyard dev --listen '$(LISTEN)' --http-listen '$(HTTP_LISTEN)' --db '$(DB)' \
	  --log-level '$(LOG_LEVEL)' \
	  --worker examples.demo_worker:worker

demo: venv ## A self-contained tour: broker, worker, a few tasks with progress
	$(PY) -m examples.demo

clean: ## Remove the virtualenv, caches and the default database
	rm -rf $(VENV) $(PEERS_VENV) node_modules .mypy_cache .ruff_cache .pytest_cache .import_linter_cache taskyard.db*
