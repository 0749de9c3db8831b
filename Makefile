# Kiln: every target installs what it needs into .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*?## "} /^[a-zA-Z_-]+:.*?## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet 'torch==2.13.0'
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install Kiln with its dev tools

.PHONY: crds
crds: $(STAMP) ## Regenerate crds/ and the chart's charts/kiln/crds/ from the pydantic models in kiln.api
	$(BIN)/kiln crds --output-dir crds
	$(BIN)/kiln crds --output-dir charts/kiln/crds

.PHONY: manifests
manifests: $(STAMP) ## Render manifests/install.yaml from charts/kiln with default values (the real Helm engine)
	$(BIN)/python tests/chart/chartgen.py manifests

.PHONY: protos
protos: $(STAMP) ## Re-extract the Kubernetes protobuf definitions the dev cluster decodes kubectl's bodies with, from the newest kubectl
	$(BIN)/python -m kiln.devcluster.protodefs $$(ls $$(dirname $$(readlink -f $$(command -v kubectl)))/kubectl* | sort -V | tail -1)

.PHONY: chart-docs
chart-docs: $(STAMP) ## Regenerate the values table of charts/kiln/README.md from the comments in values.yaml
	$(BIN)/python tests/chart/chartgen.py docs

.PHONY: lint
lint: $(STAMP) ## ruff, mypy (strict), import-linter, and checks that crds/, the chart and manifests/ are not stale
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/kiln crds --output-dir crds --check
	$(BIN)/kiln crds --output-dir charts/kiln/crds --check
	$(BIN)/python tests/chart/chartgen.py manifests --check
	$(BIN)/python tests/chart/chartgen.py docs --check
	$(BIN)/hadolint operator/images/*.Dockerfile

.PHONY: format
format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix operator tests
	$(BIN)/ruff format operator tests

DEMO_DIR ?= $(CURDIR)/.demo
DEMO_STAMP := $(VENV)/.demo-installed

# The demo needs Kiln and not its dev tools or torch; a full `make install` serves it as well.
$(DEMO_STAMP): pyproject.toml
	@if [ ! $(STAMP) -nt pyproject.toml ]; then \
		$(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet --upgrade pip && $(BIN)/pip install --quiet -e .; \
	fi
	@touch $@

.PHONY: demo
demo: $(DEMO_STAMP) ## The whole ML lifecycle live on a dev cluster, in about 3 minutes (KEEP=1 leaves it running)
	@$(BIN)/python -m kiln.demo --data-dir $(DEMO_DIR) $(if $(filter-out 0,$(KEEP)),--keep)

.PHONY: demo-down
demo-down: $(DEMO_STAMP) ## Stop a demo kept running with `make demo KEEP=1`
	@$(BIN)/python -m kiln.demo down --data-dir $(DEMO_DIR)

.PHONY: tools
tools: ## Install the system tools the tests drive (kubectl, prometheus) where they are missing
	@missing=""; \
	command -v kubectl >/dev/null || missing="$$missing kubernetes-client"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

.PHONY: test
test: $(STAMP) tools ## Run the whole test suite
	$(BIN)/pytest tests

.PHONY: unit
unit: $(STAMP) ## Run the unit tests only
	$(BIN)/pytest tests/unit

.PHONY: bench
bench: $(STAMP) ## Run the benchmarks (not part of make test)
	@set -e; for bench in tests/benchmarks/bench_*.py; do echo "--- $$bench"; $(BIN)/python $$bench; done

.PHONY: clean
clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
