#!/usr/bin/env bash
# `make package`: what a cluster needs, in dist/:
#   deepfm_spark-<version>-py3-none-any.whl  this project, the default configuration included
#   deepfm-env.tar.gz                         a relocatable virtualenv (venv-pack): the pinned stack, the
#                                             patched Horovod build and this project (not editable)
#   install_worker_env.sh                     installs that archive on a worker, for --worker-env
# spark-submit.sh --ship-env sends the archive to the executors (--archives ...#env); --worker-env
# runs an environment installed once on every worker instead.
# Re-running is quick when neither the sources nor the pins changed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/stack.sh"
DIST=${DIST:-$ROOT/dist}
BUILD=$ROOT/build
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
log() { printf '[package] %s\n' "$*" >&2; }

cd "$ROOT"
code=$("$VENV/bin/python" -c 'from deepfm.environment import code_digest; print(code_digest())')
stamp=$( { cat pyproject.toml "$CONSTRAINTS" scripts/stack.sh scripts/package.sh scripts/install_worker_env.sh; echo "$code"; } \
         | sha256sum | cut -c1-16)
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
runtime=$wheel
[ "$STACK" = named ] && runtime="$wheel[petastorm]"
"$env_dir/bin/python" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" "$runtime" "$horovod"
"$env_dir/bin/python" -m pip check >&2

log "packing $archive"
rm -f "$archive.tmp"
# Never used where the archive runs: pyspark's jars (executors run Spark's own JVM; a third of the
# archive), torch's C++ headers and C++ test programs (torch/bin keeps torch_shm_manager, which
# `import torch` needs), and the packages' own test suites. `*` spans directories here.
site='lib/*/site-packages'
"$VENV/bin/venv-pack" -q -p "$env_dir" -o "$archive.tmp" --format tar.gz \
  --exclude "$site/pyspark/jars/*" --exclude "$site/torch/include/*" --exclude "$site/torch/test/*" \
  --exclude "$site/torch/bin/*Test" --exclude "$site/torch/bin/test_*" --exclude "$site/torch/bin/protoc*" \
  --exclude "$site/*/tests/*"

# The archive as a worker gets it: unpacked, it must import what executors import and hold this
# checkout's code (the digest the driver checks executors against).
check_dir=$BUILD/unpacked-check
rm -rf "$check_dir" && mkdir -p "$check_dir"
start_ms=$(( $(date +%s%N) / 1000000 ))
tar -xzf "$archive.tmp" -C "$check_dir"
unpack_ms=$(( $(date +%s%N) / 1000000 - start_ms ))
identity=$("$check_dir/bin/python" -m deepfm.environment) || { log "the unpacked archive does not import what executors need"; exit 1; }
case "$identity" in *"\"code\": \"$code\""*) ;; *) log "the archive holds other code ($identity) than this checkout ($code)"; exit 1 ;; esac
unpacked_mb=$(du -sm "$check_dir" | cut -f1)
rm -rf "$check_dir"

chmod a+r "$archive.tmp"
mv "$archive.tmp" "$archive"  # published whole, by rename
install -m 0755 scripts/install_worker_env.sh "$DIST/install_worker_env.sh"
echo "$stamp" > "$DIST/.package-stamp"
log "done: $wheel, $archive ($(du -m "$archive" | cut -f1) MB; unpacks in $((unpack_ms / 1000)).$((unpack_ms % 1000 / 100)) s to $unpacked_mb MB; code $code)"
