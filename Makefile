# leukoloop: two commands for people (`make run`, `make test`); the rest are their steps.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
HOST ?= 127.0.0.1
PORT ?= 8000
DATA ?=
# Tests keep their database, broker folders and media apart from the ones `make run` uses.
TEST_VAR := $(CURDIR)/var/test
PG_URL ?= postgres://postgres@127.0.0.1:5432/leukoloop
# With DEBUG off the settings refuse to load without a secret key: unless DJANGO_SECRET_KEY is set, `make run`
# and `make serve` keep a random one here (config/env.py reads it), made once, readable by its owner only.
VAR_DIR := $(or $(LEUKOLOOP_VAR_DIR),$(CURDIR)/var)
SECRET_KEY_FILE := $(VAR_DIR)/secret-key
REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: run serve test install lint jstest pytest migrate worker clean bench-import browser

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the dependency list changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Browser tests drive Debian's chromium through Playwright (no browser download).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver

browser: $(CHROMIUM)

# The labelling page's JS unit tests run on Debian's nodejs with Node's own test runner (no npm packages).
NODE := $(shell command -v node 2>/dev/null || echo /usr/bin/node)
$(NODE):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs

## make jstest: unit tests of static/js (tests/js/*.test.mjs)
jstest: $(NODE)
	$(NODE) --test --test-reporter=spec tests/js/*.test.mjs

$(SECRET_KEY_FILE): | $(VENV)/.installed
	@mkdir -p $(@D)
	@umask 077 && $(PY) -c "import secrets; print(secrets.token_urlsafe(50))" > $@.tmp && mv $@.tmp $@

migrate: install $(SECRET_KEY_FILE)
	$(PY) manage.py migrate --no-input

## make run [DATA=folder|manifest.csv|zip]: the platform on an embedded default (SQLite, filesystem broker)
# The web server it starts beside the workers, and whether it makes the demo: `make serve` swaps in gunicorn
# and leaves the demo out.
WEB_SERVER ?= $(PY) manage.py runserver $(HOST):$(PORT) --noreload
DEMO ?= 1
run: migrate
	$(if $(DEMO),$(PY) manage.py bootstrap_demo $(if $(DATA),--data "$(DATA)"))
	@echo "starting three workers and the web server; open http://$(HOST):$(PORT)/ (Ctrl-C stops all)"
	@$(BIN)/celery -A config worker -B -n loop@%h --queues=celery --loglevel=INFO --concurrency=1 --pool=solo \
	  > var/worker.log 2>&1 & worker=$$!; \
	  $(BIN)/celery -A config worker -n train@%h --queues=train --loglevel=INFO --concurrency=1 --pool=solo \
	  > var/worker-train.log 2>&1 & train=$$!; \
	  $(BIN)/celery -A config worker -n side@%h --queues=side --loglevel=INFO --concurrency=1 --pool=solo \
	  > var/worker-side.log 2>&1 & side=$$!; \
	  trap "kill $$worker $$train $$side 2>/dev/null" EXIT INT TERM; \
	  echo "workers: loop pid $$worker (var/worker.log), pretraining and indexing pid $$train" \
	    "(var/worker-train.log), exports and maps pid $$side (var/worker-side.log)"; \
	  $(WEB_SERVER)

## make serve: production serving (README "Production"): gunicorn on PostgreSQL + Redis (DATABASE_URL,
## CELERY_BROKER_URL and LEUKOLOOP_CACHE_URL, defaults below), static files collected into var/static and
## served by WhiteNoise, and the three workers of `make run`. No demo project.
WEB_WORKERS ?= 3
WEB_THREADS ?= 4
CACHE_URL ?= redis://127.0.0.1:6379/1
GUNICORN = $(BIN)/gunicorn config.wsgi --bind $(HOST):$(PORT) --workers $(WEB_WORKERS) --threads $(WEB_THREADS) \
  --access-logfile - --logger-class config.gunicorn_log.QuietPollGunicornLogger --graceful-timeout 30 \
  --no-control-socket
serve: install $(SECRET_KEY_FILE)
	@export DATABASE_URL="$${DATABASE_URL:-$(PG_URL)}" CELERY_BROKER_URL="$${CELERY_BROKER_URL:-$(REDIS_URL)}" \
	  LEUKOLOOP_CACHE_URL="$${LEUKOLOOP_CACHE_URL:-$(CACHE_URL)}" \
	  DATABASE_CONN_MAX_AGE="$${DATABASE_CONN_MAX_AGE:-60}" LEUKOLOOP_COLLECTSTATIC=1; \
	  $(PY) manage.py collectstatic --no-input --verbosity 0 && \
	  $(MAKE) --no-print-directory run DEMO= WEB_SERVER='$(GUNICORN)'

## make worker: one more worker for every queue (QUEUES=celery for the loop's retrains and batches only,
## QUEUES=train for pretraining, fine-tuning and indexing, QUEUES=side for exports and maps)
QUEUES ?= celery,train,side
worker: install $(SECRET_KEY_FILE)
	$(BIN)/celery -A config worker --queues=$(QUEUES) --loglevel=INFO --concurrency=1 --pool=solo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

## make test: install everything, lint, run the suite. With CI=true the suite runs on PostgreSQL + Redis,
## and the worker and migration tests run a second time on the embedded default (SQLite + filesystem broker).
test: install browser lint jstest
ifeq ($(CI),true)
	LEUKOLOOP_VAR_DIR=$(TEST_VAR) LEUKOLOOP_TEST_MODE=services DATABASE_URL=$(PG_URL) \
	  CELERY_BROKER_URL=$(REDIS_URL) $(BIN)/pytest
	LEUKOLOOP_VAR_DIR=$(TEST_VAR)/embedded LEUKOLOOP_TEST_MODE=embedded $(BIN)/pytest -m 'worker or migration'
else
	LEUKOLOOP_VAR_DIR=$(TEST_VAR) $(BIN)/pytest
endif

bench-import: install
	$(PY) bench/import_speed.py --data ../shared/data/leukocytes/manifest.csv

clean:
	rm -rf var
