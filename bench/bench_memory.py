"""Bytes per embedding row a training worker holds, measured (peak RSS), for each table option.

Each case trains a DeepFM in a fresh process: one big categorical field of R rows beside three
small ones, embedding 16 (so 17 floats a row with the first-order weight), the real optimizers
(deepfm/training/optim.py) and `train_step`, for `--steps` steps of uniformly drawn ids, so that
every row's optimizer state exists by the end. The process's peak resident memory is read at the
end (getrusage). Run at two table sizes, the difference of the peaks over the difference of the
rows is what a row costs, free of the interpreter's, torch's and the MLP's fixed share:

    bytes_per_row = (peak(R_big) - peak(R_small)) / (R_big - R_small)

Cases (train.embedding_optimizer): `adam`, lazy Adam (two moment vectors a row); `rowwise_adagrad`,
one float a row; `sharded_adam` and `sharded_rowwise_adagrad`, the same with train.embeddings=sharded
over 2 gloo workers (deepfm/training/sharding.py), each drawing its own batches: the figure is the
larger of the two workers' peaks; `_bf16`, the table kept in bf16 (train.table_precision);
`ddp_adam` (asked for by name), replicated Adam over 2 DistributedDataParallel workers.
`ratio_to_adam` is replicated Adam's bytes per row over the case's:
how many more rows fit in a worker. `bytes_per_row_estimated` is what the driver's memory check
(deepfm/training/memory.py) assumes.

    python bench/bench_memory.py [--rows 1000000 8000000] [--steps 200] [--cases adam rowwise_adagrad ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CASES = ("adam", "rowwise_adagrad", "rowwise_adagrad_bf16", "sharded_adam", "sharded_rowwise_adagrad",
         "sharded_rowwise_adagrad_bf16")
# Replicated over 2 DistributedDataParallel workers (each holds the whole table): not in the
# default run, whose replicated cases are one process; for the largest-table measure at 2 workers.
EXTRA_CASES = ("ddp_adam",)
SHARDED_WORKERS = 2
EMBEDDING_DIM = 16
SMALL_FIELDS = (1_000, 100, 10)


def peak_rss_after_training(case: str, rows: int, steps: int, batch_size: int) -> dict:
    """In this process (a child of main()): build, train `steps` steps, report the peak RSS."""
    import torch

    from deepfm.model import DeepFM, DeepFMConfig
    from deepfm.training.distributed import make_backend
    from deepfm.training.optim import make_optimizers
    from deepfm.training.readers import Batch
    from deepfm.training.train import embedding_table, train_step

    torch.manual_seed(0)
    torch.set_num_threads(1)
    vocab = (rows, *SMALL_FIELDS)
    config = DeepFMConfig(vocab_sizes=vocab, embedding_dim=EMBEDDING_DIM, hidden=(64, 64), sparse_embeddings=True)
    settings = _train_config(case)
    backend = make_backend("torch" if settings.workers > 1 else "none", "cpu")
    raw = DeepFM(config, embedding_table(settings, config))  # as deepfm/training/train.py's build_run makes it
    model, optimizers = backend.prepare(raw, make_optimizers(raw, 1e-3, 1e-2, settings.embedding_optimizer))
    generator = torch.Generator().manual_seed(backend.rank)
    start = time.perf_counter()
    for _ in range(steps):
        ids = torch.stack([torch.randint(0, size, (batch_size,), generator=generator) for size in vocab], 1)
        batch = Batch(ids.int(), torch.zeros(batch_size, 0), torch.randint(0, 2, (batch_size,)).float())
        train_step(model, raw, optimizers, batch, backend)
        for opt in optimizers:
            opt.step()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    backend.close()
    return {"case": case, "rows": rows, "peak_rss_bytes": peak, "steps_per_s": round(steps / seconds, 2)}


def _train_config(case: str):
    """The training settings a case's name stands for (the table's part of them)."""
    from deepfm.config import TrainConfig

    sharded, ddp = case.startswith("sharded_"), case.startswith("ddp_")
    name = case.removeprefix("sharded_").removeprefix("ddp_")
    return TrainConfig(data="-", output="-", embedding_optimizer=name.removesuffix("_bf16"), embedding_l2=0,
                       model={"embedding_dim": EMBEDDING_DIM}, embeddings="sharded" if sharded else "replicated",
                       backend="torch", workers=SHARDED_WORKERS if sharded or ddp else 1,
                       table_precision="bf16" if name.endswith("_bf16") else "fp32")


def measure(case: str, rows: int, steps: int, batch_size: int) -> dict:
    """The case in fresh processes: one, or one per worker of a 2-worker run (the largest peak)."""
    from deepfm.training.launch import free_port

    world = _train_config(case).workers
    port = str(free_port())
    workers = [subprocess.Popen([sys.executable, __file__, "--child", case, str(rows), str(steps), str(batch_size)],
                                stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                                     "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
               for rank in range(world)]
    outputs = [w.communicate()[0] for w in workers]
    if any(w.returncode for w in workers):
        raise SystemExit(f"bench_memory: case {case} at {rows} rows failed")
    figures = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    return max(figures, key=lambda f: f["peak_rss_bytes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs=2, default=[1_000_000, 8_000_000], metavar=("SMALL", "BIG"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--cases", nargs="+", choices=CASES + EXTRA_CASES, default=list(CASES))
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, rows, steps, batch_size = args.child
        print(json.dumps(peak_rss_after_training(case, int(rows), int(steps), int(batch_size))))
        return

    from machine import machine

    small, big = args.rows
    from deepfm.training.memory import bytes_per_row

    results = {}
    for case in args.cases:
        low, high = measure(case, small, args.steps, args.batch_size), measure(case, big, args.steps, args.batch_size)
        # What the driver's check (deepfm/training/memory.py) assumes for the same parts
        assumed = _train_config(case)
        results[case] = {
            "bytes_per_row": round((high["peak_rss_bytes"] - low["peak_rss_bytes"]) / (big - small), 1),
            "bytes_per_row_estimated": sum(bytes_per_row(assumed, ema=False, centred_prior=False).values()),
            "peak_rss_gib": {str(small): round(low["peak_rss_bytes"] / 2**30, 3),
                             str(big): round(high["peak_rss_bytes"] / 2**30, 3)},
            "steps_per_s": high["steps_per_s"],
        }
    if "adam" in results:
        for figures in results.values():
            figures["ratio_to_adam"] = round(results["adam"]["bytes_per_row"] / figures["bytes_per_row"], 2)
    print(json.dumps({"benchmark": "bench_memory", "machine": machine(), "embedding_dim": EMBEDDING_DIM,
                      "rows": [small, big], "steps": args.steps, "batch_size": args.batch_size,
                      "cases": results}, indent=2))


if __name__ == "__main__":
    main()
