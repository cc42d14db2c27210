# All set-up happens here: `make demo` and `make test` create .venv and install the
# pinned dependencies (requirements.lock, torch==2.13.0 CPU) on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.flexsnn-installed
# The CPU torch wheel lies in /opt/wheels on our machines; elsewhere pip uses PyPI.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: install demo demo-deploy test bench bench-env clean lock

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
