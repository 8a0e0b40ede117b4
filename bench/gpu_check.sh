#!/usr/bin/env bash
# The GPU check in one script: set-up (torch's CUDA build, Horovod built with NCCL), the tests that
# need a GPU (pytest -m gpu), and the training-step bench at batch 8192-65536 in fp32 and bf16,
# sparse tables in one process and dense tables under DDP over NCCL, with the step breakdown.
#
#   bench/gpu_check.sh                on a machine with an NVIDIA GPU, its driver and a package index
#   bench/gpu_check.sh --cpu-dry-run  the same steps on the CPU (small batches, few steps): proves the
#                                     script and the tests where no GPU is at hand
#
# Results land in $GPU_CHECK_OUT (default out/gpu_check): environment.json, tests.log,
# bench_step.json, bench_step_ddp.json, and a summary table on stdout. Stops at the first failure.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
log() { printf '[gpu_check] %s\n' "$*" >&2; }
die() { printf 'gpu_check.sh: %s\n' "$*" >&2; exit 2; }

MODE=gpu
case "${1:-}" in
  "") ;;
  --cpu-dry-run) MODE=cpu ;;
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument '$1': use --cpu-dry-run, or nothing on a GPU machine" ;;
esac

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
PY=$VENV/bin/python

log "1/4 set-up in $VENV (scripts/setup.sh builds Horovod with NCCL where CUDA is present)"
bash scripts/setup.sh
"$PY" - "$DEVICE" > "$OUT/environment.json" <<'EOF'
import json, sys

import horovod.torch as hvd
import torch

device = sys.argv[1]
found = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu_visible": torch.cuda.is_available(),
         "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
         "horovod_nccl": bool(hvd.nccl_built())}
print(json.dumps(found))
if device == "cuda" and not found["gpu_visible"]:
    sys.exit(f"gpu_check.sh: torch {torch.__version__} in this environment does not see the GPU (a CPU build "
             "of torch?): remove the environment and rerun where the package index serves torch's CUDA wheels")
if device == "cuda" and not found["horovod_nccl"]:
    sys.exit("gpu_check.sh: Horovod was built without NCCL: remove its cached wheel "
             "(~/.cache/deepfm-spark/wheels/horovod-*) and rerun")
EOF
log "environment: $(cat "$OUT/environment.json")"

log "2/4 tests that need a GPU (device $DEVICE)"
DEEPFM_TEST_DEVICE=$DEVICE "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/deepfm/test_gpu.py 2>&1 \
  | tee "$OUT/tests.log" >&2

log "3/4 training step, one process: sparse and dense tables, fp32 and bf16, batch ${BATCHES[*]}"
"$PY" bench/bench_step.py --device "$DEVICE" --batches "${BATCHES[@]}" --steps "$STEPS" "${BF16_FLAG[@]}" \
  > "$OUT/bench_step.json"

log "4/4 training step under DDP (NCCL on a GPU, gloo on the CPU): dense tables"
"$PY" bench/bench_step.py --device "$DEVICE" --batches "${BATCHES[@]}" --steps "$STEPS" "${BF16_FLAG[@]}" \
  --ddp --gradients dense > "$OUT/bench_step_ddp.json"

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
print(f"{'run':<8} {'batch':>6} {'precision':<9} {'tables':<7} {'samples/s':>12} {'TFLOP/s':>8}  slowest phase (ms)")
for name in ("bench_step", "bench_step_ddp"):
    result = json.loads((out / f"{name}.json").read_text())
    for case in result["cases"]:
        phase, ms = max(case["breakdown_ms"].items(), key=lambda item: item[1])
        print(f"{'ddp' if result['ddp'] else 'single':<8} {case['batch_size']:>6} {case['precision']:<9} "
              f"{case['embedding_gradients']:<7} {case['samples_per_s']:>12,} {case['tflops']:>8.2f}  {phase} {ms:.2f}")
print(f"details: {out}")
EOF
