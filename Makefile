# Every target that runs something does its own set-up first (idempotent, fast when up to date).
# STACK=current: the current Spark line (constraints-current.txt) in .venv-current; see scripts/stack.sh.
STACK ?= named
VENV ?= $(CURDIR)/$(if $(filter current,$(STACK)),.venv-current,.venv)
export STACK VENV
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: docs setup test-cross-stack setup-airflow setup-mlflow mlflow-server run test test-slow test-cluster test-airflow test-tracking-server package lint bench-preprocess bench-train bench-quality bench-quality-synthetic bench-score bench-mapped-score clean

setup:
	@bash scripts/setup.sh

## The whole pipeline on the embedded Criteo sample (../shared/data):
## preprocess, train, batch-score the logs, evaluate on the held-out test split.
run: setup
	$(VENV)/bin/deepfm-pipeline preprocess
	$(VENV)/bin/deepfm-pipeline train
	$(VENV)/bin/deepfm-pipeline score
	$(VENV)/bin/deepfm-pipeline evaluate
	@echo "Scores: out/criteo_scores/run_date=*/   Report: out/criteo_report/report.html"

## The default test suite (what CI runs), on TEST_WORKERS processes (pytest-xdist; 0: in this one).
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

## Both stacks set up, then the same answers from each on the embedded sample: preprocess rows, ids and
## vocabularies, the same seed's test AUC, the score job's probabilities (about 4 minutes).
test-cross-stack:
	@STACK=named VENV=$(CURDIR)/.venv bash scripts/setup.sh
	@STACK=current VENV=$(CURDIR)/.venv-current bash scripts/setup.sh
	DEEPFM_NAMED_VENV=$(CURDIR)/.venv DEEPFM_CURRENT_VENV=$(CURDIR)/.venv-current \
	  $(CURDIR)/.venv/bin/python -m pytest -m cross_stack $(PYTEST_ARGS)

## Heavy end-to-end checks, kept out of the default run.
test-slow: setup
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

## dist/: the wheel (default configuration included) and the relocatable environment archive
## that `./spark-submit.sh --ship-env` sends to the executors.
package: setup
	@bash scripts/package.sh

## A real standalone cluster on loopback whose worker cannot see this checkout: every stage
## through spark-submit.sh with the shipped environment (about 10 minutes).
test-cluster: package
	$(PY) -m pytest -m cluster $(PYTEST_ARGS)

## Airflow 3 in its own environment (.venv-airflow, pins in dags/constraints.txt) for dags/.
setup-airflow:
	@bash scripts/setup_airflow.sh

## The daily DAG run for real by `airflow dags test` on the embedded sample: two dates, then a
## run killed in train and rerun, beside four dates of the drifting stream (two processes, each
## with its own Airflow home; about 10 minutes).
test-airflow: setup setup-airflow
	$(PY) -m pytest -m airflow -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

## An MLflow tracking server (the full mlflow, in .venv-mlflow): runs in an SQLite store and the
## artifacts it serves to clients, under MLFLOW_DIR. Point tracking.uri at http://HOST:PORT; for
## other hosts set MLFLOW_HOST=0.0.0.0 and MLFLOW_ALLOWED_HOSTS to the names clients use.
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
MLFLOW_DIR ?= mlflow-server
MLFLOW_ALLOWED_HOSTS ?= localhost,127.0.0.1
setup-mlflow:
	@bash scripts/setup_mlflow.sh

mlflow-server: setup-mlflow
	@mkdir -p $(MLFLOW_DIR)
	.venv-mlflow/bin/mlflow server --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) --allowed-hosts '$(MLFLOW_ALLOWED_HOSTS)' \
	  --backend-store-uri sqlite:///$(abspath $(MLFLOW_DIR))/mlflow.db --artifacts-destination $(abspath $(MLFLOW_DIR))/artifacts

## Train, track and the pending-tracking path against a real MLflow server on loopback (about 2 minutes).
test-tracking-server: setup setup-mlflow
	$(PY) -m pytest -m tracking_server $(PYTEST_ARGS)

## The documentation site (docs/, mkdocs.yml) into site/, strict: a broken link fails.
docs: setup
	$(VENV)/bin/mkdocs build --strict

lint: setup
	$(VENV)/bin/ruff check .

bench-preprocess: setup
	$(PY) bench/bench_preprocess.py

bench-train: setup
	$(PY) bench/bench_train.py

bench-quality: setup
	$(PY) bench/compare_criteo.py

bench-quality-synthetic: setup
	$(PY) bench/quality_synthetic.py

bench-score: setup
	$(PY) bench/bench_score.py

bench-mapped-score: setup
	$(PY) bench/bench_mapped_score.py

clean:
	rm -rf out dist build site .pytest_cache
