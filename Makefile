# Two commands for a newcomer: `make demo` (the main job) and `make test` (the suite).
# Both create .venv and install the project from pyproject.toml when needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= quickstart-out
PYTEST_ARGS ?=

.PHONY: install demo test test-unit lint bench clean help

help:
	@echo "make demo   - install into $(VENV) and run 'echoprime quickstart' end to end (local Ray, CPU)"
	@echo "make test   - install into $(VENV) and run the whole test suite"
	@echo "make lint   - ruff check and ruff format --check"
	@echo "make bench  - run the benchmarks in bench/ (minutes; results in docs/benchmarks.md)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/echoprime quickstart --out $(OUT) --clean

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check echoprime ray_jobs serve tests bench
	$(BIN)/ruff format --check echoprime ray_jobs serve tests bench

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(OUT) .pytest_cache build *.egg-info
