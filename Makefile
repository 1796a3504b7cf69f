# whaleid: `make repro` runs the whole pipeline on the generated default dataset; `make test` runs the tests.
# Both create .venv, install the pinned requirements and whaleid itself (`pip install -e .`: the `whaleid` command)
# first when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test lint format bench clean-cache check exps fuzz

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	set -o pipefail; $(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || exit $${PIPESTATUS[0]}
	set -o pipefail; $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || exit $${PIPESTATUS[0]}
	touch $(STAMP)

repro: $(STAMP)
	dvc repro
	@dvc checkout --relink -q  # dvc repro copies folder outputs into its cache; link them (one copy on disk)
	@whaleid summary

test: $(STAMP)
	pytest

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

BENCHES := train_loop ddp embed resize sweep knn local sample_competition_size dry_run

bench: $(STAMP)
	@for b in $(BENCHES); do echo "## bench/$$b.py"; python -m bench.$$b || exit 1; done

clean-cache:
	rm -rf .whaleid_cache
