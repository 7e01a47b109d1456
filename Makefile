# llama-mapper — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
BUF_VERSION := 1.75.0
BUF := $(VENV)/buf/node_modules/.bin/buf
# The stamp changes whenever the dependency spec does, so `make setup` is a no-op when nothing changed.
STAMP := $(VENV)/.setup-$(shell cat pyproject.toml setup.py scripts/setup.sh 2>/dev/null | sha256sum | cut -c1-16)

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: setup
setup: $(STAMP) ## Create .venv at the repo root with every extra and dev tool (idempotent)

$(STAMP): pyproject.toml setup.py scripts/setup.sh
	@PYTHON=$(PYTHON) VENV=$(VENV) BUF_VERSION=$(BUF_VERSION) bash scripts/setup.sh
	@rm -f $(VENV)/.setup-* && touch $@

.PHONY: proto
proto: setup ## Regenerate the gRPC code in services/llama_mapper/_proto from proto/
	@$(PY) scripts/gen_proto.py

.PHONY: lint
lint: setup ## ruff, ruff format --check, the layer contract, no unsafe loads, buf lint, generated-code freshness, deploy manifests
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(PY) scripts/check_unsafe_loads.py
	@set -o pipefail; $(BIN)/lint-imports --no-cache --no-logo | grep -E "KEPT|BROKEN|not allowed|^- "
	@$(BUF) lint proto
	@$(PY) scripts/gen_proto.py --check
	@$(BIN)/mapperctl taxonomy validate >/dev/null
	@set -o pipefail; bash scripts/lint_deploy.sh | grep -v "^ok "

.PHONY: format
format: setup ## Apply ruff's fixes and formatting
	@$(BIN)/ruff check --fix .
	@$(BIN)/ruff format .

.PHONY: test
test: lint ## Lint, then run every test (unit and integration)
	@$(BIN)/pytest -q tests

.PHONY: unit
unit: setup ## Run the fast unit tests only (tests/unit: no servers)
	@$(BIN)/pytest -q

.PHONY: hostile
hostile: setup ## Run the hostile-input suite (also part of `make test`) and print its figures
	@$(BIN)/pytest -q tests/unit/hostile

.PHONY: demo
demo: setup ## Run the main job end to end on embedded defaults
	@$(BIN)/mapperctl demo $(if $(QUICK),--quick,)

.PHONY: clean
clean: ## Remove caches (keeps .venv)
	@rm -rf .pytest_cache .ruff_cache build dist *.egg-info

.PHONY: up
up: setup ## Start the local stack: validation, registry, evaluation gRPC services and a Ray head
	@$(BIN)/mapperctl stack up

.PHONY: down
down: ## Stop everything `make up` started
	@[ -x $(BIN)/mapperctl ] && $(BIN)/mapperctl stack down || true

.PHONY: status
status: ## Show what the local stack is running
	@$(BIN)/mapperctl stack status

.PHONY: bench
bench: setup ## Locust bench (standard profile) of the local stack against the champion's cpu-2core targets
	@$(BIN)/mapperctl bench run --model mapper --alias champion --profile cpu-2core --shape standard --host http://127.0.0.1:8000
