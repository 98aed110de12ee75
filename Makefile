# The two commands of the README: `make study` (the main job) and `make test`.
# `make study` installs the package alone (`pip install -e .`); `make test` adds the test extras
# (pytest, pytest-xdist, ray). Each install leaves a stamp, so either order works on a fresh machine
# and an edit of pyproject.toml reinstalls.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: study test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

install: $(STAMP)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

study: $(STAMP)
	$(BIN)/jaxscale study --config configs/default.py --workdir runs/default

clean:
	rm -rf $(VENV) runs .pytest_cache
