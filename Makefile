# Two entry points, each creating its own virtual environment:
#   make demo   install everything and run the whole toolchain on synthetic data
#   make test   install everything and run the test suite
# VENV picks the environment's folder; PYTHON the interpreter that creates it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo-out

.PHONY: demo test install clean

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

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info
