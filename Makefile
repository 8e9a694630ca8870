# parcelflow: `make run` shows the whole pipeline working, `make test` proves it.
# Both create the virtualenv and install everything on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install run up chaos scale soak test lint format types unit integration e2e schemas bench bench-labeler bench-receiver bench-planner bench-latency bench-adaptive bench-recovery bench-print docs lock clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml station/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./station
	@touch $@

install: $(STAMP) ## create .venv and install parcelflow with its dev tools

run: $(STAMP) ## start broker, simulator, every worker; send 200 demo orders; print a summary; stop
	$(BIN)/parcelflow run

up: $(STAMP) ## the same as run, but keep everything running until Ctrl-C
	$(BIN)/parcelflow up

chaos: $(STAMP) ## the stack under traffic while workers are killed and stopped and the broker paused (PARCELFLOW_CHAOS_SECONDS, 300)
	$(BIN)/parcelflow chaos

scale: $(STAMP) ## the stack under traffic while each worker is scaled 1 -> 3 -> 1 and killed once; every order and shop checked
	$(BIN)/parcelflow scale

soak: $(STAMP) ## steady traffic for PARCELFLOW_SOAK_MINUTES (30) at PARCELFLOW_SOAK_RATE (20/s); latency and broker every 5 min
	$(BIN)/parcelflow soak

# Three workers, each running whole test modules (their fixtures stay together): the
# tests mostly wait on brokers, processes and timeouts, so this is about three times faster.
test: $(STAMP) lint types ## lint, types, then unit, integration and end-to-end tests
	$(BIN)/pytest -n 3 --dist loadfile --durations=15 tests/unit tests/integration tests/e2e

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

types: $(STAMP) ## mypy, strict on workers/, schemas/ and bench/
	$(BIN)/mypy

unit: $(STAMP) ## the fast tests only (no broker)
	$(BIN)/pytest tests/unit

integration: $(STAMP) ## tests on a real broker
	$(BIN)/pytest tests/integration

e2e: $(STAMP) ## the whole stack as `make run` runs it
	$(BIN)/pytest tests/e2e

schemas: $(STAMP) ## regenerate schemas/json from the models
	$(BIN)/python -m schemas.export

clean: ## remove run output (var/) and caches, keep .venv
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

bench-receiver: $(STAMP) ## receiver: signed webhooks/s with durable writes vs a bare aiohttp handler
	$(BIN)/python -m bench.receiver

bench-planner: $(STAMP) ## planner: join events/s of one Faust worker vs a raw aiokafka pass-through
	$(BIN)/python -m bench.planner

bench-latency: $(STAMP) ## whole pipeline: p50/p95/p99 of box closed -> plan, job, label at 200 boxes/s, then the knee
	$(BIN)/python -m bench.latency

bench-adaptive: $(STAMP) ## labeler: the adaptive limit vs a fixed 64 as capacity goes 24, 8, 48; three replicas; warm vs cold starts
	$(BIN)/python -m bench.adaptive

bench-recovery: $(STAMP) ## planner: what a scale-up and a restart cost, seconds of table restore per 1000 open orders
	$(BIN)/python -m bench.recovery

bench: $(STAMP) ## every benchmark, then one table of the ratios and latency lines
	$(BIN)/python -m bench.all

bench-print: $(STAMP) ## station print agents: boxes closed at 20/s -> labels at a printer, an outage and a restart
	$(BIN)/python -m bench.printing

bench-labeler: $(STAMP) ## labeler: labels/s vs Little's law, and peak RSS vs backlog
	$(BIN)/python -m bench.labeler

lock: $(STAMP) ## pin every dependency of the image, with hashes, in deploy/requirements.lock
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
		--generate-hashes --output-file deploy/requirements.lock pyproject.toml

docs: $(STAMP) ## regenerate the tables of docs/ made from the code (settings, TikTok's codes)
	$(BIN)/parcelflow config --readme docs/configuration.md
	$(BIN)/python -m devstack.docs docs/tiktok.md
