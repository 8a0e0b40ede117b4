#!/usr/bin/env bash
# The GPU check in one script: set-up (torch's CUDA build, Horovod built with NCCL), the tests that
# need a GPU (pytest -m gpu), and the training-step bench at batch 8192-65536 in fp32 and bf16,
# sparse tables in one process and dense tables under DDP over NCCL, with the step breakdown.
#
#   bench/gpu_check.sh                on a machine with an NVIDIA GPU, its driver and a package index
#   bench/gpu_check.sh --cpu-dry-run  the same steps on the CPU (small batches, few steps): proves the
#                                     script and the tests where no GPU is at hand
#   bench/gpu_check.sh --pack DIR     here (package index, Java): what a GPU machine with neither needs,
#                                     into DIR: wheels its python3 lacks, Horovod's sdist, and the
#                                     embedded Criteo sample preprocessed by Spark
#   bench/gpu_check.sh --from-pack DIR  on a GPU machine with no package index: its own python3 (with
#                                     torch's CUDA build), the pack's wheels, Horovod built there
#
# Results land in $GPU_CHECK_OUT (default out/gpu_check): environment.json, tests.log,
# bench_step.json, bench_step_ddp.json, and a summary table on stdout. Stops at the first failure.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
log() { printf '[gpu_check] %s\n' "$*" >&2; }
die() { printf 'gpu_check.sh: %s\n' "$*" >&2; exit 2; }

MODE=gpu PACK=
case "${1:-}" in
  "") ;;
  --cpu-dry-run) MODE=cpu ;;
  --pack|--from-pack)
    [ -n "${2:-}" ] || die "$1 needs a folder: $1 DIR"
    PACK=$(mkdir -p "$2" && cd "$2" && pwd) ;;
  -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument '$1': use --cpu-dry-run, --pack DIR or --from-pack DIR, or nothing on a GPU machine" ;;
esac

# The packages a GPU image with torch lacks: pydantic and its parts, and cffi, which building Horovod needs.
PACK_PYTHON_VERSION=${PACK_PYTHON_VERSION:-3.12}
PACK_WHEELS=(pydantic==2.10.6 pydantic-core==2.27.2 annotated-types==0.7.0 cffi==1.17.1 pycparser==2.22)
HOROVOD_VERSION=0.28.1

if [ "${1:-}" = --pack ]; then
  PY=${VENV:-$ROOT/.venv}/bin/python
  log "wheels for Python $PACK_PYTHON_VERSION into $PACK/wheels"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PACK_PYTHON_VERSION" \
    --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$PACK/wheels" "${PACK_WHEELS[@]}"
  "$PY" -m pip download -q --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$PACK"
  log "the embedded Criteo sample, preprocessed, into $PACK/criteo_shards"
  rm -rf "$PACK/criteo_shards"
  "$PY" -m tests.deepfm.shards "$PACK/criteo_shards"
  du -sh "$PACK" >&2
  exit 0
fi

if [ "${1:-}" = --from-pack ]; then
  # A GPU machine with no package index: its own python3 holds torch (CUDA), numpy, pyarrow, pytest.
  SITE=${GPU_CHECK_SITE:-/tmp/deepfm-gpu-site}
  PY=${PYTHON:-python3}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$PACK"/wheels/*.whl
  export PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}
  export DEEPFM_TEST_SHARDS=$PACK/criteo_shards
fi

OUT=${GPU_CHECK_OUT:-$ROOT/out/gpu_check}
mkdir -p "$OUT"
if [ "$MODE" = gpu ]; then
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >&2 \
    || die "no NVIDIA GPU visible (nvidia-smi): on a machine without one run bench/gpu_check.sh --cpu-dry-run"
  # Its own environment: the CUDA build of torch and a Horovod built against it with NCCL.
  export VENV=${VENV:-$ROOT/.venv-gpu}
  DEVICE=cuda BATCHES=(8192 16384 65536) STEPS=50 BF16_FLAG=()
else
  export VENV=${VENV:-$ROOT/.venv}
  # bf16 is measured on any CPU here: the dry run proves the path, not the speed.
  DEVICE=cpu BATCHES=(512 2048) STEPS=5 BF16_FLAG=(--bf16-anyway)
fi

# Horovod from the pack's sdist, with the NCCL that torch's CUDA build brought, for this GPU alone;
# niced, since it compiles beside the tests and the bench.
build_horovod_from_pack() (
  work=$(mktemp -d)
  tar -xzf "$PACK/horovod-$HOROVOD_VERSION.tar.gz" -C "$work"
  cd "$work/horovod-$HOROVOD_VERSION"
  patch -p1 -s < "$ROOT/patches/horovod-$HOROVOD_VERSION-cxx17.patch"
  nccl=$("$PY" -c 'import nvidia.nccl as n; print(list(n.__path__)[0])')
  mkdir -p "$work/nccl/lib"
  ln -s "$nccl/include" "$work/nccl/include"
  ln -s "$(ls "$nccl"/lib/libnccl.so* | head -1)" "$work/nccl/lib/libnccl.so"
  command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
  capability=$("$PY" -c 'import torch; print("%d%d" % torch.cuda.get_device_capability())')
  env HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_HOME="$work/nccl" HOROVOD_NCCL_LINK=SHARED \
    HOROVOD_BUILD_CUDA_CC_LIST="$capability" CMAKE_POLICY_VERSION_MINIMUM=3.5 MAKEFLAGS="-j$(( $(nproc) / 2 ))" \
    HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
    HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
    nice -n 19 "$PY" -m pip wheel --no-build-isolation --no-deps -w "$work/dist" .
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$work"/dist/horovod-*.whl
)

HOROVOD_BUILD=
if [ -n "$PACK" ]; then
  log "1/5 set-up: the pack's wheels in $SITE; Horovod $HOROVOD_VERSION compiling beside the next steps (log: $OUT/horovod_build.log)"
  build_horovod_from_pack > "$OUT/horovod_build.log" 2>&1 &
  HOROVOD_BUILD=$!
  TESTS_NOW=(-k "not horovod")
else
  PY=$VENV/bin/python
  log "1/4 set-up in $VENV (scripts/setup.sh builds Horovod with NCCL where CUDA is present)"
  bash scripts/setup.sh
  TESTS_NOW=()
fi

environment() {
  "$PY" - "$DEVICE" "${HOROVOD_BUILD:+later}" > "$OUT/environment.json" <<'EOF'
import json, sys

import torch

device, horovod_later = sys.argv[1], sys.argv[2:] == ["later"]
try:
    import horovod.torch as hvd
    horovod_nccl = bool(hvd.nccl_built())
except ImportError:
    horovod_nccl = None
found = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu_visible": torch.cuda.is_available(),
         "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
         "horovod_nccl": horovod_nccl}
print(json.dumps(found))
if device == "cuda" and not found["gpu_visible"]:
    sys.exit(f"gpu_check.sh: torch {torch.__version__} in this environment does not see the GPU (a CPU build "
             "of torch?): remove the environment and rerun where the package index serves torch's CUDA wheels")
if device == "cuda" and not horovod_later and not found["horovod_nccl"]:
    sys.exit("gpu_check.sh: Horovod was built without NCCL: remove its cached wheel "
             "(~/.cache/deepfm-spark/wheels/horovod-*) and rerun")
EOF
  log "environment: $(cat "$OUT/environment.json")"
}
environment

# A lent GPU's minutes are few: a failed step is recorded and the later ones still run.
FAILED=()
log "2/4 tests that need a GPU (device $DEVICE)"
DEEPFM_TEST_DEVICE=$DEVICE "$PY" -m pytest -m gpu -q -p no:cacheprovider "${TESTS_NOW[@]}" tests/deepfm/test_gpu.py 2>&1 \
  | tee "$OUT/tests.log" >&2 || FAILED+=("tests ($OUT/tests.log)")

log "3/4 training step, one process: sparse and dense tables, fp32 and bf16, batch ${BATCHES[*]}"
"$PY" bench/bench_step.py --device "$DEVICE" --batches "${BATCHES[@]}" --steps "$STEPS" "${BF16_FLAG[@]}" \
  > "$OUT/bench_step.json" || FAILED+=("bench_step")

log "4/4 training step under DDP (NCCL on a GPU, gloo on the CPU): dense tables"
"$PY" bench/bench_step.py --device "$DEVICE" --batches "${BATCHES[@]}" --steps "$STEPS" "${BF16_FLAG[@]}" \
  --ddp --gradients dense > "$OUT/bench_step_ddp.json" || FAILED+=("bench_step --ddp")

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
print(f"{'run':<8} {'batch':>6} {'precision':<9} {'tables':<7} {'samples/s':>12} {'TFLOP/s':>8}  slowest phase (ms)")
for name in ("bench_step", "bench_step_ddp"):
    try:
        result = json.loads((out / f"{name}.json").read_text())
    except ValueError:
        continue
    for case in result["cases"]:
        phase, ms = max(case["breakdown_ms"].items(), key=lambda item: item[1])
        print(f"{'ddp' if result['ddp'] else 'single':<8} {case['batch_size']:>6} {case['precision']:<9} "
              f"{case['embedding_gradients']:<7} {case['samples_per_s']:>12,} {case['tflops']:>8.2f}  {phase} {ms:.2f}")
print(f"details: {out}")
EOF

if [ -n "$HOROVOD_BUILD" ]; then
  log "5/5 Horovod with NCCL: waiting for its build, then its test"
  if wait "$HOROVOD_BUILD"; then
    HOROVOD_BUILD=
    environment
    DEEPFM_TEST_DEVICE=$DEVICE "$PY" -m pytest -m gpu -q -p no:cacheprovider -k horovod tests/deepfm/test_gpu.py 2>&1 \
      | tee -a "$OUT/tests.log" >&2 || FAILED+=("Horovod's test ($OUT/tests.log)")
  else
    tail -n 40 "$OUT/horovod_build.log" >&2
    FAILED+=("Horovod's build ($OUT/horovod_build.log)")
  fi
fi
[ ${#FAILED[@]} -eq 0 ] || { printf 'gpu_check.sh: failed: %s\n' "${FAILED[*]}" >&2; exit 1; }
