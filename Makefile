# kneepain: `make run` and `make test` work on a fresh clone with only Python 3.11 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MPLBACKEND := Agg

.DEFAULT_GOAL := help
.PHONY: help run test lint format bench bytecode data clean

help: ## list the targets
	@grep -E '^[a-zA-Z_.-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

$(VENV): pyproject.toml ## create the virtual environment and install the project (no-op when up to date)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,dask,signing]'
	touch $(VENV)

# pip compiles an installed package's bytecode, not an editable install's: where PYTHONDONTWRITEBYTECODE
# is set, every command would compile the package again (about 0.3 s of each start-up)
bytecode: $(VENV) ## compile the package's bytecode (up-to-date files are skipped)
	$(BIN)/python -m compileall -q pipeline

run: $(VENV) bytecode ## run the whole pipeline (dvc repro) on the embedded defaults and print the summary
	$(BIN)/dvc repro
	$(BIN)/python -m pipeline.report.docs
	$(BIN)/kneepain report

# the suite runs in TEST_WORKERS processes (pytest-xdist), each test module in one of them, so that a
# module's servers and fixtures start once; `make test TEST_WORKERS=0` runs it in this process alone
TEST_WORKERS ?= 2
test: $(VENV) bytecode ## run the test suite
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope

lint: $(VENV) ## ruff, mypy and the import contracts (what CI runs before the tests)
	$(BIN)/ruff check pipeline tests benchmarks notebooks/make_quickstart.py
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(VENV) ## apply ruff's safe fixes (imports sorted, unused ones removed)
	$(BIN)/ruff check --fix pipeline tests benchmarks notebooks/make_quickstart.py

bench: $(VENV) bytecode ## run the benchmarks and print a table
	$(BIN)/python -m benchmarks

data: $(VENV) ## generate the synthetic splits only
	$(BIN)/kneepain generate

clean: ## remove generated data, models and reports (keeps the venv)
	rm -rf data/synthetic/*.parquet data/synthetic/manifest.json models/* reports/* mlruns mlartifacts mlflow.db
