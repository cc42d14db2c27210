# All set-up happens here: `make demo` and `make test` create .venv and install the
# pinned dependencies (requirements.lock, torch==2.13.0 CPU) on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.flexsnn-installed
# The CPU torch wheel lies in /opt/wheels on our machines; elsewhere pip uses PyPI.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: install demo demo-deploy test test-fast lint format docs bench bench-env clean lock

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(FIND_LINKS) -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/flexsnn demo --out runs/demo --overwrite

demo-deploy: $(STAMP)
	$(BIN)/flexsnn demo --out runs/demo --overwrite --deploy

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Everything but the end-to-end tests marked slow (about a minute on 2 cores).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# ruff (lint + format check, config in pyproject.toml) and mypy on src/; `make format` fixes.
LINT_PATHS := src tests benchmarks
lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

# API reference (HTML) from the docstrings, in build/api/index.html
API_MODULES := flexsnn flexsnn.neurons flexsnn.temporal flexsnn.staged flexsnn.models flexsnn.data flexsnn.train \
	flexsnn.evaluate flexsnn.deploy flexsnn.inference flexsnn.runs flexsnn.errors flexsnn.runtime flexsnn.multistep flexsnn.io
docs: $(STAMP)
	$(BIN)/python -m pdoc $(API_MODULES) -o build/api --docformat google

# Peers (snnTorch, SpikingJelly, Norse, Sinabs) live in their own venv: never runtime deps.
BENCH_VENV ?= .venv-bench
bench-env:
	bash benchmarks/setup_env.sh $(BENCH_VENV)

bench:
	test -x $(BENCH_VENV)/bin/python || bash benchmarks/setup_env.sh $(BENCH_VENV)
	$(BENCH_VENV)/bin/python benchmarks/run_all.py

lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable > requirements.lock

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
