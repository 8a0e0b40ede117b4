#!/usr/bin/env bash
# `make package`: what a cluster needs, in dist/:
#   deepfm_spark-<version>-py3-none-any.whl  this project, the default configuration included
#   deepfm-env.tar.gz                         a relocatable virtualenv (venv-pack): the pinned stack, the
#                                             patched Horovod build and this project (not editable)
# spark-submit.sh --ship-env sends the archive to the executors (--archives ...#env).
# Re-running is quick when neither the sources nor the pins changed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
DIST=${DIST:-$ROOT/dist}
BUILD=$ROOT/build
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
log() { printf '[package] %s\n' "$*" >&2; }

cd "$ROOT"
stamp=$( { cat pyproject.toml constraints.txt scripts/package.sh;
           find deepfm pipelines jobs -type f \( -name '*.py' -o -name '*.yaml' \) | sort | xargs cat; } | sha256sum | cut -c1-16)
archive=$DIST/deepfm-env.tar.gz
if [ -f "$archive" ] && [ "$(cat "$DIST/.package-stamp" 2>/dev/null)" = "$stamp" ]; then
  log "up to date: $archive"; exit 0
fi

mkdir -p "$DIST" "$BUILD"
rm -f "$DIST"/deepfm_spark-*.whl
log "building the wheel"
"$VENV/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$DIST" "$ROOT"
wheel=$(ls "$DIST"/deepfm_spark-*.whl)
horovod=$(bash "$ROOT/scripts/setup.sh" --horovod-wheel)

# A fresh, non-editable environment: venv-pack refuses editable installs, and the archive must not
# point back into this checkout.
env_dir=$BUILD/pack-env
log "installing the runtime stack into $env_dir"
"$PYTHON" -m venv --clear "$env_dir"
"$env_dir/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt "$wheel" "$horovod"
"$env_dir/bin/python" -m pip check >&2

log "packing $archive"
rm -f "$archive.tmp"
# Executors run Spark's own JVM: pyspark's jars (a third of the archive) and torch's C++ headers
# are never used there.
"$VENV/bin/venv-pack" -q -p "$env_dir" -o "$archive.tmp" --format tar.gz \
  --exclude 'lib/*/site-packages/pyspark/jars/*' --exclude 'lib/*/site-packages/torch/include/*'
chmod a+r "$archive.tmp"
mv "$archive.tmp" "$archive"  # published whole, by rename
echo "$stamp" > "$DIST/.package-stamp"
log "done: $wheel, $archive ($(du -h "$archive" | cut -f1))"
