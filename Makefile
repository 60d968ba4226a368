# Two entry points, each creating its own virtual environment:
#   make demo   install everything and run the whole toolchain on synthetic data
#   make test   install everything and run the test suite (the lint and type checks among the tests)
# and, for people who change the code:
#   make lint   ruff's lint and format checks, then mypy and the suppression check (tests/core/test_code_style.py)
# VENV picks the environment's folder; PYTHON the interpreter that creates it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo-out

.PHONY: demo test lint install clean

$(BIN)/edgeseg: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	touch $@

install: $(BIN)/edgeseg

demo: install
	$(BIN)/edgeseg demo --out $(DEMO_OUT) --overwrite

test: install
	$(BIN)/python -m pytest

# mypy reads an installed copy of the tree (the editable install's folder mapping hides the parts from it): the
# style tests make one, so lint runs them after ruff's own output.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q tests/core/test_code_style.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info
