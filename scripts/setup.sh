#!/usr/bin/env bash
# One idempotent set-up: Java check, .venv, the pinned stack, this project, and Horovod built from
# source with the C++17 fix (cached as a wheel so that a re-run skips the 5-minute compile).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/stack.sh"
PYTHON=${PYTHON:-python3.11}
HOROVOD_VERSION=0.28.1
CACHE_DIR=${DEEPFM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/deepfm-spark}

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

check_java() {
  command -v java >/dev/null 2>&1 || die "Java not found. Spark 3.5 needs Java 17: install it (Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME and put \$JAVA_HOME/bin on PATH."
  local version major
  version=$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
  major=${version%%.*}
  [ "$major" = "1" ] && major=$(echo "$version" | cut -d. -f2)
  [ "${major:-0}" -ge 17 ] 2>/dev/null || die "Java $version found, Spark 3.5 needs Java >= 17: install openjdk-17-jre-headless and point JAVA_HOME at it."
  log "java $version ok"
}

check_python() {
  command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
  "$PYTHON" -c 'import sys; assert sys.version_info[:2] >= (3, 10), sys.version' 2>/dev/null \
    || die "Python >= 3.10 is needed (3.11 verified); set PYTHON=/path/to/python3.11."
}

stamp_of() {
  cat "$ROOT/pyproject.toml" "$CONSTRAINTS" "$ROOT/scripts/stack.sh" "$ROOT/patches/"*.patch "$0" | sha256sum | cut -c1-16
}

install_stack() {
  [ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  local pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
  "${pip[@]}" install -q --upgrade pip 'setuptools>=77' wheel
  log "installing the $STACK stack ($(basename "$CONSTRAINTS")) and the project (editable)"
  "${pip[@]}" install -q -c "$CONSTRAINTS" -e "$ROOT[$EXTRAS]"
}

cuda_present() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# A subshell body, so that its EXIT trap removes the work folder however the build ends.
build_horovod_wheel() (
  local out_dir=$1 work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  log "building Horovod $HOROVOD_VERSION from source (about 5 minutes on 2 cores)"
  "$VENV/bin/python" -m pip download -q --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$work"
  tar -xzf "$work/horovod-$HOROVOD_VERSION.tar.gz" -C "$work"
  (cd "$work/horovod-$HOROVOD_VERSION" && patch -p1 -s < "$ROOT/patches/horovod-$HOROVOD_VERSION-cxx17.patch")
  # The system cmake (3.x): cmake 4 from PyPI rejects gloo's cmake_minimum_required.
  local cmake_bin
  cmake_bin=$(PATH=$(echo "$PATH" | tr ':' '\n' | grep -v "^$VENV/bin$" | paste -sd:) command -v cmake) \
    || die "cmake not found: install it (apt-get install -y cmake g++) to build Horovod."
  local gpu_env=()
  if cuda_present; then gpu_env=(HOROVOD_GPU_OPERATIONS=NCCL); log "CUDA found: building with NCCL"; fi
  env "${gpu_env[@]}" HOROVOD_CMAKE="$cmake_bin" MAKEFLAGS="-j$(nproc)" \
    HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
    HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
    "$VENV/bin/python" -m pip wheel -q --no-build-isolation --no-deps -w "$work/dist" \
    "$work/horovod-$HOROVOD_VERSION" > "$work/build.log" 2>&1 \
    || { tail -n 40 "$work/build.log" >&2; die "Horovod build failed (log tail above)."; }
  # Publish the cache entry by rename, so an interrupted build never leaves a half wheel behind.
  mkdir -p "$(dirname "$out_dir")"
  rm -rf "$out_dir.tmp" && mv "$work/dist" "$out_dir.tmp" && mv "$out_dir.tmp" "$out_dir"
)

# The cached wheel (built on first use). It links against torch's C++ ABI: the cache is keyed by
# Python, torch build and CUDA.
horovod_wheel() {
  local key wheel_dir
  key=$("$VENV/bin/python" -c 'import sys, torch; print(f"py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__}")')
  cuda_present && key="$key-nccl"
  wheel_dir="$CACHE_DIR/wheels/horovod-$HOROVOD_VERSION-$key"
  [ -d "$wheel_dir" ] || build_horovod_wheel "$wheel_dir"
  ls "$wheel_dir"/horovod-*.whl
}

install_horovod() {
  if "$VENV/bin/python" -c 'import horovod.torch' >/dev/null 2>&1; then
    log "horovod.torch already importable"; return
  fi
  local wheel
  wheel=$(horovod_wheel)
  log "installing Horovod from $wheel"
  "$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" "$wheel"
}

main() {
  if [ "${1:-}" = "--horovod-wheel" ]; then  # for scripts/package.sh: the path of the cached wheel
    horovod_wheel; return
  fi
  check_java
  check_python
  local stamp
  stamp=$(stamp_of)
  if [ -f "$VENV/.setup-stamp" ] && [ "$(cat "$VENV/.setup-stamp")" = "$stamp" ]; then
    log "up to date ($VENV)"; return
  fi
  install_stack
  install_horovod
  "$VENV/bin/python" -m pip check >&2 || die "pip check found conflicts (above)."
  "$VENV/bin/horovodrun" --check-build >&2
  echo "$stamp" > "$VENV/.setup-stamp"
  log "done: activate with 'source $VENV/bin/activate'"
}

main "$@"
