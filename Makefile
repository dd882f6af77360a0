# Two entry points: `make demo` and `make test`. Both build .venv on first use; the demo
# installs only what auditor needs, the tests add the dev extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# -qq: pip's own notices (and warnings about a machine's pip config) stay out of the demo.
PIP := $(BIN)/pip install -qq --disable-pip-version-check

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[dev]'
	@touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	@$(BIN)/auditor demo --dir demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check auditor tests bench scripts
	$(BIN)/ruff format --check auditor tests bench scripts
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: $(VENV)/.installed-dev
	$(PIP) -e '.[dev,bench]'
	$(BIN)/python bench/run.py --scale 1

clean:
	rm -rf $(VENV) demo .pytest_cache
