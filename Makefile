# Two commands on a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= data
export GEOCONCEPT_DATA_ROOT ?= $(abspath $(DATA))
# Offline by default: no hub downloads at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-fast bench ui lint rebuild readme-results clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt requirements-data.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (geoconcept needs Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-data.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pipelines.demo --data-root $(GEOCONCEPT_DATA_ROOT)

test: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadgroup

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# `dg dev` loads the code location named in pyproject.toml's [tool.dg]; `dagster dev -w workspace.yaml`
# loads the same one. VIRTUAL_ENV tells dg that the project's venv is the one to run it in.
ui: $(STAMP)
	DAGSTER_HOME=$${DAGSTER_HOME:-$(GEOCONCEPT_DATA_ROOT)/dagster_home} ; mkdir -p $$DAGSTER_HOME ; \
	DAGSTER_HOME=$$DAGSTER_HOME VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/dg dev -h 127.0.0.1 -p $${PORT:-3000}

# make rebuild RAW=path/to/raw NEW=path/to/fresh/data-root [IMAGES=...] [RUN_CONFIG=jobs.yaml]
rebuild: $(STAMP)
	@test -n "$(RAW)" -a -n "$(NEW)" || { echo "usage: make rebuild RAW=<raw folder> NEW=<fresh data root> [IMAGES=...] [RUN_CONFIG=...]"; exit 2; }
	$(BIN)/python -m pipelines.rebuild --raw-dir $(RAW) --data-root $(NEW) $(if $(IMAGES),--images $(IMAGES)) $(if $(RUN_CONFIG),--run-config $(RUN_CONFIG))

# After `make demo`: put its real tables and figures into README.md (between the demo-results markers).
readme-results: $(STAMP)
	$(BIN)/python -m pipelines.readme_results --data-root $(GEOCONCEPT_DATA_ROOT)

lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .

clean:
	rm -rf $(DATA) .pytest_cache benchmarks/results
