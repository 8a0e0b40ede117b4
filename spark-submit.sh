#!/usr/bin/env bash
# Run a pipeline stage through spark-submit:  ./spark-submit.sh STAGE [--conf FILE ...] [--set k=v ...]
# Local mode by default; SPARK_MASTER, SPARK_DRIVER_MEMORY and SPARK_SUBMIT_ARGS pass through.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")" && pwd)
if [ $# -eq 0 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  echo "usage: $0 STAGE [stage options]   (stages: deepfm-pipeline --help)" >&2
  echo "env: SPARK_MASTER (default local[*]), SPARK_DRIVER_MEMORY (default 4g), SPARK_SUBMIT_ARGS" >&2
  exit 2
fi
VENV=${VENV:-$ROOT/.venv}
[ -x "$VENV/bin/python" ] || bash "$ROOT/scripts/setup.sh"
PY="$VENV/bin/python"
SPARK_HOME=$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export SPARK_HOME PYSPARK_PYTHON=${PYSPARK_PYTHON:-$PY} PYSPARK_DRIVER_PYTHON=${PYSPARK_DRIVER_PYTHON:-$PY}
# shellcheck disable=SC2086  # SPARK_SUBMIT_ARGS is a list of flags on purpose
exec "$SPARK_HOME/bin/spark-submit" \
  --master "${SPARK_MASTER:-local[*]}" \
  --driver-memory "${SPARK_DRIVER_MEMORY:-4g}" \
  --driver-java-options "${SPARK_DRIVER_JAVA_OPTIONS:--XX:-DontCompileHugeMethods}" \
  ${SPARK_SUBMIT_ARGS:-} \
  "$ROOT/jobs/cli.py" "$@"
