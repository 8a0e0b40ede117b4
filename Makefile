# Every target that runs something does its own set-up first (idempotent, fast when up to date).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup run test test-slow lint bench-preprocess bench-train bench-quality clean

setup:
	@bash scripts/setup.sh

## The main job on the embedded Criteo sample (../shared/data): preprocess, then train.
run: setup
	$(VENV)/bin/deepfm-pipeline preprocess
	$(VENV)/bin/deepfm-pipeline train

## The default test suite (what CI runs).
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

## Heavy end-to-end checks, kept out of the default run.
test-slow: setup
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

bench-preprocess: setup
	$(PY) bench/bench_preprocess.py

bench-train: setup
	$(PY) bench/bench_train.py

bench-quality: setup
	$(PY) bench/compare_criteo.py

clean:
	rm -rf out .pytest_cache
