"""One training step, taken apart: samples/s and where the time goes, on CPU or GPU, fp32 or bf16.

The real model, optimizers and `train_step` on Criteo-shaped batches (39 categorical fields,
Zipf-distributed ids over about 1M embedding rows; embedding 16, MLP 400-400-400 unless told),
staged in host memory as the readers hand them over (`deepfm.training.readers.Batch`) (pinned on a
GPU), so the figures are the step's and the host-to-device copy's, not the file reader's
(`bench_train.py` measures those).

For every batch size x precision x embedding-gradient case:
  samples_per_s   timed steps after a warm-up, nothing synchronized but the end;
  breakdown_ms    a second, synchronized pass that times each phase of the same step: copy to
                  device, id unique + table lookup, FM, MLP forward, loss + backward (all of it),
                  optimizer; their sum is slower than the free-running step (the syncs cost).
`dense` cases run the tables with dense gradients and Adam, which is what DDP over NCCL does on
GPUs (NCCL has no sparse allreduce); `sparse` is lazy Adam on the rows a batch touched
(deepfm/training/optim.py).

    python bench/bench_step.py [--device cuda] [--batches 8192 65536] [--precisions fp32 bf16]
                               [--steps 50] [--ddp]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import machine  # noqa: E402

from deepfm.model import DeepFM, DeepFMConfig  # noqa: E402
from deepfm.training.distributed import make_backend  # noqa: E402
from deepfm.training.optim import make_optimizers  # noqa: E402
from deepfm.training.precision import ALLOW_SLOW_BF16, bf16_support  # noqa: E402
from deepfm.training.readers import Batch  # noqa: E402
from deepfm.training.train import train_step  # noqa: E402

# Criteo-shaped: 13 bucketized numeric fields (tens of buckets) and 26 categorical ones.
VOCAB_SIZES = (*([64] * 13), 1_460, 580, 300_000, 200_000, 310, 24, 12_500, 630, 3, 93_000, 5_700, 250_000,
               3_200, 27, 14_900, 150_000, 10, 5_600, 2_170, 4, 200_000, 18, 15, 100_000, 105, 84_000)
WARMUP = 5


def batches(batch_size: int, count: int, pin: bool, seed: int = 0) -> list[Batch]:
    """Zipf(1.1) ids per field, as click logs have: a few values in most rows, a long tail."""
    rng = np.random.default_rng(seed)
    made = []
    for _ in range(count):
        ids = np.stack([(rng.zipf(1.1, batch_size) - 1) % size for size in VOCAB_SIZES], 1).astype(np.int32)
        label = (rng.random(batch_size) < 0.25).astype(np.float32)
        batch = Batch(torch.from_numpy(ids), torch.zeros(batch_size, 0), torch.from_numpy(label))
        if pin:
            batch = Batch(batch.ids.pin_memory(), batch.dense.pin_memory(), batch.label.pin_memory())
        made.append(batch)
    return made


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(backend, batch_size: int, precision: str, sparse: bool, steps: int, model_shape: dict) -> dict:
    device = backend.device
    torch.manual_seed(0)
    config = DeepFMConfig(vocab_sizes=VOCAB_SIZES, precision=precision, sparse_embeddings=sparse, **model_shape)
    raw = DeepFM(config)
    model, optimizers = backend.prepare(raw, make_optimizers(raw, 1e-3, 1e-3))
    model.train()
    staged = batches(batch_size, min(steps + WARMUP, 16), pin=device.type == "cuda")

    def step(batch: Batch) -> None:
        train_step(model, raw, optimizers, batch, backend)
        for opt in optimizers:
            opt.step()

    for i in range(WARMUP):
        step(staged[i % len(staged)])
    _sync(device)
    start = time.perf_counter()
    for i in range(steps):
        step(staged[i % len(staged)])
    _sync(device)
    seconds = time.perf_counter() - start

    phases: dict[str, float] = defaultdict(float)
    timed = min(steps, 10)
    for i in range(timed):
        for name, seconds_taken in _phases(model, raw, optimizers, staged[i % len(staged)], device).items():
            phases[name] += seconds_taken
    return {"batch_size": batch_size, "precision": precision, "embedding_gradients": "sparse" if sparse else "dense",
            "samples_per_s": round(steps * batch_size / seconds),
            "breakdown_ms": {name: round(1000 * total / timed, 3) for name, total in phases.items()}}


def _phases(model, raw: DeepFM, optimizers, batch: Batch, device: torch.device) -> dict[str, float]:
    """The step's phases, each synchronized; the forward pass taken apart as DeepFM.forward runs it."""
    times, clock = {}, time.perf_counter

    def mark(name: str, since: float) -> float:
        _sync(device)
        now = clock()
        times[name] = now - since
        return now

    t = clock()
    batch = batch.to(device)
    t = mark("copy_to_device", t)
    e, w = raw.embeddings(batch.ids, batch.dense)
    t = mark("ids_unique_and_lookup", t)
    logit = raw.fm(e, w)
    t = mark("fm", t)
    logit = logit + raw.deep(e)
    t = mark("mlp_forward", t)
    loss = F.binary_cross_entropy_with_logits(logit, batch.label)
    for opt in optimizers:
        opt.zero_grad()
    loss.backward()
    t = mark("loss_and_backward", t)
    for opt in optimizers:
        opt.step()
    mark("optimizer", t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[4096])
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--gradients", nargs="+", choices=("sparse", "dense"), default=["sparse", "dense"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--hidden", type=int, nargs="+", default=[400, 400, 400])
    parser.add_argument("--ddp", action="store_true",
                        help="wrap the model in DistributedDataParallel (world 1: NCCL on cuda, gloo on cpu), so the "
                             "gradient exchange's machinery is in the step")
    parser.add_argument("--bf16-anyway", action="store_true",
                        help=f"measure bf16 where the hardware computes it slowly too (sets {ALLOW_SLOW_BF16}=1)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_step.py: --device cuda but torch sees no GPU (a CPU build of torch, or no driver); "
                 "use --device cpu")
    if args.ddp:
        from deepfm.training.launch import free_port, set_local_rendezvous

        set_local_rendezvous(0, 1, free_port())
    backend = make_backend("torch" if args.ddp else "none", args.device)
    torch.set_num_threads(os.cpu_count() or 1)
    support = bf16_support(backend.device)
    precisions = [p for p in args.precisions if p == "fp32" or support.fast or args.bf16_anyway]
    shape = {"embedding_dim": args.embedding_dim, "hidden": tuple(args.hidden)}
    flops = DeepFM(DeepFMConfig(vocab_sizes=(1,) * len(VOCAB_SIZES), **shape)).train_flops_per_sample()
    cases = []
    for batch_size in args.batches:
        for precision in precisions:
            for gradients in args.gradients:
                case = run_case(backend, batch_size, precision, gradients == "sparse", args.steps, shape)
                case["tflops"] = round(case["samples_per_s"] * flops / 1e12, 3)
                cases.append(case)
                print(json.dumps(case), file=sys.stderr)
    fp32 = {(c["batch_size"], c["embedding_gradients"]): c["samples_per_s"] for c in cases if c["precision"] == "fp32"}
    print(json.dumps({
        "machine": machine(),
        "benchmark": "train_step",
        "device": str(backend.device),
        "ddp": args.ddp,
        "model": {**shape, "fields": len(VOCAB_SIZES), "embedding_rows": sum(VOCAB_SIZES),
                  "train_flops_per_sample": flops},
        "bf16": support.unit,
        "cases": cases,
        "ratios": {"bf16_vs_fp32": {f"{c['batch_size']}/{c['embedding_gradients']}":
                                    round(c["samples_per_s"] / fp32[c["batch_size"], c["embedding_gradients"]], 3)
                                    for c in cases if c["precision"] == "bf16"
                                    and (c["batch_size"], c["embedding_gradients"]) in fp32}},
    }, indent=2))
    backend.close()


if __name__ == "__main__":
    main()
