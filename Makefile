# Two commands for a newcomer: `make demo` (the main job) and `make test` (the suite).
# Both create .venv and install the project from pyproject.toml when needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= quickstart-out
PYTEST_ARGS ?=

.PHONY: install system-deps demo test test-unit lint bench clean help

# System packages the test suite drives for real (Debian's), as "what to look for:package":
# chromium for the study viewer's browser test; Orthanc and its DICOMweb plugin as the archive of
# the DICOMweb tests; dciodvfy (dicom3tools) to validate the DICOM SR and PDF; pdftoppm
# (poppler-utils) to render the PDF report. Installed with apt-get when missing and we are root;
# otherwise a clear message.
SYSTEM_DEPS := chromium:chromium Orthanc:orthanc \
	/usr/share/orthanc/plugins/libOrthancDicomWeb.so:orthanc-dicomweb \
	dciodvfy:dicom3tools pdftoppm:poppler-utils
SYSTEM_TOOLS := $(foreach d,$(SYSTEM_DEPS),$(lastword $(subst :, ,$(d))))

help:
	@echo "make demo   - install into $(VENV) and run 'echoprime quickstart' end to end (local Ray, CPU)"
	@echo "make test   - install into $(VENV) (and the system packages the suite needs: $(SYSTEM_TOOLS)) and run the whole test suite"
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

system-deps:
	@missing=""; for d in $(SYSTEM_DEPS); do what=$${d%%:*}; pkg=$${d##*:}; \
	  case $$what in /*) test -e $$what ;; *) command -v $$what >/dev/null 2>&1 || test -x /usr/sbin/$$what ;; esac \
	  || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages for the test suite:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "the test suite needs these system packages:$$missing" >&2; \
	    echo "install them first, e.g.: sudo apt-get install -y$$missing" >&2; exit 1; \
	  fi; \
	fi

test: install system-deps
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
