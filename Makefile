# The README's two commands: `make demo` (main job end to end) and
# `make test` (install and run the test suite). Both set everything up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PRESET ?= demo

.PHONY: demo test install lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel "setuptools>=64"

# constraints.txt: the exact tested set inside setup.py's ranges.
$(VENV)/.installed: setup.py constraints.txt $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test,plots]"
	$(BIN)/python -m pipelines.check_stack
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/hisac-demo --config=$(PRESET)

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m benchmarks.input_pipeline
	$(BIN)/python -m benchmarks.serving_cost --rounds=3 --calls=2
	$(BIN)/python -m benchmarks.training --rounds=2 --calls=2

clean:
	rm -rf runs .pytest_cache
