# whaleid: `make repro` runs the whole pipeline on the generated default dataset; `make test` runs the tests.
# Both create .venv, install the pinned requirements and whaleid itself (`pip install -e .`: the `whaleid` command)
# first when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test lint format bench gpu-check gpu-wheels clean-cache check exps fuzz

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	set -o pipefail; $(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || exit $${PIPESTATUS[0]}
	set -o pipefail; $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt 2>&1 | grep -v "^WARNING: Location" || exit $${PIPESTATUS[0]}
	set -o pipefail; $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || exit $${PIPESTATUS[0]}
	touch $(STAMP)

repro: $(STAMP)
	dvc repro
	@dvc checkout --relink -q  # dvc repro copies folder outputs into its cache; link them (one copy on disk)
	@whaleid summary

TEST_WORKERS ?= 2  # pytest-xdist processes; the end-to-end tests wait on DVC and process starts more than on CPU
test: $(STAMP)
	pytest -n $(TEST_WORKERS)

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz pytest -q -p no:cacheprovider tests/test_fuzz.py

lint: $(STAMP)
	ruff check . && ruff format --check .

format: $(STAMP)
	ruff format . && ruff check --fix .

check: $(STAMP)
	whaleid check

exps: $(STAMP)
	whaleid exps

# Every benchmark under bench/ (tests/test_bench.py checks the list); each prints `name: value (target) PASS|FAIL`.
BENCHES := allocator train_loop ddp embed resize atomic sweep knn index_scale rerank local sample_competition_size dry_run identify

bench: $(STAMP)
	@for b in $(BENCHES); do echo "## bench/$$b.py"; python -m bench.$$b || exit 1; done

# The GPU paths in one script (bench/gpu_check.py; on a CPU it runs its fallback and says what it skipped).
gpu-check: $(STAMP)
	python -m bench.gpu_check

# Wheels for a bare GPU machine with no package registry (docs/benchmarks.md, "Checking a GPU machine"): Python 3.12, x86-64.
WHEEL_PLATFORMS := $(foreach n,17 24 27 28 31 34 35,--platform manylinux_2_$(n)_x86_64) --platform manylinux2014_x86_64
gpu-wheels: $(STAMP)
	rm -rf .whl && mkdir -p .whl
	$(BIN)/python -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
		--python-version 3.12 --implementation cp $(WHEEL_PLATFORMS) -d .whl -r bench/gpu_wheels.txt
	@du -sh .whl

clean-cache:
	rm -rf .whaleid_cache
