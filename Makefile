# Two entry points (see README): `make quick` runs the quick-preset pipeline, `make test` the tests.
# Both create .venv and install the project into it first (CPU torch pinned in pyproject.toml).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
CORES ?= 2

.PHONY: quick test test-all lint bench clean-venv slurm-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# Jobs beside the chain's GeMS get one thread each, so two of them share the 2 cores: their small ops gain
# nothing from a second thread (SAC update 72.5 ms with 1 thread, 70.2 with 2), MF and the reference policies
# run on the core SAC+GeMS leaves free (bench/README.md, "threads"; idle OpenMP threads sleep instead of
# spinning on a busy core in every slate-rl process: cli.main sets OMP_WAIT_POLICY=PASSIVE).
# Overlays go after the preset: make quick QUICK_CONFIGS="workflow/presets/quick.yaml workflow/presets/tenth.yaml"
# offline_policy_seeds_0_1_2 is the rule of the quick preset's offline seed groups (offline.seeds_per_job: 3);
# --set-threads ignores rule names a configuration does not define.
QUICK_THREADS := offline_policy=1 offline_policy_seeds_0_1_2=1 online_agent=1 mf_embeddings=1 offline_dataset=1
QUICK_CONFIGS ?= workflow/presets/quick.yaml
quick: $(STAMP)
	snakemake --cores $(CORES) --set-threads $(QUICK_THREADS) --configfile $(QUICK_CONFIGS)

# SLURM packages for tests/test_slurm.py (a no-op when installed; the test skips if this fails).
slurm-deps:
	bash scripts/install-slurm.sh

# One pytest worker per core (pytest-xdist); each test file stays on one worker (--dist loadfile), so that a
# file's module fixtures are built once and its tests run in their order.
PYTEST_PARALLEL := -n auto --dist loadfile

test: $(STAMP) slurm-deps
	pytest -m "not slow" $(PYTEST_PARALLEL)

test-all: $(STAMP) slurm-deps
	pytest $(PYTEST_PARALLEL)

lint: $(STAMP)
	ruff check slate_rl tests bench
	mypy slate_rl

bench: $(STAMP)
	slate-rl bench sim

clean-venv:
	rm -rf $(VENV)
