#!/usr/bin/env bash
# The MLflow tracking server's environment (.venv-mlflow): the full `mlflow` package, which the
# project's own environment does not hold (it needs only the client, mlflow-skinny). Kept apart as
# a server is kept on its own host; the pins are the project's (constraints.txt), so client and
# server run the same MLflow version. Idempotent: skipped while the pins are unchanged.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${MLFLOW_VENV:-$ROOT/.venv-mlflow}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
version=$(sed -n 's/^mlflow-skinny==\([0-9.]*\).*/\1/p' "$ROOT/constraints.txt")

stamp=$(cat "$ROOT/constraints.txt" "$0" | sha256sum | cut -c1-16)
if [ -f "$VENV/.stamp" ] && [ "$(cat "$VENV/.stamp")" = "$stamp" ]; then
  exit 0
fi
echo "[setup-mlflow] installing mlflow $version (the server) into $VENV (about a minute)" >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$ROOT/constraints.txt" "mlflow==$version" 2>&1 \
  | grep -v "^WARNING: Location" >&2 || true
"$VENV/bin/mlflow" --version >&2
echo "$stamp" > "$VENV/.stamp"
