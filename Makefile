# Every target sets up what it needs: on a fresh machine `make demo` or `make test` is enough.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

# The main job: train on the built-in corpus (no download), then score held-out inputs.
demo: $(VENV)/.installed
	$(BIN)/seq2seq train --data builtin:numbers-en-es --level word --epochs 2 --model-dir runs/numbers-en-es --overwrite --quiet $(DEMO_ARGS)
	$(BIN)/seq2seq evaluate --model-dir runs/numbers-en-es --examples 8

test: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist worksteal

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(VENV)/.installed-dev
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(VENV)/.installed-dev
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/python bench/run.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
