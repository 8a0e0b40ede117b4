"""Training throughput: readers, workers, gradient exchange, and DeepCTR-Torch, in one run.

Same model (embedding 16, MLP 400-400-400, batch 4096) and the same data: 1M synthetic rows
preprocessed with min_count 1 (about 1M embedding ids). Prints one JSON object with samples/s for
(a) tensors already in memory, (b) the native pyarrow reader, (c) Petastorm, (d) DeepCTR-Torch's
DeepFM fit on the same rows; 1 and 2 workers (DDP and Horovod, sparse and dense embedding
gradients, with the bytes each exchanges per step); (e) train.precision bf16 in memory where the
CPU has bf16 units (AMX, AVX512-BF16), or anywhere with --bf16-anyway; the machine's fp32 and bf16
matmul rates and the arithmetic limit = the fp32 rate / the model's training FLOPs per sample.
    python bench/bench_train.py [--data out/bench/train_1m] [--steps 120] [--rounds 2] [--readers-only]
                                [--readers memory native petastorm] [--bf16-anyway]
Petastorm is left out on a stack that cannot run it (deepfm/stack.py), and says so in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import machine  # noqa: E402
from synthetic_data import generate, preprocess  # noqa: E402

from deepfm.config import TrainConfig  # noqa: E402
from deepfm.features.preprocess_output import PreprocessOutput  # noqa: E402
from deepfm.model import DeepFM  # noqa: E402
from deepfm.stack import why_not_petastorm  # noqa: E402
from deepfm.training.distributed import make_backend  # noqa: E402
from deepfm.training.optim import make_optimizers  # noqa: E402
from deepfm.training.precision import ALLOW_SLOW_BF16, bf16_support  # noqa: E402
from deepfm.training.readers import InMemoryReader, make_reader  # noqa: E402
from deepfm.training.train import model_config, train_step  # noqa: E402

MODEL = {"embedding_dim": 16, "hidden": [400, 400, 400]}
BATCH = 4096
WARMUP = 5


def matmul_gflops(threads: int, dtype: torch.dtype = torch.float32) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(4096, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
    for _ in range(3):
        a @ b
    start, n = time.perf_counter(), 30
    for _ in range(n):
        a @ b
    return 2 * 4096 * 1024 * 1024 * n / (time.perf_counter() - start) / 1e9


def measure(plain: dict, steps: int, result_path: str) -> None:
    """One worker: `steps` timed training steps after a warm-up; rank 0 writes samples/s."""
    cfg = TrainConfig.model_validate(plain)
    backend = make_backend(cfg.backend, "cpu")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // backend.world))
    fmap = PreprocessOutput.open(cfg.data).feature_map
    torch.manual_seed(0)
    model = DeepFM(model_config(fmap, cfg, cfg.model.sparse_embeddings))
    raw = model
    model, optimizers = backend.prepare(model, make_optimizers(model, cfg.lr, cfg.lr))
    reader = make_reader(cfg.reader, Path(cfg.data) / "train", fmap, cfg.batch_size, rank=backend.rank,
                         world=backend.world, seed=1, shuffle_buffer_rows=cfg.shuffle_buffer_rows)
    done, rows, start = 0, 0, None
    for batch in reader:
        if done == WARMUP:
            backend.barrier()
            start = time.perf_counter()
        totals = train_step(model, raw, optimizers, batch, backend)
        for opt in optimizers:
            opt.step()
        if done >= WARMUP:
            rows += int(totals[1])
        done += 1
        if done == WARMUP + steps:
            break
    backend.barrier()
    seconds = time.perf_counter() - start
    if backend.rank == 0:
        Path(result_path).write_text(json.dumps({"samples_per_s": rows / seconds, "steps": done - WARMUP}))
    backend.close()


def _spawned(rank: int, world: int, port: int, plain: dict, steps: int, path: str) -> None:
    from deepfm.training.launch import set_local_rendezvous

    set_local_rendezvous(rank, world, port)
    measure(plain, steps, path)


def run_case(data: Path, steps: int, reader: str, backend: str = "none", workers: int = 1,
             sparse: bool = True, precision: str = "fp32") -> dict:
    plain = TrainConfig.model_validate({
        "data": str(data), "output": "unused", "reader": reader, "backend": backend, "workers": workers,
        "batch_size": BATCH, "model": {**MODEL, "sparse_embeddings": sparse}, "precision": precision,
    }).model_dump(mode="json")
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        if backend == "none":
            measure(plain, steps, out.name)
        elif backend == "torch":
            import torch.multiprocessing as mp

            from deepfm.training.launch import free_port

            mp.spawn(_spawned, args=(workers, free_port(), plain, steps, out.name), nprocs=workers)
        else:
            import horovod

            horovod.run(measure, args=(plain, steps, out.name), num_proc=workers, use_gloo=True,
                        hosts=f"localhost:{workers}")
        result = json.loads(Path(out.name).read_text())
    return {"reader": reader, "backend": backend, "workers": workers, "sparse_gradients": sparse,
            "precision": precision, "samples_per_s": round(result["samples_per_s"])}


def exchange_bytes(fmap, sparse: bool) -> int:
    """Bytes of embedding gradient each worker sends per step (the MLP's dense part excluded)."""
    rows = sum(int(f.vocab_size) for f in fmap.categorical)
    width = MODEL["embedding_dim"] + 1  # vectors + first-order weights
    if sparse:  # allgather of (index, values) for every looked-up row
        return BATCH * len(fmap.categorical) * (8 + 4 * width)
    return rows * width * 4  # allreduce of the whole tables


def deepctr_samples_per_s(data: Path, rows: int) -> float:
    import numpy as np
    from deepctr_torch.inputs import SparseFeat
    from deepctr_torch.models import DeepFM as DeepCTRDeepFM

    fmap = PreprocessOutput.open(data).feature_map
    reader = InMemoryReader(data / "train", fmap, BATCH, shuffle=False, drop_remainder=False)
    ids, label = reader.ids[:rows].numpy().astype(np.int64), reader.label[:rows].numpy()
    columns = [SparseFeat(f.name, f.vocab_size, embedding_dim=MODEL["embedding_dim"]) for f in fmap.categorical]
    feed = {f.name: ids[:, j] for j, f in enumerate(fmap.categorical)}
    torch.set_num_threads(os.cpu_count() or 1)
    model = DeepCTRDeepFM(columns, columns, dnn_hidden_units=tuple(MODEL["hidden"]), device="cpu")
    model.compile("adam", "binary_crossentropy")
    start = time.perf_counter()
    model.fit(feed, label, batch_size=BATCH, epochs=1, verbose=0)
    return rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "out" / "bench" / "train_1m")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--deepctr-rows", type=int, default=40 * BATCH)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--readers-only", action="store_true",
                        help="only (a) memory, (b) native, (c) Petastorm with 1 worker, and (e) bf16: the "
                             "streaming ratios")
    parser.add_argument("--readers", nargs="+", choices=("memory", "native", "petastorm"),
                        default=["memory", "native", "petastorm"], help="the 1-worker reader cases")
    parser.add_argument("--bf16-anyway", action="store_true",
                        help=f"measure bf16 also where the CPU lacks bf16 units (sets {ALLOW_SLOW_BF16}=1), to "
                             "see how much slower it is there")
    args = parser.parse_args()
    if args.bf16_anyway:
        os.environ[ALLOW_SLOW_BF16] = "1"
    bf16 = bf16_support("cpu")
    if not (args.data / "_SUCCESS").exists():
        raw = ROOT / "out" / "bench" / "raw_1000000"
        generate(1_000_000, raw)
        preprocess(raw, args.data, "preprocess.vocab.min_count=1")
    fmap = PreprocessOutput.open(args.data).feature_map
    flops = DeepFM(model_config(fmap, TrainConfig(data="x", output="x", model=MODEL), True)).train_flops_per_sample()
    gflops = matmul_gflops(os.cpu_count() or 1)
    gflops_bf16 = matmul_gflops(os.cpu_count() or 1, torch.bfloat16)
    limit = gflops * 1e9 / flops
    no_petastorm = why_not_petastorm()
    readers = [r for r in args.readers if not (r == "petastorm" and no_petastorm)]
    plan = [(reader, "none", 1, True) for reader in readers]
    measure_bf16 = (bf16.fast or args.bf16_anyway) and "memory" in readers
    if not args.readers_only:
        plan.append(("memory", "none", 1, False))
        plan += [("native", backend, 2, sparse) for backend in ("torch", "horovod") for sparse in (True, False)]
    if measure_bf16:
        plan.append(("memory", "none", 1, True, "bf16"))
    # Rounds interleave the cases and each keeps its best: this shared 2-core machine's speed
    # drifts by +-20% from minute to minute, which would otherwise swamp the comparisons.
    best: dict[tuple, dict] = {}
    for _ in range(args.rounds):
        for case in plan:
            result = run_case(args.data, args.steps, *case)
            if case not in best or result["samples_per_s"] > best[case]["samples_per_s"]:
                best[case] = result
    cases = []
    for case in plan:
        if case[1] != "none":
            best[case]["embedding_bytes_per_step_per_worker"] = exchange_bytes(fmap, case[3])
        cases.append(best[case])
    deepctr = float("nan") if args.readers_only else deepctr_samples_per_s(args.data, args.deepctr_rows)
    rate = {c["reader"]: c["samples_per_s"] for c in cases[:len(readers)]}
    fastest = max(c["samples_per_s"] for c in cases if c["precision"] == "fp32")
    bf16_case = next((c for c in cases if c["precision"] == "bf16"), None)
    print(json.dumps({
        "machine": machine(),
        "rounds": args.rounds,
        "benchmark": "train",
        "model": {**MODEL, "batch_size": BATCH, "train_flops_per_sample": flops},
        "embedding_ids": sum(int(f.vocab_size) for f in fmap.categorical),
        "matmul_gflops_fp32": round(gflops, 1),
        "matmul_gflops_bf16": round(gflops_bf16, 1),
        "bf16": bf16.unit + ("" if bf16.fast else ": train.precision bf16 is refused here"),
        "arithmetic_limit_samples_per_s": round(limit),
        "cases": cases,
        "deepctr_torch_samples_per_s": None if args.readers_only else round(deepctr),
        "petastorm": no_petastorm or "measured",
        "ratios": {
            "native_vs_memory": _ratio(rate, "native", "memory"),
            "petastorm_vs_memory": _ratio(rate, "petastorm", "memory"),
            "best_vs_arithmetic_limit": round(fastest / limit, 3),
            "memory_1_worker_vs_deepctr": None if args.readers_only else round(rate["memory"] / deepctr, 2),
            "bf16_vs_fp32_memory": round(bf16_case["samples_per_s"] / rate["memory"], 3) if bf16_case else None,
        },
    }, indent=2))


def _ratio(rate: dict[str, float], reader: str, baseline: str) -> float | None:
    return round(rate[reader] / rate[baseline], 3) if reader in rate and baseline in rate else None


if __name__ == "__main__":
    main()
