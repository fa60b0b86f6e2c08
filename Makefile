# Roost: `make run` starts the product on its embedded defaults; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ROOST_HOME ?= ./roost-data
ROOST_PROTECT ?= $(HOME)

.PHONY: run test check bench venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	ROOST_HOME=$(ROOST_HOME) ROOST_PROTECT=$(ROOST_PROTECT) $(BIN)/python -m roost.cli.launch

test: $(STAMP)
	bash scripts/test-deps.sh
	$(BIN)/pytest -q -p no:cacheprovider

check: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
