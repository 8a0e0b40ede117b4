"""Sharded against replicated tables at 2 workers: samples/s, bytes exchanged, and a scaling model.

Both cases train the same model (embedding 16, MLP 400-400-400, 4096 rows a worker a step, the
train: defaults for the tables: lazy Adam, the prior, the moving average) on the same 1M synthetic
rows as bench/bench_train.py, with 2 gloo workers built exactly as training builds them
(deepfm/training/train.py's build_run); rounds interleave the cases and each keeps its best.

Bytes per step per worker, from the distinct table rows U each worker's batch looks up (counted
in the run), D + 1 = 17 floats a row, the MLP's P parameters, N workers:
  replicated (DDP, sparse gradients): the table gradient is allgathered, each worker receiving
      every other worker's rows: (N - 1) U (8 + 4 (D + 1)); the MLP's gradient is allreduced
      (ring): 2 (N - 1) / N 4 P.
  sharded: each distinct id goes to its owner and the row comes back, and the row's gradient goes
      to the owner: (N - 1) / N U (8 + 2 * 4 (D + 1)); the MLP as above.
The scaling model holds U at its measured value (the per-worker batch stays 4096) and prints the
seconds a step spends moving those bytes on a 25 Gb/s network at 2, 8 and 64 workers.

    python bench/bench_sharding.py [--data out/bench/train_1m] [--steps 60] [--rounds 2]
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
from deepfm.training.distributed import make_backend  # noqa: E402
from deepfm.training.readers import make_reader  # noqa: E402
from deepfm.training.train import build_run, train_step  # noqa: E402

MODEL = {"embedding_dim": 16, "hidden": [400, 400, 400]}
BATCH, WORKERS, WARMUP = 4096, 2, 5
NETWORK_BYTES_PER_S = 25e9 / 8


def measure(plain: dict, steps: int, result_path: str) -> None:
    """One worker: `steps` timed steps after a warm-up; rank 0 writes samples/s and the mean U."""
    cfg = TrainConfig.model_validate(plain)
    backend = make_backend("torch", "cpu")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // backend.world))
    data = PreprocessOutput.open(cfg.data)
    run = build_run(cfg, backend, data)
    offsets = run.raw_model.embeddings.offsets
    reader = make_reader("native", data.split("train"), data.feature_map, cfg.batch_size, rank=backend.rank,
                         world=backend.world, seed=1, shuffle_buffer_rows=cfg.shuffle_buffer_rows)
    rows, distinct, start = 0, 0, None
    for done, batch in enumerate(reader):
        if done == WARMUP:
            backend.barrier()
            start = time.perf_counter()
        totals = train_step(run.model, run.raw_model, run.optimizers, batch, backend, run.prior)
        for opt in run.optimizers:
            opt.step()
        if run.averaged is not None:
            run.averaged.update_parameters(run.raw_model)
        if done >= WARMUP:
            rows += int(totals[1])
            distinct += torch.unique(batch.ids.long() + offsets).numel()
        if done + 1 == WARMUP + steps:
            break
    backend.barrier()
    seconds = time.perf_counter() - start
    if backend.rank == 0:
        mlp = sum(p.numel() for name, p in run.raw_model.named_parameters() if "embeddings.table" not in name)
        Path(result_path).write_text(json.dumps({"samples_per_s": rows / seconds, "distinct_rows": distinct / steps,
                                                 "dense_parameters": mlp}))
    backend.close()


def _spawned(rank: int, world: int, port: int, plain: dict, steps: int, path: str) -> None:
    from deepfm.training.launch import set_local_rendezvous

    set_local_rendezvous(rank, world, port)
    measure(plain, steps, path)


def run_case(data: Path, steps: int, embeddings: str, output: Path) -> dict:
    import torch.multiprocessing as mp

    from deepfm.training.launch import free_port

    plain = TrainConfig.model_validate({
        "data": str(data), "output": str(output), "backend": "torch", "workers": WORKERS, "batch_size": BATCH,
        "model": MODEL, "embeddings": embeddings}).model_dump(mode="json")
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        mp.spawn(_spawned, args=(WORKERS, free_port(), plain, steps, out.name), nprocs=WORKERS)
        return json.loads(Path(out.name).read_text())


def bytes_per_step(embeddings: str, workers: int, distinct_rows: float, dense_parameters: int) -> float:
    """What one worker sends a step (module docstring)."""
    width_bytes = 4 * (MODEL["embedding_dim"] + 1)
    dense = 2 * (workers - 1) / workers * 4 * dense_parameters
    if embeddings == "replicated":
        return (workers - 1) * distinct_rows * (8 + width_bytes) + dense
    return (workers - 1) / workers * distinct_rows * (8 + 2 * width_bytes) + dense


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "out" / "bench" / "train_1m")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not (args.data / "_SUCCESS").exists():
        raw = ROOT / "out" / "bench" / "raw_1000000"
        generate(1_000_000, raw)
        preprocess(raw, args.data, "preprocess.vocab.min_count=1")
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for embeddings in ("replicated", "sharded"):
                result = run_case(args.data, args.steps, embeddings, Path(tmp) / embeddings)
                if embeddings not in best or result["samples_per_s"] > best[embeddings]["samples_per_s"]:
                    best[embeddings] = result
    distinct, dense = best["replicated"]["distinct_rows"], best["replicated"]["dense_parameters"]
    scaling = {str(n): {e: {"megabytes_per_step": round(bytes_per_step(e, n, distinct, dense) / 1e6, 2),
                            "seconds_per_step_at_25_gbit": round(bytes_per_step(e, n, distinct, dense)
                                                                 / NETWORK_BYTES_PER_S, 4)}
                        for e in ("replicated", "sharded")} for n in (2, 8, 64)}
    print(json.dumps({
        "benchmark": "sharding", "machine": machine(), "rounds": args.rounds, "steps": args.steps,
        "workers": WORKERS, "model": {**MODEL, "batch_size_per_worker": BATCH},
        "embedding_ids": sum(int(f.vocab_size) for f in PreprocessOutput.open(args.data).feature_map.categorical),
        "distinct_rows_per_worker_step": round(distinct), "dense_parameters": dense,
        "samples_per_s": {e: round(best[e]["samples_per_s"]) for e in best},
        "sharded_vs_replicated": round(best["sharded"]["samples_per_s"] / best["replicated"]["samples_per_s"], 3),
        "scaling_model": scaling,
    }, indent=2))


if __name__ == "__main__":
    main()
