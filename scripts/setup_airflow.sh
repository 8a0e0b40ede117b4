#!/usr/bin/env bash
# The Airflow environment (.venv-airflow) that runs dags/deepfm_daily.py here and in its test:
# Airflow 3 with its own pins (dags/constraints.txt), apart from the Spark stack in .venv, whose
# stages the DAG runs through spark-submit.sh. Idempotent: skipped while the pins are unchanged.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${AIRFLOW_VENV:-$ROOT/.venv-airflow}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
AIRFLOW_VERSION=3.3.2

stamp=$(cat "$ROOT/dags/constraints.txt" "$0" | sha256sum | cut -c1-16)
if [ -f "$VENV/.stamp" ] && [ "$(cat "$VENV/.stamp")" = "$stamp" ]; then
  exit 0
fi
echo "[setup-airflow] installing apache-airflow $AIRFLOW_VERSION into $VENV (a minute or two)" >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$ROOT/dags/constraints.txt" \
  "apache-airflow==$AIRFLOW_VERSION"
echo "$stamp" > "$VENV/.stamp"
"$VENV/bin/airflow" version >&2
