# All set-up happens here: `make demo` and `make test` create .venv and install the
# pinned dependencies (requirements.lock, torch==2.13.0 CPU) on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.flexsnn-installed
# The CPU torch wheel lies in /opt/wheels on our machines; elsewhere pip uses PyPI.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: install demo demo-deploy test test-fast lint format docs bench bench-env interop-env test-interop clean lock

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

# Everything but the end-to-end tests marked slow (about 4 minutes on 2 cores).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# ruff (lint + format check, config in pyproject.toml) and mypy on src/; `make format` fixes.
LINT_PATHS := src tests benchmarks scripts
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
	$(BENCH_VENV)/bin/python benchmarks/run_all.py --allocator default

# The NIR compatibility suite (tests/interop): two venvs, since Sinabs pins nir<=1.0.4 and
# SpikingJelly needs nir>=1.0.7. Each run writes its cells; render_matrix.py puts them in docs/interop.md.
INTEROP_VENV        ?= .venv-interop
INTEROP_SINABS_VENV ?= .venv-interop-sinabs
INTEROP_RESULTS     := tests/interop/results
interop-env:
	bash tests/interop/setup_env.sh $(INTEROP_VENV) $(INTEROP_SINABS_VENV)

test-interop:
	test -x $(INTEROP_VENV)/bin/python -a -x $(INTEROP_SINABS_VENV)/bin/python \
		|| bash tests/interop/setup_env.sh $(INTEROP_VENV) $(INTEROP_SINABS_VENV)
	FLEXSNN_INTEROP_RESULTS=$(INTEROP_RESULTS)/peers.json \
		$(INTEROP_VENV)/bin/python -m pytest tests/interop -q -p no:cacheprovider
	FLEXSNN_INTEROP_RESULTS=$(INTEROP_RESULTS)/sinabs.json FLEXSNN_INTEROP_WRITER=$(INTEROP_VENV)/bin/python \
		$(INTEROP_SINABS_VENV)/bin/python -m pytest tests/interop tests/test_backends_sinabs.py tests/test_deploy_nir.py \
		-q -p no:cacheprovider
	$(INTEROP_VENV)/bin/python tests/interop/render_matrix.py $(INTEROP_RESULTS)/peers.json $(INTEROP_RESULTS)/sinabs.json

lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable > requirements.lock

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
