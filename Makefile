# One-line targets; `make demo` and `make test` each set up first, so each is one command on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint bench zoo data
setup: $(STAMP)
	@sh scripts/get-data.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	sh scripts/demo.sh

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check robench tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_engine.py

zoo: setup
	$(BIN)/robench zoo build
