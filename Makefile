# Two entry points (see README): `make quick` runs the quick-preset pipeline, `make test` the tests.
# Both create .venv and install the project into it first (CPU torch pinned in pyproject.toml).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
CORES ?= 2

.PHONY: quick test test-all lint bench clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

quick: $(STAMP)
	snakemake --cores $(CORES) --configfile workflow/presets/quick.yaml

test: $(STAMP)
	pytest -m "not slow"

test-all: $(STAMP)
	pytest

lint: $(STAMP)
	ruff check slate_rl tests bench
	mypy slate_rl

bench: $(STAMP)
	slate-rl bench sim

clean-venv:
	rm -rf $(VENV)
