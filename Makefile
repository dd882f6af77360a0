# Two entry points: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/auditor: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

demo: $(BIN)/auditor
	$(BIN)/auditor demo --dir demo

lint: $(BIN)/auditor
	$(BIN)/ruff check auditor tests bench
	$(BIN)/ruff format --check auditor tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: $(BIN)/auditor
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/run.py --scale 1

clean:
	rm -rf $(VENV) demo .pytest_cache
